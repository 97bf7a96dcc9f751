//! The real disk: glommio DMA files (O_DIRECT through io_uring).
//!
//! Owns: opening files read-write with direct I/O, and working around glommio 0.9's
//! polled-I/O probe. glommio decides whether a device supports polled I/O by reading the
//! first file it opens there; a new empty file makes that probe wrongly succeed and every
//! later DMA read then fails with EOPNOTSUPP (95). [`DmaDisk::new`] therefore opens a
//! non-empty probe file in the data directory before any log file is opened.
//!
//! Never: uses `DmaFile::create` (it opens write-only), or buffered I/O for log data.
//! `new`, `create_dir_all`, `list_dir` and `remove_dir` block (startup only).

use std::io;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions, ReadResult};

use super::disk::{AlignedBuf, Disk, DiskFile, OpenMode, PAGE_BYTES};

/// Name of the non-empty file opened first on each device (see the module docs).
const PROBE_FILE_NAME: &str = ".dma-probe";

impl AlignedBuf for DmaBuffer {
    fn as_slice(&self) -> &[u8] {
        self.as_bytes()
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        self.as_bytes_mut()
    }
    fn trim_to(&mut self, len: usize) {
        self.trim_to_size(len)
    }
}

/// glommio's errors carry the path and operation; its conversion keeps that text and the
/// error kind (`StorageFull` for ENOSPC, which the log treats differently from EIO).
fn to_io(e: glommio::GlommioError<()>) -> io::Error {
    io::Error::from(e)
}

/// The real disk. Cheap to clone; one per shard.
#[derive(Clone, Debug)]
pub struct DmaDisk {
    _probe: Rc<DmaFile>,
}

impl DmaDisk {
    /// Prepares direct I/O under `data_dir` (created if missing). Must run inside a glommio
    /// executor, before any other DMA file on that device is opened by this executor.
    /// Blocks briefly (writes a 4 KiB probe file with std::fs once).
    pub async fn new(data_dir: &Path) -> io::Result<DmaDisk> {
        std::fs::create_dir_all(data_dir)?;
        let probe_path: PathBuf = data_dir.join(PROBE_FILE_NAME);
        let needs_write = std::fs::metadata(&probe_path)
            .map(|m| m.len() < PAGE_BYTES as u64)
            .unwrap_or(true);
        if needs_write {
            let mut f = std::fs::File::create(&probe_path)?;
            f.write_all(&[0u8; PAGE_BYTES])?;
            f.sync_all()?;
        }
        let probe = OpenOptions::new()
            .read(true)
            .dma_open(&probe_path)
            .await
            .map_err(to_io)?;
        // The probe read happened in dma_open; a real read proves DMA reads work here.
        probe.read_at_aligned(0, PAGE_BYTES).await.map_err(to_io)?;
        Ok(DmaDisk {
            _probe: Rc::new(probe),
        })
    }
}

/// The bytes of one DMA read (glommio's `ReadResult`, which derefs but is not `AsRef`).
pub struct DmaRead(ReadResult);

impl AsRef<[u8]> for DmaRead {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A DMA file opened read-write.
#[derive(Debug)]
pub struct DmaDiskFile {
    file: DmaFile,
}

impl DiskFile for DmaDiskFile {
    type Buf = DmaBuffer;
    type ReadBuf = DmaRead;

    async fn write_at(&self, buf: Rc<DmaBuffer>, pos: u64) -> io::Result<usize> {
        self.file.write_rc_at(buf, pos).await.map_err(to_io)
    }
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<DmaRead> {
        self.file
            .read_at_aligned(pos, len)
            .await
            .map(DmaRead)
            .map_err(to_io)
    }
    async fn fdatasync(&self) -> io::Result<()> {
        self.file.fdatasync().await.map_err(to_io)
    }
    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.truncate(len).await.map_err(to_io)
    }
    async fn size(&self) -> io::Result<u64> {
        self.file.file_size().await.map_err(to_io)
    }
    async fn preallocate(&self, len: u64) -> io::Result<()> {
        // fallocate without KEEP_SIZE: ext4 (and XFS) take an O_DIRECT write that ends past
        // the file's size under the exclusive inode lock, so io_uring's non-blocking attempt
        // fails and the write goes to an io-wq worker thread; inside the size it runs inline.
        let keep_size = keep_size_for_comparison();
        self.file.pre_allocate(len, keep_size).await.map_err(to_io)
    }
}

/// `COREBUS_PREALLOCATE_KEEP_SIZE=1` preallocates without growing the file (the behaviour
/// before 2026-12-07), only for same-run comparisons (`scripts/broker-bench --ab-env`).
fn keep_size_for_comparison() -> bool {
    static KEEP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *KEEP.get_or_init(|| std::env::var("COREBUS_PREALLOCATE_KEEP_SIZE").is_ok_and(|v| v == "1"))
}

impl Disk for DmaDisk {
    type Buf = DmaBuffer;
    type File = DmaDiskFile;

    fn alloc(&self, len: usize) -> DmaBuffer {
        // From the reactor's registered pool when it has room, else an aligned heap buffer.
        glommio::allocate_dma_buffer(len)
    }
    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<DmaDiskFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(mode == OpenMode::CreateIfMissing)
            .dma_open(path)
            .await
            .map_err(to_io)?;
        Ok(DmaDiskFile { file })
    }
    async fn remove(&self, path: &Path) -> io::Result<()> {
        glommio::io::remove(path).await.map_err(to_io)
    }
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        glommio::io::rename(from, to).await.map_err(to_io)
    }
    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        // glommio 0.9 opens directories relative to no descriptor at all: a relative path
        // (the default data dir is `./data`) fails with EBADF.
        let path = std::path::absolute(path)?;
        let dir = glommio::io::Directory::open(&path).await.map_err(to_io)?;
        let res = dir.sync().await.map_err(to_io);
        let _ = dir.close().await;
        res
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }
}
