//! Open segment files of one shard, opened lazily and kept within a limit.
//!
//! Owns: the shard's open file descriptors. 10,000 partitions with three files each exceed
//! the process's open-file limit, so files are opened on first use and the least recently
//! used ones not in use by an I/O (nobody else holds the `Rc`) are closed when the limit is
//! passed. Never: closes a file an operation still holds; never blocks (closing is glommio's
//! asynchronous close on drop).
//!
//! The limit comes from the process's open-file limit (`shard::open_files`); files closed for
//! it are counted (a metric), because a working set larger than the limit (10,000 partitions
//! written in turn) makes every write open and close its file.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::disk::{Disk, OpenMode};

/// An open file and the tick of its last use (the least recent is evicted first).
type Cached<F> = (Rc<F>, u64);

pub(crate) struct FdCache<D: Disk> {
    disk: D,
    max_open_files: usize,
    tick: Cell<u64>,
    /// Files closed to stay within the limit, since start-up.
    closed_for_limit: Cell<u64>,
    files: RefCell<HashMap<PathBuf, Cached<D::File>>>,
}

impl<D: Disk> FdCache<D> {
    pub(crate) fn new(disk: D, max_open_files: usize) -> FdCache<D> {
        FdCache {
            disk,
            max_open_files: max_open_files.max(1),
            tick: Cell::new(0),
            closed_for_limit: Cell::new(0),
            files: RefCell::new(HashMap::new()),
        }
    }

    fn next_tick(&self) -> u64 {
        self.tick.set(self.tick.get() + 1);
        self.tick.get()
    }

    /// The open file at `path`, opening it (and closing idle ones over the limit) if needed.
    pub(crate) async fn get(&self, path: &Path, mode: OpenMode) -> io::Result<Rc<D::File>> {
        if let Some((file, used)) = self.files.borrow_mut().get_mut(path) {
            *used = self.next_tick();
            return Ok(file.clone());
        }
        let file = Rc::new(self.disk.open(path, mode).await?);
        let tick = self.next_tick();
        let mut files = self.files.borrow_mut();
        files.insert(path.to_owned(), (file.clone(), tick));
        if files.len() > self.max_open_files {
            let closed = Self::evict(&mut files, self.max_open_files);
            let before = self.closed_for_limit.get();
            if before == 0 && closed > 0 {
                tracing::warn!(
                    limit = self.max_open_files,
                    "this shard's segment files exceed its open-file budget: files are closed \
                     and opened again as partitions are used, which costs a syscall pair per \
                     write; raise the process's open-file limit (LimitNOFILE, ulimit -n) or \
                     corebus.shard.max.open.files"
                );
            }
            self.closed_for_limit.set(before + closed);
        }
        Ok(file)
    }

    /// Closes least recently used idle files until at most `limit` minus an eighth remain (or
    /// none is idle). The slack makes the scan over every open file happen once per
    /// `limit / 8` opens rather than on every open past the limit (10,000 partitions opened
    /// at start-up would otherwise cost a quadratic number of steps).
    /// Returns how many it closed.
    fn evict(files: &mut HashMap<PathBuf, (Rc<D::File>, u64)>, limit: usize) -> u64 {
        let target = limit - limit / 8;
        let excess = files.len().saturating_sub(target);
        if excess == 0 {
            return 0;
        }
        let mut idle: Vec<(u64, &PathBuf)> = files
            .iter()
            .filter(|(_, (f, _))| Rc::strong_count(f) == 1)
            .map(|(p, (_, t))| (*t, p))
            .collect();
        let doomed: Vec<PathBuf> = if idle.len() > excess {
            idle.select_nth_unstable(excess);
            idle[..excess].iter().map(|(_, p)| (*p).clone()).collect()
        } else {
            idle.into_iter().map(|(_, p)| p.clone()).collect()
        };
        for path in &doomed {
            files.remove(path);
        }
        doomed.len() as u64
    }

    /// Serves `file` for `path` from now on (the cleaner swapped a segment: `file` is the new
    /// one, opened before the rename, so nobody can open the old one under this name again).
    /// Holders of the old file keep reading the old contents.
    pub(crate) fn replace(&self, path: &Path, file: Rc<D::File>) {
        let tick = self.next_tick();
        self.files
            .borrow_mut()
            .insert(path.to_owned(), (file, tick));
    }

    /// Forgets `path` (the file is being removed or truncated away).
    pub(crate) fn forget(&self, path: &Path) {
        self.files.borrow_mut().remove(path);
    }

    pub(crate) fn open_count(&self) -> usize {
        self.files.borrow().len()
    }

    pub(crate) fn closed_for_limit(&self) -> u64 {
        self.closed_for_limit.get()
    }
}
