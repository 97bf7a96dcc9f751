//! A simulated disk for tests: files in memory, with the failure modes of a real one.
//!
//! Owns: what a power loss does to data. Every write lands in the file's visible contents at
//! once (like a completed O_DIRECT write), but only `fdatasync` makes it durable. [`SimDisk::crash`]
//! keeps, per file, the durable contents plus an in-order prefix of the unsynced writes, the
//! last of which may be torn at a 512-byte sector boundary: synced data always survives,
//! unsynced data may vanish, a write never lands before an earlier one of the same file.
//! Directory operations (create, rename, remove, truncate, preallocate) are durable at once: the engine
//! syncs directories after them, and the crash test is about data, not metadata.
//!
//! Also injects faults: a failing write or fsync (EIO), a full disk (ENOSPC), and a halt
//! after N more mutating operations (every write, sync, truncate, create, rename or remove
//! from then on fails, as if the process had died there: tests stop a multi-step operation
//! such as a segment swap at each of its steps, then [`SimDisk::crash`]).
//! Never: used outside tests and benchmarks' dry runs; it is deterministic for a given seed.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::disk::{AlignedBuf, Disk, DiskFile, OpenMode, PAGE_BYTES};

/// The unit a torn write is cut at: what a device writes atomically.
const SECTOR_BYTES: usize = 512;

/// A heap buffer standing in for a DMA buffer.
#[derive(Debug, Clone)]
pub struct SimBuf {
    data: Vec<u8>,
}

impl AlignedBuf for SimBuf {
    fn as_slice(&self) -> &[u8] {
        &self.data
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.data
    }
    fn trim_to(&mut self, len: usize) {
        self.data.truncate(len)
    }
}

#[derive(Debug, Default)]
struct FileData {
    /// What reads see (every completed write).
    visible: Vec<u8>,
    /// What a crash keeps for sure.
    durable: Vec<u8>,
    /// Writes since the last sync, in order: (position, bytes).
    unsynced: Vec<(u64, Vec<u8>)>,
}

fn apply(content: &mut Vec<u8>, pos: u64, data: &[u8]) {
    let pos = pos as usize;
    if content.len() < pos + data.len() {
        content.resize(pos + data.len(), 0);
    }
    content[pos..pos + data.len()].copy_from_slice(data);
}

/// Faults the next operations will meet.
#[derive(Debug, Default)]
struct Faults {
    fail_writes: Cell<bool>,
    fail_syncs: Cell<bool>,
    disk_full: Cell<bool>,
    /// Reads served, for tests that check a path never touches the disk.
    reads: Cell<u64>,
    /// Mutating operations performed so far.
    mutations: Cell<u64>,
    /// Mutating operations still allowed before everything fails (None: no halt).
    halt_after: Cell<Option<u64>>,
}

