//! What the producers send: record values (stamped), keys, and the partition for a key.
//!
//! Owns: the stamp at the front of every value (run tag + intended send time, so the
//! consumer measures end-to-end latency and tells this run's records from others'), the
//! payload sources (random, compressible, from a file), the key distributions, and the
//! keyed and sticky partitioners.
//! Never: allocates per record (values are assembled in a reused buffer from a pregenerated
//! payload pool).

use std::path::Path;

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use rand_distr::{Distribution, Zipf};

use crate::workload::{KeyDistribution, PayloadKind, Workload};

/// Bytes at the front of every value: run tag (u32) and intended send time (u64, micros
/// since the run's clock epoch), little-endian.
pub const STAMP_BYTES: usize = 12;

/// Bytes of pregenerated payload each producer cycles through: large enough that
/// compression sees varied data, small enough to stay in cache.
const PAYLOAD_POOL_BYTES: usize = 4 * 1024 * 1024;

/// Words the compressible payload is made of: like JSON logs, a small vocabulary.
const WORDS: [&str; 24] = [
    "{\"id\":",
    "\"user\":",
    "\"event\":",
    "click",
    "view",
    "purchase",
    "\"ts\":",
    "true",
    "false",
    "null",
    "\"region\":",
    "eu-west",
    "us-east",
    "\"amount\":",
    "\"items\":[",
    "],",
    "}",
    ",",
    " ",
    "status",
    "ok",
    "error",
    "session",
    "\"agent\":",
];

/// Writes the stamp; `value` must have at least [`STAMP_BYTES`].
pub fn stamp(value: &mut [u8], run_tag: u32, intended_us: u64) {
    value[..4].copy_from_slice(&run_tag.to_le_bytes());
    value[4..STAMP_BYTES].copy_from_slice(&intended_us.to_le_bytes());
}

/// The intended send time of a value this run wrote, or `None` for a foreign value.
pub fn read_stamp(value: &[u8], run_tag: u32) -> Option<u64> {
    let tag = value.first_chunk::<4>()?;
    if u32::from_le_bytes(*tag) != run_tag {
        return None;
    }
    let time = value.get(4..STAMP_BYTES)?;
    Some(u64::from_le_bytes(time.try_into().ok()?))
}

/// A producer's source of value bytes.
pub struct Payloads {
    pool: Vec<u8>,
    position: usize,
    value: Vec<u8>,
}

impl Payloads {
    pub fn new(workload: &Workload, seed: u64) -> Result<Payloads, String> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let wanted = PAYLOAD_POOL_BYTES.max(workload.message_size * 2);
        let pool = match workload.payload {
            PayloadKind::Random => {
                let mut pool = vec![0; wanted];
                rng.fill_bytes(&mut pool);
                pool
            }
            PayloadKind::Compressible => {
                let mut pool = Vec::with_capacity(wanted + 32);
                while pool.len() < wanted {
                    let word = WORDS[rng.random_range(0..WORDS.len())];
                    pool.extend_from_slice(word.as_bytes());
                    if rng.random_range(0..4) == 0 {
                        let digits = rng.random_range(0..1_000_000u32).to_string();
                        pool.extend_from_slice(digits.as_bytes());
                    }
                }
                pool
            }
            PayloadKind::File => {
                let path = workload.payload_file.as_deref().unwrap_or(Path::new(""));
                let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                if bytes.is_empty() {
                    return Err(format!("{}: payload file is empty", path.display()));
                }
                bytes.iter().copied().cycle().take(wanted).collect()
            }
        };
        Ok(Payloads {
            pool,
            position: 0,
            value: vec![0; workload.message_size],
        })
    }

    /// The next value, stamped.
    pub fn next(&mut self, run_tag: u32, intended_us: u64) -> &[u8] {
        let body = self.value.len() - STAMP_BYTES;
        if self.position + body > self.pool.len() {
            self.position = 0;
        }
        self.value[STAMP_BYTES..].copy_from_slice(&self.pool[self.position..self.position + body]);
        // An odd step keeps consecutive values from being byte-identical.
        self.position += body.max(1) / 2 + 1;
        stamp(&mut self.value, run_tag, intended_us);
        &self.value
    }
}

/// A producer's key source.
pub struct Keys {
    distribution: KeyDistribution,
    space: u64,
    counter: u64,
    rng: SmallRng,
    zipf: Option<Zipf<f64>>,
    buffer: String,
}

impl Keys {
    pub fn new(workload: &Workload, seed: u64) -> Result<Keys, String> {
        let zipf = match workload.keys {
            KeyDistribution::Zipf => Some(
                Zipf::new(workload.key_space as f64, workload.zipf_exponent)
                    .map_err(|e| format!("zipf keys: {e}"))?,
            ),
            _ => None,
        };
        Ok(Keys {
            distribution: workload.keys,
            space: workload.key_space.max(1),
            counter: seed % workload.key_space.max(1),
            rng: SmallRng::seed_from_u64(seed ^ 0x6b65_7973),
            zipf,
            buffer: String::with_capacity(24),
        })
    }

