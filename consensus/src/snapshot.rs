//! The snapshot file format: the whole tree at one committed zxid, as rkyv bytes behind a
//! checksummed, versioned header.
//!
//! Owns encoding and decoding only; never a file. Snapshots hold committed state only, so the
//! log up to a snapshot's zxid may be deleted once it is durable.
//!
//! ```text
//! magic "CBZS" | format version u16 | reserved u16 | zxid u64 | payload length u64 |
//! payload crc32c u32 | header crc32c u32 | payload (rkyv SnapshotImage)
//! ```
//!
//! Version 2 added the session table; version 1 files (no sessions) are still read.
//!
//! rkyv because the project chose it for on-disk images: the format is zero-copy readable and
//! validated (bytecheck), so a big tree loads without a parse pass written by hand.

use crate::limits::MAX_SNAPSHOT_BYTES;
use crate::session::SessionInfo;
use crate::tree::DataTree;
use crate::txn::Stat;
use crate::types::{SessionId, Zxid};

pub const SNAPSHOT_MAGIC: [u8; 4] = *b"CBZS";
pub const SNAPSHOT_FORMAT_VERSION: u16 = 2;
/// The format before sessions, still readable.
const SNAPSHOT_FORMAT_V1: u16 = 1;
pub const SNAPSHOT_HEADER_BYTES: usize = 32;
const SNAPSHOT_PREFIX: &str = "snap.";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("snapshot {name}: {reason}")]
    Bad { name: String, reason: &'static str },
    #[error("snapshot {name}: format version {version} unknown")]
    UnknownVersion { name: String, version: u16 },
    #[error("encoding the snapshot failed: {0}")]
    Encode(String),
}

/// One node as stored.
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SnapshotNode {
    pub path: String,
    pub data: Vec<u8>,
    pub stat: Stat,
}

/// The stored image: the nodes in path order and the live sessions in id order.
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SnapshotImage {
    pub zxid: Zxid,
    pub nodes: Vec<SnapshotNode>,
    pub sessions: Vec<(SessionId, SessionInfo)>,
}

/// Version 1's image (before sessions).
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SnapshotImageV1 {
    zxid: Zxid,
    nodes: Vec<SnapshotNode>,
}

pub fn snapshot_name(zxid: Zxid) -> String {
    format!("{SNAPSHOT_PREFIX}{:016x}", zxid.as_u64())
}

pub fn parse_snapshot_name(name: &str) -> Option<Zxid> {
    let hex = name.strip_prefix(SNAPSHOT_PREFIX)?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().map(Zxid::from_u64)
}

pub fn encode_snapshot(tree: &DataTree) -> Result<Vec<u8>, SnapshotError> {
    let image = SnapshotImage {
        zxid: tree.applied(),
        nodes: image_nodes(tree),
        sessions: tree.sessions().collect(),
    };
    encode_image(&image, SNAPSHOT_FORMAT_VERSION, tree.applied())
}

fn image_nodes(tree: &DataTree) -> Vec<SnapshotNode> {
    tree.iter()
        .map(|(path, node)| SnapshotNode {
            path: path.to_string(),
            data: node.data.clone(),
            stat: node.stat,
        })
        .collect()
}