impl Faults {
    /// Counts one mutating operation, or fails it when the disk is halted.
    fn mutate(&self) -> io::Result<()> {
        match self.halt_after.get() {
            Some(0) => return Err(io_err(io::ErrorKind::Other, "halted (process died)")),
            Some(n) => self.halt_after.set(Some(n - 1)),
            None => {}
        }
        self.mutations.set(self.mutations.get() + 1);
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Fs {
    files: BTreeMap<PathBuf, Rc<RefCell<FileData>>>,
    dirs: BTreeSet<PathBuf>,
}

/// The simulated disk. Clones share the same files.
#[derive(Clone, Debug, Default)]
pub struct SimDisk {
    fs: Rc<RefCell<Fs>>,
    faults: Rc<Faults>,
}

/// Small deterministic generator (xorshift64*): crash schedules must replay from a seed.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

impl SimDisk {
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    /// Simulates a power loss: see the module docs. Open files keep working on the new
    /// contents, but a test must drop every log and reopen, as after a reboot.
    pub fn crash(&self, seed: u64) {
        let mut rng = Rng(seed | 1);
        for file in self.fs.borrow().files.values() {
            let mut f = file.borrow_mut();
            let writes = std::mem::take(&mut f.unsynced);
            let mut content = f.durable.clone();
            let kept = rng.below(writes.len() as u64 + 1) as usize;
            for (i, (pos, data)) in writes.iter().enumerate().take(kept) {
                let torn = i + 1 == kept && rng.below(2) == 0;
                let len = if torn {
                    let sectors = data.len().div_ceil(SECTOR_BYTES) as u64;
                    (rng.below(sectors + 1) as usize * SECTOR_BYTES).min(data.len())
                } else {
                    data.len()
                };
                apply(&mut content, *pos, &data[..len]);
            }
            f.visible = content.clone();
            f.durable = content;
        }
    }

    /// From now on every write fails with EIO (until cleared).
    pub fn set_fail_writes(&self, on: bool) {
        self.faults.fail_writes.set(on)
    }
    /// From now on every fdatasync fails with EIO (until cleared).
    pub fn set_fail_syncs(&self, on: bool) {
        self.faults.fail_syncs.set(on)
    }
    /// From now on preallocation and writes past the allocated end fail with ENOSPC.
    pub fn set_disk_full(&self, on: bool) {
        self.faults.disk_full.set(on)
    }

    /// After `ops` more mutating operations, every further one fails (None: lift the halt).
    pub fn halt_after(&self, ops: Option<u64>) {
        self.faults.halt_after.set(ops)
    }
    /// Mutating operations performed so far (writes, syncs, truncates, creates, renames,
    /// removes), to size a halt-at-every-step loop.
    pub fn mutations(&self) -> u64 {
        self.faults.mutations.get()
    }

    /// The visible contents of a file (tests inspect and corrupt files through these).
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let fs = self.fs.borrow();
        fs.files.get(path).map(|f| f.borrow().visible.clone())
    }
    /// Replaces a file's contents, durably (a test corrupting or truncating a file).
    pub fn set_contents(&self, path: &Path, data: Vec<u8>) {
        let mut fs = self.fs.borrow_mut();
        let file = fs.files.entry(path.to_owned()).or_default();
        let mut f = file.borrow_mut();
        f.visible = data.clone();
        f.durable = data;
        f.unsynced.clear();
    }
    /// Reads served so far over all files.
    pub fn read_count(&self) -> u64 {
        self.faults.reads.get()
    }

    /// Bytes not yet synced, over all files (tests check that a sync happened).
    pub fn unsynced_writes(&self) -> usize {
        let fs = self.fs.borrow();
        fs.files.values().map(|f| f.borrow().unsynced.len()).sum()
    }
}

fn io_err(kind: io::ErrorKind, what: &str) -> io::Error {
    io::Error::new(kind, format!("simulated: {what}"))
}

/// An open simulated file.
#[derive(Debug)]
pub struct SimFile {
    data: Rc<RefCell<FileData>>,
    faults: Rc<Faults>,
}

impl DiskFile for SimFile {
    type Buf = SimBuf;
    type ReadBuf = Vec<u8>;

