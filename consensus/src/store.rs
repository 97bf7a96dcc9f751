//! The durable store of one node: the segmented log, snapshots and the epoch file over a
//! directory, executing the node's [`crate::zab::DiskOp`]s and recovering after a crash.
//!
//! Owns file layout, segment rolling, log truncation (ZAB's TRUNC and purging after a
//! snapshot) and recovery = newest valid snapshot + the log after it, torn tail cut off. Never
//! decides what is committed, and never touches the file system except through [`Files`], so
//! the simulator can crash it and the runtime can back it with real files.

use std::io;

use crate::log::{self, LogError};
use crate::meta::{self, EPOCH_FILE, Epochs};
use crate::snapshot::{self, SnapshotError};
use crate::tree::DataTree;
use crate::txn::LogEntry;
use crate::types::Zxid;

/// How many snapshots are kept (the newest may be unreadable after a bad disk; ZooKeeper keeps 3).
pub const RETAINED_SNAPSHOTS: usize = 2;

/// A directory as the store needs it. Writes through `append` are durable only after `sync`
/// (and a file that `append` created must survive with them: the implementation fsyncs the
/// directory the first time it syncs a new file); `truncate`, `replace` and `remove` are
/// durable when they return.
pub trait Files {
    fn list(&self) -> io::Result<Vec<String>>;
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// Appends to `name`, creating it if missing.
    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()>;
    fn sync(&mut self, name: &str) -> io::Result<()>;
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()>;
    /// Replaces the whole file atomically (write aside, fsync, rename, fsync the directory).
    fn replace(&mut self, name: &str, bytes: &[u8]) -> io::Result<()>;
    fn remove(&mut self, name: &str) -> io::Result<()>;
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("i/o on {name}: {source}")]
    Io { name: String, source: io::Error },
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Epochs(#[from] meta::EpochFileError),
    #[error("append of {zxid} after {last}: zxids must increase")]
    OutOfOrder { zxid: Zxid, last: Zxid },
    #[error("no readable snapshot while the log starts at {first} (its history is gone)")]
    MissingHistory { first: Zxid },
}

fn io_err(name: &str) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        name: name.to_string(),
        source,
    }
}

/// Where each record of a segment ends, for truncation.
#[derive(Debug, Clone)]
struct SegmentIndex {
    name: String,
    base: Zxid,
    len: u64,
    records: Vec<(Zxid, u64)>,
}

/// What recovery hands to the protocol.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub epochs: Epochs,
    /// The tree of the newest valid snapshot (or empty). Holds committed state only.
    pub tree: DataTree,
    /// Log entries after the snapshot, in order. Not known to be committed.
    pub log: Vec<LogEntry>,
}

pub struct LogStore<F: Files> {
    files: F,
    segments: Vec<SegmentIndex>,
    snapshots: Vec<Zxid>,
    max_segment_bytes: u64,
    /// The newest segment has bytes not yet synced.
    dirty: bool,
    /// Recovery cut a torn tail off the log.
    cut_torn_tail: bool,
}