fn encode_image<T>(image: &T, version: u16, zxid: Zxid) -> Result<Vec<u8>, SnapshotError>
where
    T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
{
    let payload = rkyv::to_bytes::<rkyv::rancor::Error>(image)
        .map_err(|e| SnapshotError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + payload.len());
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&zxid.as_u64().to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    let header_crc = crc32c::crc32c(&out);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

pub fn decode_snapshot(name: &str, bytes: &[u8]) -> Result<DataTree, SnapshotError> {
    let bad = |reason| SnapshotError::Bad {
        name: name.to_string(),
        reason,
    };
    if bytes.len() < SNAPSHOT_HEADER_BYTES {
        return Err(bad("short header"));
    }
    let le64 = |at: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(a)
    };
    let le32 = |at: usize| {
        let mut a = [0u8; 4];
        a.copy_from_slice(&bytes[at..at + 4]);
        u32::from_le_bytes(a)
    };
    if crc32c::crc32c(&bytes[..28]) != le32(28) {
        return Err(bad("header checksum"));
    }
    if bytes[..4] != SNAPSHOT_MAGIC {
        return Err(bad("magic"));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != SNAPSHOT_FORMAT_VERSION && version != SNAPSHOT_FORMAT_V1 {
        return Err(SnapshotError::UnknownVersion {
            name: name.to_string(),
            version,
        });
    }
    let zxid = Zxid::from_u64(le64(8));
    if parse_snapshot_name(name) != Some(zxid) {
        return Err(bad("zxid differs from file name"));
    }
    let len = le64(16);
    if len > MAX_SNAPSHOT_BYTES || bytes.len() as u64 != SNAPSHOT_HEADER_BYTES as u64 + len {
        return Err(bad("payload length"));
    }
    let payload = &bytes[SNAPSHOT_HEADER_BYTES..];
    if crc32c::crc32c(payload) != le32(24) {
        return Err(bad("payload checksum"));
    }
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    let image = if version == SNAPSHOT_FORMAT_V1 {
        let v1 = rkyv::from_bytes::<SnapshotImageV1, rkyv::rancor::Error>(&aligned)
            .map_err(|_| bad("payload"))?;
        SnapshotImage {
            zxid: v1.zxid,
            nodes: v1.nodes,
            sessions: Vec::new(),
        }
    } else {
        rkyv::from_bytes::<SnapshotImage, rkyv::rancor::Error>(&aligned)
            .map_err(|_| bad("payload"))?
    };
    if image.zxid != zxid {
        return Err(bad("payload zxid differs from header"));
    }
    DataTree::from_parts(
        zxid,
        image.nodes.into_iter().map(|n| (n.path, n.data, n.stat)),
        image.sessions,
    )
    .map_err(|_| bad("tree"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::{Txn, WriteOp};

    fn tree() -> DataTree {
        let mut t = DataTree::new();
        for (i, p) in ["/a", "/a/b", "/c"].iter().enumerate() {
            let op = WriteOp::Create {
                path: p.to_string(),
                data: vec![i as u8; 3],
                sequential: false,
                ephemeral_owner: None,
            };
            t.apply(Zxid::new(2, i as u32 + 1), &Txn::Write(op))
                .unwrap();
        }
        t
    }

    #[test]
    fn sessions_round_trip_and_version_1_still_reads() {
        let mut t = tree();
        let open = Txn::CreateSession {
            timeout_ticks: 40,
            password: 0xfeed,
        };
        t.apply(Zxid::new(2, 9), &open).unwrap();
        let owner = t.sessions().next().map(|(id, _)| id);
        let op = WriteOp::Create {
            path: "/c/e".into(),
            data: vec![],
            sequential: false,
            ephemeral_owner: owner,
        };
        t.apply(Zxid::new(2, 10), &Txn::Write(op)).unwrap();
        let name = snapshot_name(t.applied());
        let back = decode_snapshot(&name, &encode_snapshot(&t).unwrap()).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.ephemerals_of(owner.unwrap()).count(), 1);

        let old = tree();
        let v1 = SnapshotImageV1 {
            zxid: old.applied(),
            nodes: image_nodes(&old),
        };
        let bytes = encode_image(&v1, SNAPSHOT_FORMAT_V1, old.applied()).unwrap();
        assert_eq!(
            decode_snapshot(&snapshot_name(old.applied()), &bytes).unwrap(),
            old
        );
        let mut future = bytes.clone();
        future[4] = 9;
        let crc = crc32c::crc32c(&future[..28]);
        future[28..32].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            decode_snapshot(&snapshot_name(old.applied()), &future),
            Err(SnapshotError::UnknownVersion { version: 9, .. })
        ));
    }

    #[test]
    fn round_trip_and_damage() {
        let t = tree();
        let name = snapshot_name(t.applied());
        let bytes = encode_snapshot(&t).unwrap();
        assert_eq!(decode_snapshot(&name, &bytes).unwrap(), t);
        assert!(decode_snapshot(&name, &bytes[..bytes.len() - 1]).is_err());
        for i in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(decode_snapshot(&name, &bad).is_err(), "byte {i}");
        }
        assert!(decode_snapshot(&snapshot_name(Zxid::new(9, 9)), &bytes).is_err());
    }
}