    async fn write_at(&self, buf: Rc<SimBuf>, pos: u64) -> io::Result<usize> {
        // A real write completes later; let other tasks run meanwhile.
        futures_lite::future::yield_now().await;
        assert!(
            pos.is_multiple_of(PAGE_BYTES as u64) && buf.data.len().is_multiple_of(PAGE_BYTES),
            "unaligned direct write"
        );
        self.faults.mutate()?;
        if self.faults.fail_writes.get() {
            return Err(io_err(io::ErrorKind::Other, "write failed (EIO)"));
        }
        let mut f = self.data.borrow_mut();
        if self.faults.disk_full.get() && pos as usize + buf.data.len() > f.visible.len() {
            return Err(io_err(io::ErrorKind::StorageFull, "no space left (ENOSPC)"));
        }
        apply(&mut f.visible, pos, &buf.data);
        f.unsynced.push((pos, buf.data.clone()));
        Ok(buf.data.len())
    }
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        futures_lite::future::yield_now().await;
        self.faults.reads.set(self.faults.reads.get() + 1);
        let f = self.data.borrow();
        let start = (pos as usize).min(f.visible.len());
        let end = (start + len).min(f.visible.len());
        Ok(f.visible[start..end].to_vec())
    }
    async fn fdatasync(&self) -> io::Result<()> {
        futures_lite::future::yield_now().await;
        self.faults.mutate()?;
        if self.faults.fail_syncs.get() {
            return Err(io_err(io::ErrorKind::Other, "fdatasync failed (EIO)"));
        }
        let mut f = self.data.borrow_mut();
        f.durable = f.visible.clone();
        f.unsynced.clear();
        Ok(())
    }
    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.faults.mutate()?;
        let mut f = self.data.borrow_mut();
        let len = len as usize;
        f.visible.resize(len, 0);
        f.durable.resize(len, 0);
        for (pos, data) in f.unsynced.iter_mut() {
            let keep = len.saturating_sub(*pos as usize).min(data.len());
            data.truncate(keep);
        }
        Ok(())
    }
    async fn size(&self) -> io::Result<u64> {
        Ok(self.data.borrow().visible.len() as u64)
    }
    async fn preallocate(&self, len: u64) -> io::Result<()> {
        self.faults.mutate()?;
        if self.faults.disk_full.get() {
            return Err(io_err(io::ErrorKind::StorageFull, "no space left (ENOSPC)"));
        }
        // The size grows with zeros, durably at once (metadata, as a truncate here).
        let mut f = self.data.borrow_mut();
        let len = len as usize;
        if f.visible.len() < len {
            f.visible.resize(len, 0);
        }
        if f.durable.len() < len {
            f.durable.resize(len, 0);
        }
        Ok(())
    }
}

impl Disk for SimDisk {
    type Buf = SimBuf;
    type File = SimFile;

    fn alloc(&self, len: usize) -> SimBuf {
        SimBuf { data: vec![0; len] }
    }
    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<SimFile> {
        let mut fs = self.fs.borrow_mut();
        let data = match fs.files.get(path) {
            Some(d) => d.clone(),
            None if mode == OpenMode::CreateIfMissing => {
                self.faults.mutate()?;
                let d = Rc::new(RefCell::new(FileData::default()));
                fs.files.insert(path.to_owned(), d.clone());
                d
            }
            None => return Err(io_err(io::ErrorKind::NotFound, "no such file")),
        };
        Ok(SimFile {
            data,
            faults: self.faults.clone(),
        })
    }
    async fn remove(&self, path: &Path) -> io::Result<()> {
        self.faults.mutate()?;
        match self.fs.borrow_mut().files.remove(path) {
            Some(_) => Ok(()),
            None => Err(io_err(io::ErrorKind::NotFound, "no such file")),
        }
    }
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.faults.mutate()?;
        let mut fs = self.fs.borrow_mut();
        let data = fs
            .files
            .remove(from)
            .ok_or_else(|| io_err(io::ErrorKind::NotFound, "no such file"))?;
        fs.files.insert(to.to_owned(), data);
        Ok(())
    }
    async fn sync_dir(&self, _path: &Path) -> io::Result<()> {
        self.faults.mutate()
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.fs.borrow_mut().dirs.insert(path.to_owned());
        Ok(())
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let fs = self.fs.borrow();
        if !fs.dirs.contains(path) {
            return Err(io_err(io::ErrorKind::NotFound, "no such directory"));
        }
        Ok(fs
            .files
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let mut fs = self.fs.borrow_mut();
        if fs.files.keys().any(|p| p.parent() == Some(path)) {
            return Err(io_err(
                io::ErrorKind::DirectoryNotEmpty,
                "directory not empty",
            ));
        }
        fs.dirs.remove(path);
        Ok(())
    }
}
