//! The narrow file-system interface everything brook stores goes through: segment and index
//! files, stream metadata, the data directory's lock.
//!
//! Two implementations:
//! * [`Disk`], the real file system, used in production;
//! * [`sim::SimDisk`], an in-memory disk for tests that can fail any call (ENOSPC, EIO, a
//!   failed fsync) and simulate a power cut: everything not yet made durable by
//!   [`File::sync_data`] or [`Storage::sync_dir`] is lost, or kept only in part.
//!
//! Keeping the interface this small is what makes the simulation trustworthy: every write the
//! log does is one of these calls, so a test that cuts power after any call has seen every
//! state a real crash could leave behind (the approach of redb's and FoundationDB's
//! simulation tests).

pub mod json;
pub mod sim;

use std::fmt;
use std::io::{self, IoSlice, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

/// How [`Storage::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and append; the file must exist.
    Append,
    /// Read and append; created if missing, emptied if present.
    Create,
}

/// A directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub is_dir: bool,
}

/// An open file. Writes only ever append (segments, indexes, metadata files are all written
/// front to back); `set_len` is how a torn or failed write is cut off again.
pub trait File: Send + Sync + fmt::Debug {
    fn len(&self) -> io::Result<u64>;
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Reads exactly `buf.len()` bytes at `offset`; fails with `UnexpectedEof` past the end.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Appends exactly `len` bytes read at `offset` to `out`, without zeroing the new space
    /// first (delivery reads up to hundreds of KiB at a time).
    fn read_into(&self, offset: u64, len: usize, out: &mut Vec<u8>) -> io::Result<()>;
    /// Appends all of `bufs` at the end of the file: one `writev` where the OS allows.
    fn append(&mut self, bufs: &[&[u8]]) -> io::Result<()>;
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Makes the file's data (and its length) durable: `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;
    /// A hint that `len` bytes at `offset` will be read soon, so the OS can read them from the
    /// disk together with other such ranges instead of one read at a time (`posix_fadvise`
    /// WILLNEED). Only a hint: it may do nothing.
    fn prefetch(&self, _offset: u64, _len: u64) {}
}

/// Guard of an exclusive lock on a file; released when dropped.
pub trait LockGuard: Send + Sync + fmt::Debug {}

/// The file system, as far as brook needs one.
pub trait Storage: Send + Sync + fmt::Debug {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn File>>;
    /// The entries of a directory, sorted by name.
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>>;
    fn exists(&self, path: &Path) -> io::Result<bool>;
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (files created, removed, renamed in it) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on `path` (created if missing) for the guard's lifetime;
    /// `WouldBlock` if another holder has it.
    fn try_lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>>;
}

/// Shared handle to a storage implementation.
pub type SharedStorage = Arc<dyn Storage>;

/// The real file system.
pub fn disk() -> SharedStorage {
    Arc::new(Disk)
}

/// Reads a whole file.
pub fn read(storage: &dyn Storage, path: &Path) -> io::Result<Vec<u8>> {
    let file = storage.open(path, OpenMode::Read)?;
    let len = usize::try_from(file.len()?).map_err(io::Error::other)?;
    let mut out = Vec::new();
    file.read_into(0, len, &mut out)?;
    Ok(out)
}

/// Replaces `dir/name` with `bytes` so that a crash leaves either the old or the new content,
/// never a mix: write a temporary file, fsync it, rename it over, fsync the directory.
pub fn write_atomically(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = storage.open(&tmp, OpenMode::Create)?;
    file.append(&[bytes])?;
    file.sync_data()?;
    drop(file);
    storage.rename(&tmp, &dir.join(name))?;
    storage.sync_dir(dir)
}

/// [`Storage`] on the real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct Disk;

#[derive(Debug)]
struct DiskFile(std::fs::File);

#[derive(Debug)]
struct DiskLock(#[allow(dead_code)] std::fs::File);

impl LockGuard for DiskLock {}

impl File for DiskFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.0, buf, offset)
    }

    fn read_into(&self, offset: u64, len: usize, out: &mut Vec<u8>) -> io::Result<()> {
        // `read_to_end` fills spare capacity without zeroing it; the handle's position is
        // private to this read (each reader opens its own handle).
        let mut f = &self.0;
        f.seek(SeekFrom::Start(offset))?;
        out.reserve_exact(len);
        let want = out.len() + len;
        f.take(len as u64).read_to_end(out)?;
        if out.len() < want {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    fn append(&mut self, bufs: &[&[u8]]) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
        let mut rest = &mut slices[..];
        IoSlice::advance_slices(&mut rest, 0);
        while !rest.is_empty() {
            match self.0.write_vectored(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn prefetch(&self, offset: u64, len: u64) {
        use rustix::fs::{Advice, fadvise};
        // A failed hint changes nothing: the read that follows does the work.
        let _ = fadvise(
            &self.0,
            offset,
            std::num::NonZeroU64::new(len),
            Advice::WillNeed,
        );
    }
}

impl Storage for Disk {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn File>> {
        let mut options = std::fs::OpenOptions::new();
        match mode {
            OpenMode::Read => options.read(true),
            // O_APPEND: every write lands at the end, also after `set_len` cut the file.
            OpenMode::Append => options.read(true).append(true),
            OpenMode::Create => {
                // `truncate` cannot be combined with `append` in one open.
                std::fs::File::create(path)?;
                options.read(true).append(true)
            }
        };
        Ok(Box::new(DiskFile(options.open(path)?)))
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            // Names that are not UTF-8 are not brook's: skip them.
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            entries.push(DirEntry {
                name,
                is_dir: entry.file_type()?.is_dir(),
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(dir)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }

    fn try_lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        file.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => io::ErrorKind::WouldBlock.into(),
            std::fs::TryLockError::Error(e) => e,
        })?;
        Ok(Box::new(DiskLock(file)))
    }
}

#[cfg(test)]
mod tests;
