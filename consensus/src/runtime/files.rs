//! [`crate::store::Files`] over a real directory, with the durability the store's contract asks:
//! `sync` is an fdatasync (and the directory is fsynced the first time a new file is synced,
//! so the file's name survives with its bytes); `truncate`, `replace` and `remove` are durable
//! when they return.
//!
//! Owns file handles of one directory. Blocking calls: used only from the disk thread
//! ([`super::disk`]), never from the executor.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::store::Files;

pub struct DirFiles {
    dir: PathBuf,
    open: BTreeMap<String, File>,
    /// Created by `append` but their directory entry is not yet known durable.
    unsynced_names: BTreeSet<String>,
}

impl DirFiles {
    /// Opens (creating if needed) `dir`.
    pub fn open(dir: &Path) -> io::Result<DirFiles> {
        fs::create_dir_all(dir)?;
        Ok(DirFiles {
            dir: dir.to_path_buf(),
            open: BTreeMap::new(),
            unsynced_names: BTreeSet::new(),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

impl Files for DirFiles {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Some(name) = entry.file_name().to_str()
            {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path(name))
    }

    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        if !self.open.contains_key(name) {
            let path = self.path(name);
            let existed = path.exists();
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            if !existed {
                self.unsynced_names.insert(name.to_string());
            }
            self.open.insert(name.to_string(), file);
        }
        match self.open.get_mut(name) {
            Some(f) => f.write_all(bytes),
            None => Err(io::Error::other("file handle vanished")),
        }
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        if let Some(f) = self.open.get(name) {
            f.sync_data()?;
        }
        if self.unsynced_names.remove(name) {
            self.sync_dir()?;
        }
        Ok(())
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(self.path(name))?;
        file.set_len(len)?;
        file.sync_all()?;
        Ok(())
    }

    fn replace(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.path(&format!("{name}.tmp"));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.path(name))?;
        self.open.remove(name);
        self.sync_dir()
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.open.remove(name);
        self.unsynced_names.remove(name);
        match fs::remove_file(self.path(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.sync_dir()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LogStore;
    use crate::txn::{LogEntry, Txn};
    use crate::types::Zxid;

    #[test]
    fn a_store_over_real_files_recovers_what_it_synced() {
        let dir = tempfile::tempdir().unwrap();
        {
            let files = DirFiles::open(dir.path()).unwrap();
            let (mut store, rec) = LogStore::recover(files, 1 << 20).unwrap();
            assert!(rec.log.is_empty());
            for c in 1..=3 {
                store
                    .append(&LogEntry {
                        zxid: Zxid::new(1, c),
                        txn: Txn::Noop,
                    })
                    .unwrap();
            }
            store.sync().unwrap();
        }
        let files = DirFiles::open(dir.path()).unwrap();
        let (_, rec) = LogStore::recover(files, 1 << 20).unwrap();
        let zxids: Vec<Zxid> = rec.log.iter().map(|e| e.zxid).collect();
        assert_eq!(
            zxids,
            vec![Zxid::new(1, 1), Zxid::new(1, 2), Zxid::new(1, 3)]
        );
    }
}
