#![allow(clippy::unwrap_used)]

use std::io::ErrorKind;
use std::path::Path;

use crate::sim::{Fault, SimDisk};
use crate::{Disk, OpenMode, Storage, read, write_atomically};

/// The behaviour both implementations must share.
fn basics(storage: &dyn Storage, root: &Path) {
    let dir = root.join("a/b");
    storage.create_dir_all(&dir).unwrap();
    let path = dir.join("f");
    let mut f = storage.open(&path, OpenMode::Create).unwrap();
    f.append(&[b"hello ", b"world"]).unwrap();
    assert_eq!(f.len().unwrap(), 11);
    let mut buf = [0u8; 5];
    f.read_exact_at(&mut buf, 6).unwrap();
    assert_eq!(&buf, b"world");
    f.set_len(5).unwrap();
    f.append(&[b"!"]).unwrap();
    assert_eq!(read(storage, &path).unwrap(), b"hello!");
    assert_eq!(
        f.read_exact_at(&mut buf, 4).unwrap_err().kind(),
        ErrorKind::UnexpectedEof
    );
    f.sync_data().unwrap();
    drop(f);
    write_atomically(storage, &dir, "meta", b"{}").unwrap();
    let names: Vec<String> = storage
        .read_dir(&dir)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["f", "meta"]);
    storage.rename(&path, &dir.join("g")).unwrap();
    assert!(!storage.exists(&path).unwrap());
    storage.remove_file(&dir.join("g")).unwrap();
    assert_eq!(
        storage.open(&path, OpenMode::Append).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let lock = storage.try_lock(&root.join(".lock")).unwrap();
    assert_eq!(
        storage.try_lock(&root.join(".lock")).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    drop(lock);
    storage.try_lock(&root.join(".lock")).unwrap();
    storage.remove_dir_all(&root.join("a")).unwrap();
    assert!(!storage.exists(&dir).unwrap());
}

#[test]
fn disk_basics() {
    let dir = tempfile_dir();
    basics(&Disk, &dir);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sim_basics() {
    basics(&SimDisk::new(1), Path::new("/data"));
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "brook-storage-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn power_cut_keeps_only_what_was_synced() {
    let disk = SimDisk::new(7);
    let dir = Path::new("/d");
    disk.create_dir_all(dir).unwrap();
    disk.sync_dir(Path::new("/")).unwrap();
    let mut synced = disk.open(&dir.join("synced"), OpenMode::Create).unwrap();
    synced.append(&[b"durable"]).unwrap();
    synced.sync_data().unwrap();
    disk.sync_dir(dir).unwrap();
    synced.append(&[b" maybe"]).unwrap();
    // Data synced, name never synced: lost with its directory entry.
    let mut unnamed = disk.open(&dir.join("unnamed"), OpenMode::Create).unwrap();
    unnamed.append(&[b"x"]).unwrap();
    unnamed.sync_data().unwrap();

    let after = disk.after_power_cut();
    assert!(disk.is_off());
    assert!(
        synced.append(&[b"late"]).is_err(),
        "no writes after the cut"
    );
    let kept = read(&after, &dir.join("synced")).unwrap();
    assert!(kept.starts_with(b"durable"), "{kept:?}");
    assert!(kept.len() <= b"durable maybe".len());
    assert!(!after.exists(&dir.join("unnamed")).unwrap());
}

#[test]
fn torn_tails_vary_with_the_seed() {
    let mut lengths = std::collections::BTreeSet::new();
    for seed in 0..64 {
        let disk = SimDisk::new(seed);
        disk.create_dir_all(Path::new("/d")).unwrap();
        disk.sync_dir(Path::new("/")).unwrap();
        let mut f = disk.open(Path::new("/d/f"), OpenMode::Create).unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        f.append(&[&[1u8; 100]]).unwrap();
        lengths.insert(
            read(&disk.after_power_cut(), Path::new("/d/f"))
                .unwrap()
                .len(),
        );
    }
    assert!(lengths.len() > 10, "{lengths:?}");
}

#[test]
fn failed_fsync_loses_the_dirty_bytes_for_good() {
    let disk = SimDisk::new(3);
    disk.create_dir_all(Path::new("/d")).unwrap();
    disk.sync_dir(Path::new("/")).unwrap();
    let mut f = disk.open(Path::new("/d/f"), OpenMode::Create).unwrap();
    disk.sync_dir(Path::new("/d")).unwrap();
    f.append(&[b"abc"]).unwrap();
    disk.fail_at(disk.ops() + 1, Fault::Io);
    assert!(f.sync_data().is_err());
    f.sync_data().unwrap();
    assert_eq!(
        read(&disk.after_power_cut(), Path::new("/d/f")).unwrap(),
        [0, 0, 0]
    );
}

#[test]
fn full_disk_writes_what_fits() {
    let disk = SimDisk::new(3);
    disk.create_dir_all(Path::new("/d")).unwrap();
    disk.set_free_space(Some(4));
    let mut f = disk.open(Path::new("/d/f"), OpenMode::Create).unwrap();
    let e = f.append(&[b"abc", b"def"]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StorageFull);
    assert_eq!(read(&disk, Path::new("/d/f")).unwrap(), b"abcd");
    f.set_len(0).unwrap();
    f.append(&[b"abc"]).unwrap();
}

#[test]
fn cut_at_an_operation() {
    let disk = SimDisk::new(5);
    disk.cut_power_at(3);
    disk.create_dir_all(Path::new("/d")).unwrap(); // op 1
    disk.sync_dir(Path::new("/")).unwrap(); // op 2
    assert!(disk.open(Path::new("/d/f"), OpenMode::Create).is_err()); // op 3: off
    let after = disk.after_power_cut();
    assert!(after.exists(Path::new("/d")).unwrap());
    assert!(!after.exists(Path::new("/d/f")).unwrap());
}
