//! Small checkpoint files of a log directory: the clean-shutdown marker and the log start
//! offset. Written atomically (temporary file, fdatasync, rename, directory sync).
//!
//! Format: magic "CBMF" | version u16 | payload length u16 | crc32c(payload) u32 | payload,
//! zero-padded to one page. A file that fails any check reads as absent (the caller then
//! assumes an unclean shutdown, or log start = first segment), never as garbage.
//! Never: keeps files open.

use std::path::Path;
use std::rc::Rc;

use super::disk::{AlignedBuf, Disk, DiskFile, OpenMode, PAGE_BYTES};

const MAGIC: &[u8; 4] = b"CBMF";
const FORMAT_VERSION: u16 = 1;
const HEADER_BYTES: usize = 12;
/// Payloads are a few integers; one page holds the file.
const MAX_PAYLOAD_BYTES: usize = PAGE_BYTES - HEADER_BYTES;

/// Name of the marker written by a clean close and removed at open.
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";
/// Name of the log start offset checkpoint (DeleteRecords, retention).
pub(crate) const LOG_START_FILE: &str = "log-start-offset";

/// Atomically replaces `dir/name` with `payload`.
pub(crate) async fn write_meta<D: Disk>(
    disk: &D,
    dir: &Path,
    name: &str,
    payload: &[u8],
) -> std::io::Result<()> {
    assert!(payload.len() <= MAX_PAYLOAD_BYTES, "meta payload too large");
    let tmp = dir.join(format!("{name}.tmp"));
    let mut buf = disk.alloc(PAGE_BYTES);
    let page = buf.as_mut_slice();
    page.fill(0);
    page[..4].copy_from_slice(MAGIC);
    page[4..6].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    page[6..8].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    page[8..12].copy_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    page[HEADER_BYTES..HEADER_BYTES + payload.len()].copy_from_slice(payload);
    let file = disk.open(&tmp, OpenMode::CreateIfMissing).await?;
    file.write_at(Rc::new(buf), 0).await?;
    file.fdatasync().await?;
    drop(file);
    disk.rename(&tmp, &dir.join(name)).await?;
    disk.sync_dir(dir).await
}

/// The payload of `dir/name`, or None when missing or invalid.
pub(crate) async fn read_meta<D: Disk>(disk: &D, dir: &Path, name: &str) -> Option<Vec<u8>> {
    let file = disk.open(&dir.join(name), OpenMode::Existing).await.ok()?;
    let page = file.read_at(0, PAGE_BYTES).await.ok()?;
    decode_meta(page.as_ref())
}

/// The payload of a checkpoint file's bytes, or None when they fail any check.
pub(crate) fn decode_meta(page: &[u8]) -> Option<Vec<u8>> {
    if page.len() < HEADER_BYTES || &page[..4] != MAGIC {
        return None;
    }
    if u16::from_be_bytes([page[4], page[5]]) != FORMAT_VERSION {
        return None;
    }
    let len = u16::from_be_bytes([page[6], page[7]]) as usize;
    let payload = page.get(HEADER_BYTES..HEADER_BYTES + len)?;
    let crc = u32::from_be_bytes([page[8], page[9], page[10], page[11]]);
    (crc32c::crc32c(payload) == crc).then(|| payload.to_vec())
}

/// Removes `dir/name` durably; a missing file is fine.
pub(crate) async fn remove_meta<D: Disk>(disk: &D, dir: &Path, name: &str) -> std::io::Result<()> {
    match disk.remove(&dir.join(name)).await {
        Ok(()) => disk.sync_dir(dir).await,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reads big-endian i64s from a payload.
pub(crate) fn i64s<const N: usize>(payload: &[u8]) -> Option<[i64; N]> {
    if payload.len() != N * 8 {
        return None;
    }
    let mut out = [0i64; N];
    for (i, chunk) in payload.chunks_exact(8).enumerate() {
        let mut a = [0u8; 8];
        a.copy_from_slice(chunk);
        out[i] = i64::from_be_bytes(a);
    }
    Some(out)
}

/// Encodes i64s big-endian.
pub(crate) fn encode_i64s(values: &[i64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}
