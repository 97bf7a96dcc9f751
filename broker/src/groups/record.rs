//! The records of `__consumer_offsets`, in Kafka's own layouts (so an operator's tools that
//! read Kafka's offsets topic read ours): every record has a key and, unless it is a
//! tombstone, a value, each starting with a big-endian i16 version.
//!
//! - Offset commit: key version 1 (group, topic, partition); value version 3 (offset, leader
//!   epoch, metadata, commit timestamp). Versions 0-3 of the value are read.
//! - Group metadata: key version 2 (group); value version 3 (protocol type, generation,
//!   protocol, leader, state timestamp, members with their subscription and assignment).
//!   Versions 0-3 are read.
//!
//! A null value is a tombstone: the offset or the group was deleted. Kafka's flexible value
//! versions (4+, tagged fields) are not written; a record of a version this build does not
//! know is an error the loader reports (never a silent skip of something it misread).
//!
//! Never: panics on bytes read back from disk; allocates by a length before checking it
//! against the bytes present.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Key versions (Kafka's `OffsetCommitKey` is 0 and 1, `GroupMetadataKey` is 2).
const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
/// Value versions written.
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecordFormatError {
    #[error("{what}: needs {needed} bytes, {available} left")]
    Truncated {
        what: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("unknown {what} version {version}")]
    UnknownVersion { what: &'static str, version: i16 },
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("negative length {1} for {0}")]
    NegativeLength(&'static str, i32),
}

type Result<T> = std::result::Result<T, RecordFormatError>;

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    /// -1 when the client sent none.
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// One member in a group metadata record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the selected protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A group's membership as stored after a rebalance (and when it becomes empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub current_state_timestamp_ms: i64,
    pub members: Vec<MemberValue>,
}

/// What a record's key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKey {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

impl RecordKey {
    /// The key of `group`'s membership record.
    pub fn group_key(group: &str) -> RecordKey {
        RecordKey::Group {
            group: group.to_string(),
        }
    }

    pub fn group(&self) -> &str {
        match self {
            RecordKey::Offset { group, .. } | RecordKey::Group { group } => group,
        }
    }

    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        match self {
            RecordKey::Offset {
                group,
                topic,
                partition,
            } => {
                b.put_i16(OFFSET_KEY_VERSION);
                put_str(&mut b, group);
                put_str(&mut b, topic);
                b.put_i32(*partition);
            }
            RecordKey::Group { group } => {
                b.put_i16(GROUP_KEY_VERSION);
                put_str(&mut b, group);
            }
        }
        b.freeze()
    }

    pub fn decode(bytes: &[u8]) -> Result<RecordKey> {
        let mut r = Reader::new(bytes);
        match r.i16("key version")? {
            0 | 1 => Ok(RecordKey::Offset {
                group: r.string("group")?,
                topic: r.string("topic")?,
                partition: r.i32("partition")?,
            }),
            2 => Ok(RecordKey::Group {
                group: r.string("group")?,
            }),
            version => Err(RecordFormatError::UnknownVersion {
                what: "key",
                version,
            }),
        }
    }
}

impl OffsetValue {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(OFFSET_VALUE_VERSION);
        b.put_i64(self.offset);
        b.put_i32(self.leader_epoch);
        put_str(&mut b, &self.metadata);
        b.put_i64(self.commit_timestamp_ms);
        b.freeze()
    }

    pub fn decode(bytes: &[u8]) -> Result<OffsetValue> {
        let mut r = Reader::new(bytes);
        let version = r.i16("offset value version")?;
        if !(0..=3).contains(&version) {
            return Err(RecordFormatError::UnknownVersion {
                what: "offset value",
                version,
            });
        }
        let offset = r.i64("offset")?;
        let leader_epoch = if version >= 3 {
            r.i32("leader epoch")?
        } else {
            -1
        };
        let metadata = r.string("metadata")?;
        let commit_timestamp_ms = r.i64("commit timestamp")?;
        // Version 1's expire timestamp is read past: retention follows the broker's setting.
        if version == 1 {
            r.i64("expire timestamp")?;
        }
        Ok(OffsetValue {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp_ms,
        })
    }
}

impl GroupValue {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(GROUP_VALUE_VERSION);
        put_str(&mut b, &self.protocol_type);
        b.put_i32(self.generation);
        put_nullable_str(&mut b, self.protocol.as_deref());
        put_nullable_str(&mut b, self.leader.as_deref());
        b.put_i64(self.current_state_timestamp_ms);
        b.put_i32(self.members.len() as i32);
        for m in &self.members {
            put_str(&mut b, &m.member_id);
            put_nullable_str(&mut b, m.group_instance_id.as_deref());
            put_str(&mut b, &m.client_id);
            put_str(&mut b, &m.client_host);
            b.put_i32(m.rebalance_timeout_ms);
            b.put_i32(m.session_timeout_ms);
            put_bytes(&mut b, &m.subscription);
            put_bytes(&mut b, &m.assignment);
        }
        b.freeze()
    }

    pub fn decode(bytes: &[u8]) -> Result<GroupValue> {
        let mut r = Reader::new(bytes);
        let version = r.i16("group value version")?;
        if !(0..=3).contains(&version) {
            return Err(RecordFormatError::UnknownVersion {
                what: "group value",
                version,
            });
        }
        let protocol_type = r.string("protocol type")?;
        let generation = r.i32("generation")?;
        let protocol = r.nullable_string("protocol")?;
        let leader = r.nullable_string("leader")?;
        let current_state_timestamp_ms = if version >= 2 {
            r.i64("state timestamp")?
        } else {
            -1
        };
        let count = r.i32("member count")?;
        // Each member takes at least 20 bytes: a count past that is corrupt, not a reason
        // to reserve memory.
        let count = usize::try_from(count)
            .map_err(|_| RecordFormatError::NegativeLength("members", count))?;
        let mut members = Vec::with_capacity(count.min(r.remaining() / 20));
        for _ in 0..count {
            let member_id = r.string("member id")?;
            let group_instance_id = if version >= 3 {
                r.nullable_string("group instance id")?
            } else {
                None
            };
            let client_id = r.string("client id")?;
            let client_host = r.string("client host")?;
            let rebalance_timeout_ms = if version >= 1 {
                r.i32("rebalance timeout")?
            } else {
                -1
            };
            let session_timeout_ms = r.i32("session timeout")?;
            let subscription = r.bytes("subscription")?;
            let assignment = r.bytes("assignment")?;
            members.push(MemberValue {
                member_id,
                group_instance_id,
                client_id,
                client_host,
                // Version 0 had no rebalance timeout: Kafka used the session timeout.
                rebalance_timeout_ms: if rebalance_timeout_ms < 0 {
                    session_timeout_ms
                } else {
                    rebalance_timeout_ms
                },
                session_timeout_ms,
                subscription,
                assignment,
            });
        }
        Ok(GroupValue {
            protocol_type,
            generation,
            protocol,
            leader,
            current_state_timestamp_ms,
            members,
        })
    }
}

