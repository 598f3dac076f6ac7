//! A simulated disk for deterministic fault and crash tests.
//!
//! The model is the one POSIX promises and Linux delivers, not a kinder one:
//! * file data is durable only up to the last successful [`File::sync_data`];
//! * a directory entry (a file created, removed or renamed) is durable only once its directory
//!   was synced with [`Storage::sync_dir`] — a synced file whose name was never synced is lost;
//! * at a power cut each file keeps its durable bytes plus a random prefix of what was written
//!   after them, possibly with its end zeroed (blocks allocated, never written);
//! * a failed fsync reports EIO once and the dirty bytes are gone for good (Linux marks the
//!   pages clean): a later "successful" sync does not bring them back;
//! * a full disk writes what fits, then fails with ENOSPC.
//!
//! Every mutating call counts as one operation. A test picks the operation at which power is
//! cut ([`SimDisk::cut_power_at`]) or which call fails ([`SimDisk::fail_at`]), runs a workload,
//! and reopens from [`SimDisk::after_power_cut`]. Everything is driven by one seed, so a
//! failure replays exactly.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{DirEntry, File, LockGuard, OpenMode, Storage};

type Ino = usize;
const ROOT: Ino = 0;

#[derive(Debug, Clone)]
enum Inode {
    Dir {
        live: BTreeMap<String, Ino>,
        durable: BTreeMap<String, Ino>,
    },
    File(Contents),
}

#[derive(Debug, Clone, Default)]
struct Contents {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Byte ranges a failed fsync dropped: never durable, whatever happens later.
    lost: Vec<(usize, usize)>,
}

/// What the next failing call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `ENOSPC`.
    NoSpace,
    /// `EIO`.
    Io,
}

impl Fault {
    fn error(self) -> io::Error {
        match self {
            Fault::NoSpace => io::Error::from(io::ErrorKind::StorageFull),
            Fault::Io => io::Error::other("simulated EIO"),
        }
    }
}

#[derive(Debug)]
struct State {
    inodes: Vec<Inode>,
    rng: u64,
    /// Mutating operations so far.
    ops: u64,
    cut_at: Option<u64>,
    /// The disk as it came back after the power cut, once it happened.
    image: Option<Box<State>>,
    fail_at: Option<(u64, Fault)>,
    /// Bytes left on the device, if limited.
    space: Option<u64>,
    /// Reads of files and directories under this path fail with EIO (a failing disk region).
    /// Reads under this path, at or past this offset, fail with EIO.
    unreadable: Option<(PathBuf, u64)>,
    locked: Vec<Ino>,
}

/// An in-memory disk; clones share it.
#[derive(Clone)]
pub struct SimDisk(Arc<Mutex<State>>);

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("SimDisk")
            .field("ops", &s.ops)
            .field("inodes", &s.inodes.len())
            .finish()
    }
}

impl SimDisk {
    /// An empty disk; `seed` drives every random choice (torn tails).
    pub fn new(seed: u64) -> SimDisk {
        SimDisk::from_state(State {
            inodes: vec![Inode::Dir {
                live: BTreeMap::new(),
                durable: BTreeMap::new(),
            }],
            rng: seed | 1,
            ops: 0,
            cut_at: None,
            image: None,
            fail_at: None,
            space: None,
            unreadable: None,
            locked: Vec::new(),
        })
    }

    fn from_state(state: State) -> SimDisk {
        SimDisk(Arc::new(Mutex::new(state)))
    }

    // A panic in a test while holding the lock leaves nothing worth protecting.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mutating operations done so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Cuts the power just before mutating operation number `op` (counting from 1): that call
    /// and every later one fail with EIO, as on a machine that is gone.
    pub fn cut_power_at(&self, op: u64) {
        self.lock().cut_at = Some(op);
    }

    /// Cuts the power now.
    pub fn cut_power(&self) {
        let mut s = self.lock();
        if s.image.is_none() {
            let image = s.crash_image();
            s.image = Some(Box::new(image));
        }
    }

    /// Whether the power was cut.
    pub fn is_off(&self) -> bool {
        self.lock().image.is_some()
    }

    /// Makes mutating operation number `op` fail with `fault` (once).
    pub fn fail_at(&self, op: u64, fault: Fault) {
        self.lock().fail_at = Some((op, fault));
    }

