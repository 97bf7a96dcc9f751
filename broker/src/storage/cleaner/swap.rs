//! Replacing a group of segments by their cleaned copy, crash-safely, and finishing or
//! discarding what a crash left behind.
//!
//! Owns: the file protocol (Kafka's, with the replaced range in the file name):
//! 1. the cleaned copy of segments `[X, E)` is written to `X-E.cleaned` and synced;
//! 2. it is renamed to `X-E.swap` and the directory synced: the commit point;
//! 3. the old segments' index files and every old `.log` but `X.log` are removed;
//! 4. `X-E.swap` is renamed over `X.log` (one atomic replace) and the directory synced;
//! 5. the new index files are written (missing ones are rebuilt on first use anyway).
//!
//! At open, before anything else: a `.cleaned` file is a clean that never committed and is
//! removed; a `.swap` file is a committed clean: every segment file with a base offset in
//! `[X, E)` is removed and the swap file becomes `X.log`. So after a crash at any step the
//! log holds either all old segments or the one cleaned one for `[X, E)`, never both: no
//! two segments claim the same offsets, and no record the clean kept is lost (the cleaned
//! copy is synced before it can replace anything).
//! Never: removes an old segment before the cleaned copy is durable under its `.swap` name.

use std::path::{Path, PathBuf};

use tracing::info;

use crate::storage::disk::Disk;
use crate::storage::segment::{INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, file_stem};

pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";
pub(crate) const SWAP_SUFFIX: &str = ".swap";

/// `X-E<suffix>` for the cleaned copy of segments `[X, E)`.
pub(crate) fn file_name(base: i64, end: i64, suffix: &str) -> String {
    format!("{}-{}{suffix}", file_stem(base), file_stem(end))
}

/// `(X, E)` of a `X-E<suffix>` name.
pub(crate) fn parse_name(name: &str, suffix: &str) -> Option<(i64, i64)> {
    let stem = name.strip_suffix(suffix)?;
    let (base, end) = stem.split_once('-')?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(base) || !digits(end) {
        return None;
    }
    let (base, end) = (base.parse().ok()?, end.parse().ok()?);
    (base < end).then_some((base, end))
}

/// The base offset of a segment's `.log`, `.index` or `.timeindex` file name.
fn segment_file_base(name: &str) -> Option<i64> {
    [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .filter(|stem| stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|stem| stem.parse().ok())
}

/// Finishes committed swaps and removes uncommitted cleaned copies in `dir` (whose file
/// names are `names`). Returns whether anything changed (the caller lists the directory
/// again).
pub(crate) async fn recover_leftovers<D: Disk>(
    disk: &D,
    dir: &Path,
    names: &[String],
) -> std::io::Result<bool> {
    let mut changed = false;
    for name in names {
        if parse_name(name, CLEANED_SUFFIX).is_some() {
            info!(file = %dir.join(name).display(), "removing an uncommitted cleaned segment");
            disk.remove(&dir.join(name)).await?;
            changed = true;
        }
    }
    for name in names {
        let Some((base, end)) = parse_name(name, SWAP_SUFFIX) else {
            continue;
        };
        info!(file = %dir.join(name).display(), "completing an interrupted segment swap");
        for old in names {
            if segment_file_base(old).is_some_and(|b| b >= base && b < end) {
                disk.remove(&dir.join(old)).await?;
            }
        }
        disk.rename(&dir.join(name), &log_path(dir, base)).await?;
        changed = true;
    }
    if changed {
        disk.sync_dir(dir).await?;
    }
    Ok(changed)
}

pub(crate) fn log_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{}{LOG_SUFFIX}", file_stem(base)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let n = file_name(5, 120, SWAP_SUFFIX);
        assert_eq!(n, "00000000000000000005-00000000000000000120.swap");
        assert_eq!(parse_name(&n, SWAP_SUFFIX), Some((5, 120)));
        assert_eq!(parse_name(&n, CLEANED_SUFFIX), None);
        assert_eq!(parse_name("5-120.swap", SWAP_SUFFIX), None);
        assert_eq!(
            parse_name(&file_name(120, 5, SWAP_SUFFIX), SWAP_SUFFIX),
            None,
            "an empty range is not a swap"
        );
        assert_eq!(segment_file_base("00000000000000000007.timeindex"), Some(7));
        assert_eq!(segment_file_base(&n), None);
    }
}
