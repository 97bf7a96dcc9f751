//! The cleaner checkpoint of one log: where its clean part ends (the first dirty offset) and
//! the earliest delete horizon of a tombstone it still keeps.
//!
//! Owns: the `cleaner-checkpoint` file of a log directory, written atomically through
//! `meta` (temporary file, fdatasync, rename, directory sync) after every clean. Kafka keeps
//! one `cleaner-offset-checkpoint` per data directory; one per log keeps a clean of one log
//! from rewriting the others' entries. Losing it is safe: the next clean starts from the log
//! start again (compacting compacted data changes nothing) and tombstones are found again.
//! Never: written before the cleaned segments it describes are in place.

use std::path::Path;

use crate::storage::disk::Disk;
use crate::storage::meta::{encode_i64s, i64s, read_meta, write_meta};

pub(crate) const CLEANER_CHECKPOINT_FILE: &str = "cleaner-checkpoint";

/// "No tombstone kept" in the file.
const NO_HORIZON: i64 = i64::MIN;

/// A log's cleaner checkpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub first_dirty_offset: i64,
    pub tombstone_horizon_ms: Option<i64>,
}

pub(crate) async fn read<D: Disk>(disk: &D, dir: &Path) -> Option<Checkpoint> {
    let payload = read_meta(disk, dir, CLEANER_CHECKPOINT_FILE).await?;
    let [first_dirty_offset, horizon] = i64s::<2>(&payload)?;
    Some(Checkpoint {
        first_dirty_offset,
        tombstone_horizon_ms: (horizon != NO_HORIZON).then_some(horizon),
    })
}

pub(crate) async fn write<D: Disk>(disk: &D, dir: &Path, c: Checkpoint) -> std::io::Result<()> {
    let horizon = c.tombstone_horizon_ms.unwrap_or(NO_HORIZON);
    let payload = encode_i64s(&[c.first_dirty_offset, horizon]);
    write_meta(disk, dir, CLEANER_CHECKPOINT_FILE, &payload).await
}