    /// Takes back every fault not yet fired, any limit on free space, unreadable paths.
    pub fn clear_faults(&self) {
        let mut s = self.lock();
        s.fail_at = None;
        s.space = None;
        s.unreadable = None;
    }

    /// Makes every read under `path` (files and directory listings) fail with EIO.
    pub fn fail_reads_under(&self, path: impl Into<PathBuf>) {
        self.fail_reads_from(path, 0);
    }

    /// Makes reads of files under `path` at or past `offset` fail with EIO (a bad sector):
    /// what lies before stays readable.
    pub fn fail_reads_from(&self, path: impl Into<PathBuf>, offset: u64) {
        self.lock().unreadable = Some((path.into(), offset));
    }

    /// Limits the free space: appends beyond it write what fits and fail with ENOSPC.
    pub fn set_free_space(&self, bytes: Option<u64>) {
        self.lock().space = bytes;
    }

    /// The disk as a machine would find it after the power cut (cutting it now if it was not
    /// cut yet): only what was made durable, torn tails included.
    pub fn after_power_cut(&self) -> SimDisk {
        self.cut_power();
        let mut s = self.lock();
        let image = s.image.take().map(|i| *i);
        let Some(image) = image else {
            unreachable!("cut_power stores an image")
        };
        s.image = Some(Box::new(image.clone_state()));
        SimDisk::from_state(image)
    }
}

impl State {
    fn clone_state(&self) -> State {
        State {
            inodes: self.inodes.clone(),
            rng: self.rng,
            ops: 0,
            cut_at: None,
            image: None,
            fail_at: None,
            space: self.space,
            unreadable: None,
            locked: Vec::new(),
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// What survives a power cut now.
    fn crash_image(&mut self) -> State {
        let mut image = self.clone_state();
        // A new boot: the space a test took away for a while is back.
        image.space = None;
        image.rng = self.random();
        for i in 0..image.inodes.len() {
            let torn = self.random();
            match &mut image.inodes[i] {
                Inode::Dir { live, durable } => *live = durable.clone(),
                Inode::File(Contents {
                    data,
                    durable,
                    lost,
                }) => {
                    let mut kept = durable.clone();
                    // Some of what was written after the last sync may have reached the disk.
                    if lost.is_empty() && data.starts_with(durable) && data.len() > durable.len() {
                        let extra = data.len() - durable.len();
                        let keep = (torn % (extra as u64 + 1)) as usize;
                        kept.extend_from_slice(&data[durable.len()..durable.len() + keep]);
                        // A quarter of torn tails end in zeros: blocks allocated, never written.
                        if keep > 0 && (torn >> 32).is_multiple_of(4) {
                            let zeros = 1 + ((torn >> 40) as usize % keep);
                            let len = kept.len();
                            kept[len - zeros..].fill(0);
                        }
                    }
                    *data = kept.clone();
                    *durable = kept;
                    lost.clear();
                }
            }
        }
        image
    }

    /// Counts a mutating operation; fails it if the power is off or a fault is due.
    fn mutate(&mut self) -> io::Result<()> {
        if self.image.is_some() {
            return Err(io::Error::other("simulated power loss"));
        }
        self.ops += 1;
        if self.cut_at.is_some_and(|at| self.ops >= at) {
            let image = self.crash_image();
            self.image = Some(Box::new(image));
            return Err(io::Error::other("simulated power loss"));
        }
        if let Some((at, fault)) = self.fail_at
            && self.ops == at
        {
            self.fail_at = None;
            return Err(fault.error());
        }
        Ok(())
    }

    fn check_power(&self) -> io::Result<()> {
        if self.image.is_some() {
            return Err(io::Error::other("simulated power loss"));
        }
        Ok(())
    }

    /// Whether a read of `len` bytes at `offset` of `path` may go ahead.
    fn check_read(&self, path: &Path, offset: u64, len: usize) -> io::Result<()> {
        self.check_power()?;
        let end = offset.saturating_add(len as u64);
        if self
            .unreadable
            .as_ref()
            .is_some_and(|(p, from)| path.starts_with(p) && (*from == 0 || end > *from))
        {
            return Err(Fault::Io.error());
        }
        Ok(())
    }

    fn entries(&self, dir: Ino) -> io::Result<&BTreeMap<String, Ino>> {
        match &self.inodes[dir] {
            Inode::Dir { live, .. } => Ok(live),
            Inode::File(_) => Err(io::Error::from(io::ErrorKind::NotADirectory)),
        }
    }

    fn entries_mut(&mut self, dir: Ino) -> io::Result<&mut BTreeMap<String, Ino>> {
        match &mut self.inodes[dir] {
            Inode::Dir { live, .. } => Ok(live),
            Inode::File(_) => Err(io::Error::from(io::ErrorKind::NotADirectory)),
        }
    }

    fn lookup(&self, path: &Path) -> io::Result<Ino> {
        let mut ino = ROOT;
        for name in names(path)? {
            ino = *self
                .entries(ino)?
                .get(name)
                .ok_or(io::ErrorKind::NotFound)?;
        }
        Ok(ino)
    }

    /// The parent directory's inode and the last name of `path`.
    fn parent<'p>(&self, path: &'p Path) -> io::Result<(Ino, &'p str)> {
        let names = names(path)?;
        let (last, parents) = names.split_last().ok_or(io::ErrorKind::InvalidInput)?;
        let mut ino = ROOT;
        for name in parents {
            ino = *self
                .entries(ino)?
                .get(*name)
                .ok_or(io::ErrorKind::NotFound)?;
        }
        Ok((ino, last))
    }

    fn add(&mut self, inode: Inode) -> Ino {
        self.inodes.push(inode);
        self.inodes.len() - 1
    }

    fn file(&mut self, ino: Ino) -> io::Result<&mut Contents> {
        match &mut self.inodes[ino] {
            Inode::File(contents) => Ok(contents),
            Inode::Dir { .. } => Err(io::Error::from(io::ErrorKind::IsADirectory)),
        }
    }
}

fn names(path: &Path) -> io::Result<Vec<&str>> {
    let mut names = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => names.push(n.to_str().ok_or(io::ErrorKind::InvalidInput)?),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(io::ErrorKind::InvalidInput.into());
            }
        }
    }
    Ok(names)
}