    /// The next key's number, or `None` for keyless records.
    pub fn next_id(&mut self) -> Option<u64> {
        match self.distribution {
            KeyDistribution::None => None,
            KeyDistribution::RoundRobin => {
                let id = self.counter;
                self.counter = (self.counter + 1) % self.space;
                Some(id)
            }
            KeyDistribution::Random => Some(self.rng.random_range(0..self.space)),
            // Zipf yields 1..=n; key 0 is the hottest.
            KeyDistribution::Zipf => self
                .zipf
                .as_ref()
                .map(|z| (z.sample(&mut self.rng) as u64).saturating_sub(1)),
        }
    }

    /// The key bytes of key number `id` (as applications write them: text).
    pub fn key_bytes(&mut self, id: u64) -> &[u8] {
        use std::fmt::Write;
        self.buffer.clear();
        let _ = write!(self.buffer, "key-{id:010}");
        self.buffer.as_bytes()
    }
}

/// The partition of a keyed record: a hash of the key modulo the partition count (CRC32C
/// here, not Kafka's murmur2, so placement differs from the Java client's, but the spread,
/// and with Zipf keys the hot partitions, are the same).
pub fn keyed_partition(key: &[u8], partitions: usize) -> usize {
    crc32c::crc32c(key) as usize % partitions.max(1)
}

/// Kafka's sticky partitioner for keyless records (KIP-794): stay on one partition for
/// `batch_bytes` worth of records, then move to the next.
pub struct Sticky {
    partition: usize,
    bytes: usize,
}

impl Sticky {
    pub fn new(start: usize) -> Sticky {
        Sticky {
            partition: start,
            bytes: 0,
        }
    }

    pub fn next(&mut self, record_bytes: usize, batch_bytes: usize, partitions: usize) -> usize {
        if self.bytes >= batch_bytes {
            self.bytes = 0;
            self.partition += 1;
        }
        self.bytes += record_bytes;
        self.partition % partitions.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(extra: &str) -> Workload {
        Workload::parse(&format!(
            "name = \"t\"\npartitions_per_topic = 4\nmessage_size = 100\nrate = 10\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn stamps_round_trip_and_tell_runs_apart() {
        let w = workload("");
        let mut p = Payloads::new(&w, 1).unwrap();
        let v = p.next(7, 123_456).to_vec();
        assert_eq!(v.len(), 100);
        assert_eq!(read_stamp(&v, 7), Some(123_456));
        assert_eq!(read_stamp(&v, 8), None);
        assert_eq!(read_stamp(&v[..5], 7), None);
        assert_ne!(p.next(7, 1)[STAMP_BYTES..], v[STAMP_BYTES..]);
    }

    #[test]
    fn compressible_payload_compresses_and_random_does_not() {
        use corebus_wire::record::{Compression, compression::compress};
        let ratio = |kind: &str| {
            let w = workload(&format!("payload = \"{kind}\""));
            let p = Payloads::new(&w, 3).unwrap();
            let sample = &p.pool[..64 * 1024];
            compress(Compression::Zstd, sample).unwrap().len() as f64 / sample.len() as f64
        };
        assert!(ratio("compressible") < 0.5, "{}", ratio("compressible"));
        assert!(ratio("random") > 0.95);
    }

    #[test]
    fn key_distributions() {
        let mut none = Keys::new(&workload(""), 1).unwrap();
        assert_eq!(none.next_id(), None);
        let mut rr = Keys::new(&workload("keys = \"round-robin\"\nkey_space = 3"), 0).unwrap();
        let ids: Vec<_> = (0..4).map(|_| rr.next_id().unwrap()).collect();
        assert_eq!(ids, [0, 1, 2, 0]);
        let mut zipf = Keys::new(&workload("keys = \"zipf\"\nkey_space = 100"), 5).unwrap();
        let mut hits = [0u32; 100];
        for _ in 0..10_000 {
            hits[zipf.next_id().unwrap() as usize] += 1;
        }
        // The hottest key takes far more than a uniform 1%.
        assert!(
            hits[0] > 1000 && hits[0] > hits[50] * 10,
            "{:?}",
            &hits[..5]
        );
        assert_eq!(zipf.key_bytes(42), b"key-0000000042");
    }

    #[test]
    fn partitioners() {
        assert_eq!(keyed_partition(b"a", 8), keyed_partition(b"a", 8));
        let mut s = Sticky::new(0);
        let parts: Vec<_> = (0..6).map(|_| s.next(100, 200, 4)).collect();
        assert_eq!(parts, [0, 0, 1, 1, 2, 2]);
    }
}