impl<F: Files> LogStore<F> {
    /// Opens the directory and recovers; repairs (cutting a torn tail, removing a segment torn
    /// before its header was whole) are made durable before returning.
    pub fn recover(
        mut files: F,
        max_segment_bytes: u64,
    ) -> Result<(LogStore<F>, Recovered), StoreError> {
        let names = files.list().map_err(io_err("."))?;
        let epochs = if names.iter().any(|n| n == EPOCH_FILE) {
            meta::decode_epochs(&files.read(EPOCH_FILE).map_err(io_err(EPOCH_FILE))?)?
        } else {
            Epochs::default()
        };
        let mut snaps: Vec<(Zxid, &String)> = names
            .iter()
            .filter_map(|n| snapshot::parse_snapshot_name(n).map(|z| (z, n)))
            .collect();
        snaps.sort();
        let mut tree = None;
        for (_, name) in snaps.iter().rev() {
            let bytes = files.read(name).map_err(io_err(name))?;
            match snapshot::decode_snapshot(name, &bytes) {
                Ok(t) => {
                    tree = Some(t);
                    break;
                }
                // An older snapshot plus a longer log replay is still the same state.
                Err(e) => tracing::warn!(error = %e, "skipping unreadable snapshot"),
            }
        }
        let tree = tree.unwrap_or_default();

        let mut segs: Vec<(Zxid, String)> = names
            .iter()
            .filter_map(|n| log::parse_segment_name(n).map(|z| (z, n.clone())))
            .collect();
        segs.sort();
        let mut segments = Vec::with_capacity(segs.len());
        let mut log = Vec::new();
        let mut previous = Zxid::ZERO;
        let mut cut_torn_tail = false;
        for (i, (_, name)) in segs.iter().enumerate() {
            let tail = i + 1 == segs.len();
            let bytes = files.read(name).map_err(io_err(name))?;
            let scan = log::scan_segment(name, &bytes, tail, previous)?;
            if scan.valid_len == 0 && !scan.torn {
                // Created, but not even its header reached the disk: it never held anything.
                files.remove(name).map_err(io_err(name))?;
                continue;
            }
            if scan.torn {
                cut_torn_tail = true;
                tracing::warn!(segment = %name, kept = scan.valid_len, had = bytes.len(), "cutting torn log tail");
                if scan.valid_len == 0 {
                    files.remove(name).map_err(io_err(name))?;
                    continue;
                }
                files.truncate(name, scan.valid_len).map_err(io_err(name))?;
            }
            if let Some(last) = scan.entries.last() {
                previous = last.zxid;
            }
            segments.push(SegmentIndex {
                name: name.clone(),
                base: scan.base,
                len: scan.valid_len,
                records: scan
                    .entries
                    .iter()
                    .map(|e| e.zxid)
                    .zip(scan.ends.iter().copied())
                    .collect(),
            });
            log.extend(scan.entries.into_iter().filter(|e| e.zxid > tree.applied()));
        }
        if !snaps.is_empty() && tree.applied() == Zxid::ZERO {
            // Snapshots existed but none reads: the log before them may be purged already, so
            // replaying it from empty would silently lose state.
            let first = log.first().map_or(Zxid::ZERO, |e| e.zxid);
            return Err(StoreError::MissingHistory { first });
        }
        let store = LogStore {
            files,
            segments,
            snapshots: snaps.iter().map(|(z, _)| *z).collect(),
            max_segment_bytes,
            dirty: false,
            cut_torn_tail,
        };
        Ok((store, Recovered { epochs, tree, log }))
    }

    /// Whether recovery found a torn tail and cut it off.
    pub fn cut_torn_tail(&self) -> bool {
        self.cut_torn_tail
    }

    pub fn files(&self) -> &F {
        &self.files
    }

    pub fn files_mut(&mut self) -> &mut F {
        &mut self.files
    }

    /// Gives the directory back (the process is gone; the simulator crashes it).
    pub fn into_files(self) -> F {
        self.files
    }

    pub fn last_zxid(&self) -> Option<Zxid> {
        self.segments
            .iter()
            .rev()
            .find_map(|s| s.records.last().map(|r| r.0))
    }

    /// Appends one entry (buffered). Rolls to a new segment past the size limit, syncing the
    /// old one first so that only the newest segment can ever have a torn tail.
    pub fn append(&mut self, entry: &LogEntry) -> Result<(), StoreError> {
        if let Some(last) = self.last_zxid()
            && entry.zxid <= last
        {
            return Err(StoreError::OutOfOrder {
                zxid: entry.zxid,
                last,
            });
        }
        let record = log::encode_record(entry)?;
        let roll = self
            .segments
            .last()
            .is_none_or(|s| s.len >= self.max_segment_bytes);
        if roll {
            if self.dirty {
                self.sync()?;
            }
            let name = log::segment_name(entry.zxid);
            let header = log::encode_segment_header(entry.zxid);
            self.files.append(&name, &header).map_err(io_err(&name))?;
            self.segments.push(SegmentIndex {
                name,
                base: entry.zxid,
                len: header.len() as u64,
                records: Vec::new(),
            });
        }
        let Some(seg) = self.segments.last_mut() else {
            return Ok(());
        };
        self.files
            .append(&seg.name, &record)
            .map_err(io_err(&seg.name))?;
        seg.len += record.len() as u64;
        seg.records.push((entry.zxid, seg.len));
        self.dirty = true;
        Ok(())
    }

