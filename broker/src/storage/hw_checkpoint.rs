//! The high watermark checkpoint of a shard (Kafka's `replication-offset-checkpoint`): the
//! high watermark of each partition whose log the shard holds, written every
//! `replica.high.watermark.checkpoint.interval.ms` and at a clean close, and read at start-up
//! so that a replica reopens its log with the high watermark it had then, not at its log
//! start (`PartitionLog::open_high_watermark`).
//!
//! One file per shard, `<data>/high-watermarks.<shard>`, replaced atomically (temporary file,
//! fdatasync, rename, directory sync). At start-up every shard reads every such file and
//! keeps the largest value of each partition: a partition may have lived on another shard
//! before a restart with another shard count. Partitions are named by topic id, which is never
//! reused, so an entry of a deleted topic cannot reach a new topic of the same name.
//!
//! Format: magic "CBHW" | version u16 | reserved u16 | entry count u32 | crc32c(entries) u32
//! | entries (topic id 16 bytes, partition i32, high watermark i64; big-endian), zero-padded
//! to whole pages. A file that fails any check is ignored with a warning (its partitions then
//! start from the log start, as without a checkpoint), never read as garbage.
//!
//! Why a value read here is safe to expose: a high watermark only counts records every
//! in-sync replica held, and the reader clamps it to its own recovered log end. High
//! watermarks of one topic id only grow, except after an unclean election, which makes a
//! follower truncate below its high watermark: the follower then writes its checkpoint before
//! it appends past the cut (`replication::follower`), so no file holds the old value over the
//! new line's records. A stale file of an older shard layout holds older values, smaller
//! ones but for that same exception.
//!
//! Never: keeps files open; blocks the shard (the writes are direct I/O through `Disk`).

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use super::disk::{AlignedBuf, Disk, DiskFile, OpenMode, PAGE_BYTES, align_up};

/// Names of checkpoint files start with this; the shard index follows.
pub const FILE_PREFIX: &str = "high-watermarks.";
const MAGIC: &[u8; 4] = b"CBHW";
const FORMAT_VERSION: u16 = 1;
const HEADER_BYTES: usize = 16;
const ENTRY_BYTES: usize = 28;
/// A file larger than this is not read (a million partitions on one shard is far beyond
/// anything served; a damaged size field must not allocate without bound).
const MAX_ENTRIES: usize = 1 << 20;

/// A partition: its topic's id (16 bytes) and its index.
pub type CheckpointKey = ([u8; 16], i32);

/// High watermarks by partition.
pub type HighWatermarks = BTreeMap<CheckpointKey, i64>;

/// The file of shard `shard`.
pub fn file_name(shard: u16) -> String {
    format!("{FILE_PREFIX}{shard}")
}

/// The file's bytes for `entries`, padded to whole pages.
pub fn encode(entries: &HighWatermarks) -> Vec<u8> {
    let body_len = entries.len() * ENTRY_BYTES;
    let mut out = Vec::with_capacity(align_up((HEADER_BYTES + body_len) as u64) as usize);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    for ((topic, partition), hw) in entries {
        out.extend_from_slice(topic);
        out.extend_from_slice(&partition.to_be_bytes());
        out.extend_from_slice(&hw.to_be_bytes());
    }
    let crc = crc32c::crc32c(&out[HEADER_BYTES..]);
    out[12..16].copy_from_slice(&crc.to_be_bytes());
    out.resize(align_up(out.len() as u64) as usize, 0);
    out
}

/// The entries of a file's bytes, or why they cannot be trusted.
pub fn decode(bytes: &[u8]) -> Result<HighWatermarks, String> {
    let header = bytes
        .get(..HEADER_BYTES)
        .ok_or_else(|| format!("{} bytes, shorter than its header", bytes.len()))?;
    if &header[..4] != MAGIC {
        return Err("not a high watermark checkpoint (magic)".into());
    }
    let version = u16::from_be_bytes([header[4], header[5]]);
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version}, this build reads {FORMAT_VERSION}"
        ));
    }
    let count = u32::from_be_bytes([header[8], header[9], header[10], header[11]]) as usize;
    if count > MAX_ENTRIES {
        return Err(format!("{count} entries, more than {MAX_ENTRIES}"));
    }
    let body = bytes
        .get(HEADER_BYTES..HEADER_BYTES + count * ENTRY_BYTES)
        .ok_or_else(|| format!("{count} entries announced, the file is shorter"))?;
    let crc = u32::from_be_bytes([header[12], header[13], header[14], header[15]]);
    if crc32c::crc32c(body) != crc {
        return Err("checksum mismatch".into());
    }
    let mut entries = HighWatermarks::new();
    for e in body.chunks_exact(ENTRY_BYTES) {
        let mut topic = [0u8; 16];
        topic.copy_from_slice(&e[..16]);
        let partition = i32::from_be_bytes([e[16], e[17], e[18], e[19]]);
        let mut hw = [0u8; 8];
        hw.copy_from_slice(&e[20..28]);
        entries.insert((topic, partition), i64::from_be_bytes(hw));
    }
    Ok(entries)
}