fn put_str(b: &mut BytesMut, s: &str) {
    // Group ids, topic names and metadata are bounded far below i16::MAX by the handlers.
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

fn put_nullable_str(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(b, s),
        None => b.put_i16(-1),
    }
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_i32(v.len() as i32);
    b.put_slice(v);
}

/// A bounds-checked big-endian reader.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data }
    }

    fn remaining(&self) -> usize {
        self.data.len()
    }

    fn take(&mut self, what: &'static str, n: usize) -> Result<&'a [u8]> {
        if self.data.len() < n {
            return Err(RecordFormatError::Truncated {
                what,
                needed: n,
                available: self.data.len(),
            });
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }

    fn i16(&mut self, what: &'static str) -> Result<i16> {
        let b = self.take(what, 2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32> {
        let b = self.take(what, 4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64> {
        let b = self.take(what, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    fn nullable_string(&mut self, what: &'static str) -> Result<Option<String>> {
        let len = self.i16(what)?;
        if len < 0 {
            return Ok(None);
        }
        let b = self.take(what, len as usize)?;
        std::str::from_utf8(b)
            .map(|s| Some(s.to_string()))
            .map_err(|_| RecordFormatError::NotUtf8(what))
    }

    fn string(&mut self, what: &'static str) -> Result<String> {
        Ok(self.nullable_string(what)?.unwrap_or_default())
    }

    fn bytes(&mut self, what: &'static str) -> Result<Bytes> {
        let len = self.i32(what)?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(self.take(what, len as usize)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_in_kafkas_layout() {
        let k = RecordKey::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 7,
        };
        let b = k.encode();
        assert_eq!(&b[..], &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 7]);
        assert_eq!(RecordKey::decode(&b).unwrap(), k);
        let g = RecordKey::Group {
            group: "grp".into(),
        };
        assert_eq!(&g.encode()[..], &[0, 2, 0, 3, b'g', b'r', b'p']);
        assert_eq!(RecordKey::decode(&g.encode()).unwrap(), g);
        // Kafka's key version 0 has the same layout.
        assert!(matches!(
            RecordKey::decode(&[0, 0, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 7]),
            Ok(RecordKey::Offset { partition: 7, .. })
        ));
    }

    #[test]
    fn values_round_trip() {
        let v = OffsetValue {
            offset: 42,
            leader_epoch: -1,
            metadata: "meta".into(),
            commit_timestamp_ms: 1_700_000_000_000,
        };
        assert_eq!(OffsetValue::decode(&v.encode()).unwrap(), v);
        let g = GroupValue {
            protocol_type: "consumer".into(),
            generation: 3,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            current_state_timestamp_ms: 5,
            members: vec![MemberValue {
                member_id: "m1".into(),
                group_instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(GroupValue::decode(&g.encode()).unwrap(), g);
    }

    #[test]
    fn older_offset_values_are_read() {
        // Version 1: offset, metadata, commit timestamp, expire timestamp.
        let mut b = BytesMut::new();
        b.put_i16(1);
        b.put_i64(9);
        put_str(&mut b, "m");
        b.put_i64(100);
        b.put_i64(200);
        let v = OffsetValue::decode(&b).unwrap();
        assert_eq!(
            (v.offset, v.leader_epoch, v.metadata.as_str()),
            (9, -1, "m")
        );
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let g = GroupValue {
            protocol_type: "consumer".into(),
            generation: 1,
            protocol: None,
            leader: None,
            current_state_timestamp_ms: 0,
            members: vec![],
        }
        .encode();
        for cut in 0..g.len() {
            assert!(GroupValue::decode(&g[..cut]).is_err());
        }
        assert!(matches!(
            OffsetValue::decode(&[0, 9]),
            Err(RecordFormatError::UnknownVersion { .. })
        ));
        // A member count far past the bytes present.
        let mut b = BytesMut::new();
        b.put_i16(3);
        put_str(&mut b, "c");
        b.put_i32(1);
        b.put_i16(-1);
        b.put_i16(-1);
        b.put_i64(0);
        b.put_i32(i32::MAX);
        assert!(GroupValue::decode(&b).is_err());
        assert!(RecordKey::decode(&[0, 5]).is_err());
    }
}
