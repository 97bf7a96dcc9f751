//! A simulated disk: files in memory that remember how much of each is durable.
//!
//! Owns crash semantics only: on a crash, bytes written since the last sync vanish except a
//! random prefix of them (the last write torn at any byte), while `truncate`, `replace` and
//! `remove` are durable at once, as the [`crate::store::Files`] contract says.

use std::collections::BTreeMap;
use std::io;

use rand::Rng;

use crate::store::Files;

#[derive(Debug, Clone, Default)]
struct SimFile {
    data: Vec<u8>,
    durable: usize,
}

#[derive(Debug, Clone, Default)]
pub struct SimFiles {
    files: BTreeMap<String, SimFile>,
}

impl SimFiles {
    /// Power loss: each file keeps its durable bytes plus a random prefix of the rest.
    /// With `page_cache_lost` (power loss) nothing unsynced survives; a killed process's
    /// writes are in the page cache, and any prefix of them may reach the disk.
    pub fn crash(&mut self, rng: &mut impl Rng, page_cache_lost: bool) {
        for f in self.files.values_mut() {
            let unsynced = f.data.len() - f.durable;
            let keep = if unsynced == 0 || page_cache_lost {
                0
            } else {
                rng.random_range(0..=unsynced)
            };
            f.data.truncate(f.durable + keep);
            f.durable = f.data.len();
        }
    }
}

impl Files for SimFiles {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.files.keys().cloned().collect())
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.files
            .get(name)
            .map(|f| f.data.clone())
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.files
            .entry(name.to_string())
            .or_default()
            .data
            .extend_from_slice(bytes);
        Ok(())
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        if let Some(f) = self.files.get_mut(name) {
            f.durable = f.data.len();
        }
        Ok(())
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        let f = self.files.get_mut(name).ok_or(io::ErrorKind::NotFound)?;
        f.data.truncate(len as usize);
        f.durable = f.data.len();
        Ok(())
    }

    fn replace(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.files.insert(
            name.to_string(),
            SimFile {
                data: bytes.to_vec(),
                durable: bytes.len(),
            },
        );
        Ok(())
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.files.remove(name);
        Ok(())
    }
}