    /// Makes every appended entry durable.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if let Some(seg) = self.segments.last() {
            self.files.sync(&seg.name).map_err(io_err(&seg.name))?;
        }
        self.dirty = false;
        Ok(())
    }

    /// Durably drops every entry after `after` (ZAB's TRUNC).
    pub fn truncate_after(&mut self, after: Zxid) -> Result<(), StoreError> {
        while let Some(seg) = self.segments.last() {
            if seg.base <= after {
                break;
            }
            self.files.remove(&seg.name).map_err(io_err(&seg.name))?;
            self.segments.pop();
        }
        if let Some(seg) = self.segments.last_mut() {
            let keep = seg.records.iter().take_while(|r| r.0 <= after).count();
            if keep < seg.records.len() {
                let len = if keep == 0 {
                    log::SEGMENT_HEADER_BYTES as u64
                } else {
                    seg.records[keep - 1].1
                };
                self.files
                    .truncate(&seg.name, len)
                    .map_err(io_err(&seg.name))?;
                seg.records.truncate(keep);
                seg.len = len;
            }
            // The truncate synced the file; nothing else is pending in it.
            self.files.sync(&seg.name).map_err(io_err(&seg.name))?;
        }
        self.dirty = false;
        Ok(())
    }

    /// Durably writes a snapshot of committed state, then purges what it makes unnecessary:
    /// older snapshots past [`RETAINED_SNAPSHOTS`] and log segments wholly covered by the
    /// oldest retained snapshot.
    pub fn write_snapshot(&mut self, tree: &DataTree) -> Result<(), StoreError> {
        let name = snapshot::snapshot_name(tree.applied());
        self.files
            .replace(&name, &snapshot::encode_snapshot(tree)?)
            .map_err(io_err(&name))?;
        if !self.snapshots.contains(&tree.applied()) {
            self.snapshots.push(tree.applied());
            self.snapshots.sort();
        }
        while self.snapshots.len() > RETAINED_SNAPSHOTS {
            let old = snapshot::snapshot_name(self.snapshots.remove(0));
            self.files.remove(&old).map_err(io_err(&old))?;
        }
        let floor = self.snapshots[0];
        // A segment can go when the next one starts at or before the floor: all its entries
        // are then inside the snapshot.
        while self.segments.len() >= 2 && self.segments[1].base <= floor {
            let seg = self.segments.remove(0);
            self.files.remove(&seg.name).map_err(io_err(&seg.name))?;
        }
        Ok(())
    }

    /// Replaces the whole history by a snapshot (ZAB's SNAP from the leader): the snapshot is
    /// made durable first, then every log segment is removed.
    pub fn reset_to_snapshot(&mut self, tree: &DataTree) -> Result<(), StoreError> {
        self.write_snapshot(tree)?;
        for seg in self.segments.drain(..) {
            self.files.remove(&seg.name).map_err(io_err(&seg.name))?;
        }
        self.dirty = false;
        Ok(())
    }

    pub fn set_epochs(&mut self, epochs: Epochs) -> Result<(), StoreError> {
        self.files
            .replace(EPOCH_FILE, &meta::encode_epochs(epochs))
            .map_err(io_err(EPOCH_FILE))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::txn::{Txn, WriteOp};
    use crate::types::Epoch;

    /// Files in memory; `crash` keeps only synced bytes (and `torn_extra` more of the tail).
    #[derive(Default, Clone)]
    pub(crate) struct MemFiles {
        pub files: BTreeMap<String, (Vec<u8>, usize)>,
    }

    impl MemFiles {
        pub(crate) fn crash(&mut self, torn_extra: usize) {
            for (data, durable) in self.files.values_mut() {
                let keep = (*durable + torn_extra).min(data.len());
                data.truncate(keep);
                *durable = keep;
            }
        }
    }

    impl Files for MemFiles {
        fn list(&self) -> io::Result<Vec<String>> {
            Ok(self.files.keys().cloned().collect())
        }
        fn read(&self, name: &str) -> io::Result<Vec<u8>> {
            self.files
                .get(name)
                .map(|f| f.0.clone())
                .ok_or_else(|| io::ErrorKind::NotFound.into())
        }
        fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
            self.files
                .entry(name.to_string())
                .or_default()
                .0
                .extend_from_slice(bytes);
            Ok(())
        }
        fn sync(&mut self, name: &str) -> io::Result<()> {
            if let Some(f) = self.files.get_mut(name) {
                f.1 = f.0.len();
            }
            Ok(())
        }
        fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
            if let Some(f) = self.files.get_mut(name) {
                f.0.truncate(len as usize);
                f.1 = f.0.len();
            }
            Ok(())
        }
        fn replace(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
            self.files
                .insert(name.to_string(), (bytes.to_vec(), bytes.len()));
            Ok(())
        }
        fn remove(&mut self, name: &str) -> io::Result<()> {
            self.files.remove(name);
            Ok(())
        }
    }

    fn entry(e: u32, c: u32) -> LogEntry {
        LogEntry {
            zxid: Zxid::new(e, c),
            txn: Txn::Write(WriteOp::Create {
                path: format!("/n{e}-{c}"),
                data: vec![1; 40],
                sequential: false,
                ephemeral_owner: None,
            }),
        }
    }

    fn open(files: MemFiles) -> (LogStore<MemFiles>, Recovered) {
        LogStore::recover(files, 200).unwrap()
    }

    #[test]
    fn unsynced_tail_vanishes_and_torn_tail_is_cut() {
        let (mut s, r) = open(MemFiles::default());
        assert!(r.log.is_empty());
        for c in 1..=10 {
            s.append(&entry(1, c)).unwrap();
        }
        s.sync().unwrap();
        assert!(s.segments.len() > 2, "small segments roll");
        for c in 11..=12 {
            s.append(&entry(1, c)).unwrap();
        }
        for extra in [0usize, 5, 30, 1000] {
            let mut files = s.files().clone();
            files.crash(extra);
            let (s2, r) = open(files.clone());
            let n = r.log.len();
            assert!((10..=12).contains(&n), "extra {extra}: {n}");
            assert_eq!(
                r.log,
                (1..=n as u32).map(|c| entry(1, c)).collect::<Vec<_>>()
            );
            // Recovery made the cut durable: a second crash recovers the same.
            let mut again = s2.files().clone();
            again.crash(0);
            assert_eq!(open(again).1.log.len(), n);
        }
    }

    #[test]
    fn truncate_snapshot_purge_and_reset() {
        let (mut s, _) = open(MemFiles::default());
        for c in 1..=8 {
            s.append(&entry(1, c)).unwrap();
        }
        s.truncate_after(Zxid::new(1, 5)).unwrap();
        s.append(&entry(2, 1)).unwrap();
        s.sync().unwrap();
        let (_, r) = open(s.files().clone());
        let got: Vec<Zxid> = r.log.iter().map(|e| e.zxid).collect();
        let mut want: Vec<Zxid> = (1..=5).map(|c| Zxid::new(1, c)).collect();
        want.push(Zxid::new(2, 1));
        assert_eq!(got, want);

        // Snapshot at (1,4): recovery starts from it and replays only what follows.
        let mut tree = DataTree::new();
        for e in &r.log[..4] {
            tree.apply(e.zxid, &e.txn).unwrap();
        }
        s.write_snapshot(&tree).unwrap();
        s.set_epochs(Epochs {
            accepted: Epoch(2),
            current: Epoch(2),
        })
        .unwrap();
        let (_, r) = open(s.files().clone());
        assert_eq!(r.tree, tree);
        assert_eq!(
            r.log.iter().map(|e| e.zxid).collect::<Vec<_>>(),
            want[4..].to_vec()
        );
        assert_eq!(r.epochs.current, Epoch(2));

        // More snapshots purge old segments and snapshots; recovery stays the same.
        for c in 2..=9 {
            s.append(&entry(2, c)).unwrap();
        }
        s.sync().unwrap();
        let (_, full) = open(s.files().clone());
        for e in &full.log {
            tree.apply(e.zxid, &e.txn).unwrap();
        }
        let before = s.files().files.len();
        s.write_snapshot(&tree).unwrap();
        let mut t2 = tree.clone();
        t2.apply(Zxid::new(2, 10), &Txn::Noop).unwrap();
        s.append(&LogEntry {
            zxid: Zxid::new(2, 10),
            txn: Txn::Noop,
        })
        .unwrap();
        s.write_snapshot(&t2).unwrap();
        assert!(s.files().files.len() < before, "purged");
        assert_eq!(s.snapshots.len(), RETAINED_SNAPSHOTS);
        s.sync().unwrap();
        let (_, r) = open(s.files().clone());
        assert_eq!(r.tree, t2);
        assert!(r.log.is_empty());

        // SNAP from a leader replaces everything.
        s.reset_to_snapshot(&t2).unwrap();
        s.append(&entry(3, 1)).unwrap();
        s.sync().unwrap();
        let (_, r) = open(s.files().clone());
        assert_eq!(r.tree, t2);
        assert_eq!(r.log, vec![entry(3, 1)]);
    }

    #[test]
    fn a_segment_created_but_empty_at_the_crash_is_removed() {
        let (mut s, _) = open(MemFiles::default());
        for c in 1..=10 {
            s.append(&entry(1, c)).unwrap();
        }
        s.sync().unwrap();
        // The roll created a file whose header never reached the disk.
        let mut files = s.files().clone();
        files
            .files
            .insert(log::segment_name(Zxid::new(1, 11)), (vec![], 0));
        let (mut s2, r) = open(files);
        assert_eq!(r.log.len(), 10);
        // Appending goes on in a proper segment, and a later recovery reads it all.
        for c in 11..=20 {
            s2.append(&entry(1, c)).unwrap();
        }
        s2.sync().unwrap();
        assert_eq!(open(s2.files().clone()).1.log.len(), 20);
    }

    #[test]
    fn corruption_in_an_older_segment_is_an_error() {
        let (mut s, _) = open(MemFiles::default());
        for c in 1..=10 {
            s.append(&entry(1, c)).unwrap();
        }
        s.sync().unwrap();
        let mut files = s.files().clone();
        let first = files.files.keys().next().unwrap().clone();
        let f = files.files.get_mut(&first).unwrap();
        let at = f.0.len() - 3;
        f.0[at] ^= 0xff;
        assert!(LogStore::recover(files, 200).is_err());
        assert!(matches!(
            s.append(&entry(1, 3)),
            Err(StoreError::OutOfOrder { .. })
        ));
    }
}
