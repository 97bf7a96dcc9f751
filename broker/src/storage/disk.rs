//! The disk as the storage engine sees it: aligned buffers, positional direct writes and
//! reads, fdatasync, and the few directory operations a log needs.
//!
//! Owns: the `Disk` / `DiskFile` / `AlignedBuf` traits and the page size every direct write is
//! aligned to. Two implementations: [`super::dma_disk::DmaDisk`] (glommio, O_DIRECT, io_uring)
//! and [`super::sim_disk::SimDisk`] (in memory, loses unsynced writes on a simulated crash).
//!
//! The traits are used generically (never `dyn`), from one glommio shard: futures are not
//! `Send` and need not be. Never: blocks the reactor in the `async` methods. The synchronous
//! methods (`create_dir_all`, `list_dir`) are for startup and recovery only and may block.

use std::io;
use std::path::Path;
use std::rc::Rc;

/// Alignment of every direct write's position and length, and of every buffer. The device
/// here needs 512 bytes; 4096 matches the page size of NVMe devices and the kernel's pages.
pub const PAGE_BYTES: usize = 4096;

/// Rounds `n` up to a multiple of [`PAGE_BYTES`].
pub const fn align_up(n: u64) -> u64 {
    n.div_ceil(PAGE_BYTES as u64) * PAGE_BYTES as u64
}

/// Rounds `n` down to a multiple of [`PAGE_BYTES`].
pub const fn align_down(n: u64) -> u64 {
    n / PAGE_BYTES as u64 * PAGE_BYTES as u64
}

/// A page-aligned buffer that a direct write can take without another copy.
pub trait AlignedBuf: 'static {
    fn as_slice(&self) -> &[u8];
    fn as_mut_slice(&mut self) -> &mut [u8];
    /// Shortens the buffer to `len` bytes (a multiple of [`PAGE_BYTES`], at most its length).
    fn trim_to(&mut self, len: usize);
}

/// How [`Disk::open`] treats a missing file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the file if missing (never truncates an existing one).
    CreateIfMissing,
    /// The file must exist.
    Existing,
}

/// One open file, read and written with direct I/O.
#[allow(async_fn_in_trait)] // one shard, one thread: the futures never cross threads.
pub trait DiskFile: 'static {
    type Buf: AlignedBuf;
    /// What a read returns: the bytes read (possibly fewer than asked at end of file).
    type ReadBuf: AsRef<[u8]> + 'static;

    /// Writes the whole buffer at `pos` (both page aligned). Returns once the write
    /// completed (for direct I/O: the data is on the device, not in a cache of this process).
    async fn write_at(&self, buf: Rc<Self::Buf>, pos: u64) -> io::Result<usize>;
    /// Reads `len` bytes at `pos` (both page aligned); shorter at end of file.
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Self::ReadBuf>;
    async fn fdatasync(&self) -> io::Result<()>;
    async fn truncate(&self, len: u64) -> io::Result<()>;
    async fn size(&self) -> io::Result<u64>;
    /// Reserves blocks up to `len` bytes, so a full disk shows up here rather than in the
    /// middle of a write, and makes the file at least `len` bytes long (the bytes past the
    /// data read as zeros): a direct write inside the file's size is not a size-extending
    /// one, which the kernel completes inline instead of handing it to an io_uring worker
    /// thread. The engine cuts the file back to its data when it seals, closes or truncates a
    /// segment, and recovery stops at the zeros.
    async fn preallocate(&self, len: u64) -> io::Result<()>;
}

/// A place to keep files: the real disk or a simulation of one.
#[allow(async_fn_in_trait)] // one shard, one thread: the futures never cross threads.
pub trait Disk: Clone + 'static {
    type Buf: AlignedBuf;
    type File: DiskFile<Buf = Self::Buf>;

    /// A zeroed buffer of `len` bytes (a multiple of [`PAGE_BYTES`]).
    fn alloc(&self, len: usize) -> Self::Buf;
    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Self::File>;
    async fn remove(&self, path: &Path) -> io::Result<()>;
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes a directory's entries (created, renamed, removed files) durable.
    async fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Startup only (may block).
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// File names in `path`. Startup and recovery only (may block).
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Removes an empty directory. Startup / partition deletion only (may block).
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_helpers() {
        assert_eq!(align_up(0), 0);
        assert_eq!(align_up(1), 4096);
        assert_eq!(align_up(4096), 4096);
        assert_eq!(align_down(4095), 0);
        assert_eq!(align_down(8193), 8192);
    }
}