/// Atomically replaces `dir/name` with `entries`.
pub async fn write<D: Disk>(
    disk: &D,
    dir: &Path,
    name: &str,
    entries: &HighWatermarks,
) -> std::io::Result<()> {
    let bytes = encode(entries);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut buf = disk.alloc(bytes.len());
    buf.as_mut_slice().copy_from_slice(&bytes);
    let file = disk.open(&tmp, OpenMode::CreateIfMissing).await?;
    // A temporary file left longer by an earlier, interrupted write is cut to this one.
    file.truncate(0).await?;
    let written = file.write_at(Rc::new(buf), 0).await?;
    if written != bytes.len() {
        return Err(std::io::Error::other(format!(
            "short direct write of {name}: {written} of {} bytes",
            bytes.len()
        )));
    }
    file.fdatasync().await?;
    drop(file);
    disk.rename(&tmp, &dir.join(name)).await?;
    disk.sync_dir(dir).await
}

/// Every checkpoint file in `dir`, merged (the largest value of each partition), and the
/// shard index of each file found. Files that cannot be read or fail their checks are skipped
/// with a warning. Start-up only: it lists the directory (`Disk::list_dir` may block).
pub async fn read_all<D: Disk>(disk: &D, dir: &Path) -> (HighWatermarks, Vec<u16>) {
    let mut merged = HighWatermarks::new();
    let mut shards = Vec::new();
    let names = match disk.list_dir(dir) {
        Ok(names) => names,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot list the data directory for high watermark checkpoints");
            return (merged, shards);
        }
    };
    for name in names {
        let Some(shard) = name.strip_prefix(FILE_PREFIX) else {
            continue;
        };
        let Ok(shard) = shard.parse::<u16>() else {
            continue; // a temporary file
        };
        shards.push(shard);
        match read_one(disk, &dir.join(&name)).await {
            Ok(entries) => {
                for (key, hw) in entries {
                    let slot = merged.entry(key).or_insert(hw);
                    *slot = (*slot).max(hw);
                }
            }
            Err(e) => tracing::warn!(
                file = %dir.join(&name).display(),
                error = %e,
                "high watermark checkpoint ignored: its partitions start from the log start until \
                 their in-sync replicas fetch again"
            ),
        }
    }
    (merged, shards)
}

async fn read_one<D: Disk>(disk: &D, path: &Path) -> Result<HighWatermarks, String> {
    let file = disk
        .open(path, OpenMode::Existing)
        .await
        .map_err(|e| e.to_string())?;
    let size = file.size().await.map_err(|e| e.to_string())?;
    let limit = align_up((HEADER_BYTES + MAX_ENTRIES * ENTRY_BYTES) as u64);
    if size > limit {
        return Err(format!("{size} bytes, more than any checkpoint"));
    }
    let len = align_up(size.max(PAGE_BYTES as u64)) as usize;
    let bytes = file.read_at(0, len).await.map_err(|e| e.to_string())?;
    decode(bytes.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SimDisk;

    fn sample(n: usize) -> HighWatermarks {
        (0..n)
            .map(|i| (([i as u8; 16], i as i32 % 7), i as i64 * 1_000))
            .collect()
    }

    #[test]
    fn round_trip_and_page_padding() {
        for n in [0, 1, 145, 146, 10_000] {
            let bytes = encode(&sample(n));
            assert_eq!(bytes.len() % PAGE_BYTES, 0);
            assert_eq!(decode(&bytes).unwrap(), sample(n), "{n} entries");
        }
    }

    #[test]
    fn damaged_files_are_refused() {
        let good = encode(&sample(10));
        let mut flipped = good.clone();
        flipped[HEADER_BYTES + 3] ^= 1;
        assert!(decode(&flipped).unwrap_err().contains("checksum"));
        let mut magic = good.clone();
        magic[0] = b'X';
        assert!(decode(&magic).is_err());
        let mut count = good.clone();
        count[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode(&count).unwrap_err().contains("more than"));
        let mut long = good.clone();
        long[8..12].copy_from_slice(&500u32.to_be_bytes());
        assert!(decode(&long).unwrap_err().contains("shorter"));
        assert!(decode(&good[..10]).is_err());
        let mut version = good;
        version[5] = 9;
        assert!(decode(&version).unwrap_err().contains("version"));
    }

    #[test]
    fn files_of_all_shards_merge_by_the_largest_value() {
        let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .expect("executor");
        ex.run(async {
            let disk = SimDisk::new();
            let dir = Path::new("/data");
            disk.create_dir_all(dir).unwrap();
            let a: HighWatermarks = [(([1; 16], 0), 10), (([2; 16], 3), 50)].into();
            let b: HighWatermarks = [(([1; 16], 0), 40), (([3; 16], 1), 7)].into();
            write(&disk, dir, &file_name(0), &a).await.unwrap();
            write(&disk, dir, &file_name(1), &b).await.unwrap();
            // A smaller rewrite replaces the file whole.
            write(&disk, dir, &file_name(1), &sample(400))
                .await
                .unwrap();
            write(&disk, dir, &file_name(1), &b).await.unwrap();
            // Neither a damaged file nor a stray temporary one is read.
            let junk = disk
                .open(&dir.join(file_name(2)), OpenMode::CreateIfMissing)
                .await
                .unwrap();
            let mut page = disk.alloc(PAGE_BYTES);
            page.as_mut_slice()[..4].copy_from_slice(b"CBHW");
            junk.write_at(Rc::new(page), 0).await.unwrap();
            write(&disk, dir, "high-watermarks.3.tmp", &sample(3))
                .await
                .unwrap();
            let (merged, mut shards) = read_all(&disk, dir).await;
            let want: HighWatermarks =
                [(([1; 16], 0), 40), (([2; 16], 3), 50), (([3; 16], 1), 7)].into();
            assert_eq!(merged, want);
            shards.sort();
            assert_eq!(shards, [0, 1, 2]);
        });
    }
}