#[derive(Debug)]
struct SimFile {
    disk: SimDisk,
    ino: Ino,
    path: PathBuf,
    writable: bool,
}

impl File for SimFile {
    fn len(&self) -> io::Result<u64> {
        let mut s = self.disk.lock();
        s.check_power()?;
        Ok(s.file(self.ino)?.data.len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut s = self.disk.lock();
        s.check_read(&self.path, offset, buf.len())?;
        let data = &s.file(self.ino)?.data;
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| data.get(start..end))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn read_into(&self, offset: u64, len: usize, out: &mut Vec<u8>) -> io::Result<()> {
        let mut s = self.disk.lock();
        s.check_read(&self.path, offset, len)?;
        let data = &s.file(self.ino)?.data;
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let src = start
            .checked_add(len)
            .and_then(|end| data.get(start..end))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        out.extend_from_slice(src);
        Ok(())
    }

    fn append(&mut self, bufs: &[&[u8]]) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        let mut s = self.disk.lock();
        s.mutate()?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let fits = s.space.map_or(total, |free| total.min(free as usize));
        if let Some(free) = &mut s.space {
            *free -= fits as u64;
        }
        let data = &mut s.file(self.ino)?.data;
        let mut left = fits;
        for b in bufs {
            let n = b.len().min(left);
            data.extend_from_slice(&b[..n]);
            left -= n;
        }
        if fits < total {
            return Err(Fault::NoSpace.error());
        }
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        let mut s = self.disk.lock();
        s.mutate()?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        let c = s.file(self.ino)?;
        let old = c.data.len();
        c.data.resize(len, 0);
        // Pages a failed fsync dropped are gone with the truncation; new writes there are new.
        for range in &mut c.lost {
            range.1 = range.1.min(len);
        }
        c.lost.retain(|&(from, to)| from < to);
        if let Some(free) = &mut s.space {
            *free = (*free + old as u64).saturating_sub(len as u64);
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.disk.lock();
        if let Err(e) = s.mutate() {
            // Linux: the dirty pages are marked clean anyway; what they held never arrives.
            if let Ok(c) = s.file(self.ino) {
                c.lost
                    .push((c.durable.len().min(c.data.len()), c.data.len()));
            }
            return Err(e);
        }
        let c = s.file(self.ino)?;
        c.durable = c.data.clone();
        for &(from, to) in &c.lost {
            let to = to.min(c.durable.len());
            if from < to {
                c.durable[from..to].fill(0);
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct SimLock {
    disk: SimDisk,
    ino: Ino,
}

impl LockGuard for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.disk.lock().locked.retain(|&i| i != self.ino);
    }
}

impl Storage for SimDisk {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn File>> {
        let mut s = self.lock();
        let ino = match mode {
            OpenMode::Read | OpenMode::Append => {
                s.check_power()?;
                s.lookup(path)?
            }
            OpenMode::Create => {
                s.mutate()?;
                let (dir, name) = s.parent(path)?;
                match s.entries(dir)?.get(name).copied() {
                    Some(ino) => {
                        let c = s.file(ino)?;
                        let old = c.data.len() as u64;
                        c.data.clear();
                        c.lost.clear();
                        if let Some(free) = &mut s.space {
                            *free += old;
                        }
                        ino
                    }
                    None => {
                        let ino = s.add(Inode::File(Contents::default()));
                        s.entries_mut(dir)?.insert(name.to_owned(), ino);
                        ino
                    }
                }
            }
        };
        s.file(ino)?;
        Ok(Box::new(SimFile {
            disk: self.clone(),
            ino,
            path: path.to_owned(),
            writable: mode != OpenMode::Read,
        }))
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let s = self.lock();
        s.check_read(dir, 0, 0)?;
        let ino = s.lookup(dir)?;
        Ok(s.entries(ino)?
            .iter()
            .map(|(name, &i)| DirEntry {
                name: name.clone(),
                is_dir: matches!(s.inodes[i], Inode::Dir { .. }),
            })
            .collect())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let s = self.lock();
        s.check_power()?;
        match s.lookup(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        let mut ino = ROOT;
        for name in names(dir)? {
            ino = match s.entries(ino)?.get(name).copied() {
                Some(next) => next,
                None => {
                    s.mutate()?;
                    let next = s.add(Inode::Dir {
                        live: BTreeMap::new(),
                        durable: BTreeMap::new(),
                    });
                    s.entries_mut(ino)?.insert(name.to_owned(), next);
                    next
                }
            };
        }
        s.entries(ino).map(|_| ())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.mutate()?;
        let (dir, name) = s.parent(path)?;
        let ino = *s.entries(dir)?.get(name).ok_or(io::ErrorKind::NotFound)?;
        let len = s.file(ino)?.data.len() as u64;
        if let Some(free) = &mut s.space {
            *free += len;
        }
        s.entries_mut(dir)?.remove(name);
        Ok(())
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.mutate()?;
        let (parent, name) = s.parent(dir)?;
        let ino = *s
            .entries(parent)?
            .get(name)
            .ok_or(io::ErrorKind::NotFound)?;
        // Unlinks inside are not synced either: only the top-level entry matters for what a
        // crash leaves, and it is gone from the live tree at once.
        s.entries(ino)?;
        s.entries_mut(parent)?.remove(name);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.mutate()?;
        let (from_dir, from_name) = s.parent(from)?;
        let (to_dir, to_name) = s.parent(to)?;
        let ino = s
            .entries_mut(from_dir)?
            .remove(from_name)
            .ok_or(io::ErrorKind::NotFound)?;
        s.entries_mut(to_dir)?.insert(to_name.to_owned(), ino);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.mutate()?;
        let ino = s.lookup(dir)?;
        match &mut s.inodes[ino] {
            Inode::Dir { live, durable } => {
                *durable = live.clone();
                Ok(())
            }
            Inode::File(_) => Err(io::ErrorKind::NotADirectory.into()),
        }
    }

    fn try_lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        if !self.exists(path)? {
            self.open(path, OpenMode::Create)?;
        }
        let mut s = self.lock();
        let ino = s.lookup(path)?;
        if s.locked.contains(&ino) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        s.locked.push(ino);
        Ok(Box::new(SimLock {
            disk: self.clone(),
            ino,
        }))
    }
}
