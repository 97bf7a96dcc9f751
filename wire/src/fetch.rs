//! The gather encoder for Fetch responses: the response is encoded around record data it
//! never touches, so the broker can send header bytes, cached `Bytes` and file ranges as one
//! vectored write (or `sendfile`/`splice`) without copying records.
//!
//! Owns: the Fetch response *body* (every version the generated `FetchResponse` supports from
//! the KIP-896 floor, v4, to v18: flexible from v12, topic ids from v13, node endpoints from
//! v16), as a list of [`FetchChunk`]s. Everything but the array and records length prefixes is
//! written by kafka-protocol's own encoders (topic- and partition-level tagged fields included),
//! so the bytes match the generated encoder exactly; tests check that at every version.
//!
//! Never: copies or reads record data; writes the frame size or the response header. The
//! caller writes `size = header_len + FetchBody::body_len` as the 4-byte prefix, then the
//! response header for Fetch at that version (`header::response_header_version`: v0 before
//! Fetch v12, v1 from v12), then the chunks in order, inserting each partition's record data
//! where a [`FetchChunk::Records`] marker stands.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::FetchResponse;
use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse};
use kafka_protocol::protocol::Encodable;

use crate::varint::{put_unsigned_varint, unsigned_varint_len};

/// The lowest Fetch version corebus encodes (KIP-896's floor for Kafka 4).
pub const FETCH_MIN_VERSION: i16 = 4;
/// The highest Fetch version the generated `FetchResponse` supports.
pub const FETCH_MAX_VERSION: i16 = 18;
/// First flexible (KIP-482) Fetch version: compact arrays, compact bytes, tagged fields.
const FETCH_FLEXIBLE_VERSION: i16 = 12;
/// First version with a top-level error code and session id (KIP-227).
const FETCH_SESSION_VERSION: i16 = 7;
/// First version that identifies topics by id only (KIP-516).
const FETCH_TOPIC_ID_VERSION: i16 = 13;
/// First version with the partition's log start offset.
const FETCH_LOG_START_VERSION: i16 = 5;
/// First version with the preferred read replica (KIP-392).
const FETCH_PREFERRED_REPLICA_VERSION: i16 = 11;

/// One piece of an encoded Fetch response body, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchChunk {
    /// Encoded bytes, to send as they are.
    Encoded(Bytes),
    /// Insert the record data of `response.responses[topic].partitions[partition]` here:
    /// exactly `len` bytes, as announced to [`encode_fetch_body`]. Partitions with no record
    /// data get no marker (their records field is written as empty).
    Records {
        topic: usize,
        partition: usize,
        len: usize,
    },
}

/// An encoded Fetch response body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchBody {
    pub chunks: Vec<FetchChunk>,
    /// Total body bytes: encoded chunks plus all record data.
    pub body_len: usize,
}

/// Why a Fetch response body cannot be encoded.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum FetchEncodeError {
    #[error("Fetch v{0} is outside the encodable range v4..=v18")]
    UnsupportedVersion(i16),
    /// `record_lens` must hold one length per partition, topic-major.
    #[error("{given} record lengths given for {partitions} partitions")]
    LengthCountMismatch { given: usize, partitions: usize },
    /// Partitions must come with `records` None or empty: record data travels beside the
    /// encoding.
    #[error("topic {topic} partition {partition} carries inline records")]
    InlineRecords { topic: usize, partition: usize },
    #[error("record data of {0} bytes does not fit a Kafka bytes field")]
    RecordsTooLarge(usize),
    /// kafka-protocol refused a part of the response (e.g. a field set that the version lacks).
    #[error("encoding the response failed: {0}")]
    Encode(String),
    /// The generated encoder's output does not have the layout this module splices into; a
    /// kafka-protocol upgrade changed the message (the byte-exact tests fail first).
    #[error("unexpected layout of the generated encoding: {0}")]
    Layout(&'static str),
}

fn encode_err(error: impl std::fmt::Display) -> FetchEncodeError {
    FetchEncodeError::Encode(format!("{error:#}"))
}

/// The encoding of an empty array (non-flexible: i32 0; flexible: unsigned varint 0 + 1).
fn empty_array(flexible: bool) -> &'static [u8] {
    if flexible { &[1] } else { &[0, 0, 0, 0] }
}

/// The encoding of null bytes (non-flexible: i32 -1; flexible: unsigned varint 0).
fn null_bytes(flexible: bool) -> &'static [u8] {
    if flexible {
        &[0]
    } else {
        &[0xff, 0xff, 0xff, 0xff]
    }
}

/// Appends an array or bytes length the way the version encodes it (flexible: length + 1 as
/// an unsigned varint; otherwise a big-endian i32).
fn put_length(out: &mut BytesMut, len: usize, flexible: bool) -> Result<(), FetchEncodeError> {
    let len = i32::try_from(len).map_err(|_| FetchEncodeError::RecordsTooLarge(len))?;
    if flexible {
        let mut varint = Vec::with_capacity(5);
        // len <= i32::MAX, so len + 1 fits u32.
        put_unsigned_varint(&mut varint, len as u32 + 1);
        out.put_slice(&varint);
    } else {
        out.put_i32(len);
    }
    Ok(())
}

/// Bytes of an encoded array of `items` structs, as the version encodes the length.
fn array_len(count: usize, items_bytes: usize, flexible: bool) -> usize {
    let prefix = if flexible {
        unsigned_varint_len(u32::try_from(count).unwrap_or(u32::MAX).saturating_add(1))
    } else {
        4
    };
    prefix + items_bytes
}

/// Bytes the top-level fields before `responses` take.
fn response_head_len(version: i16) -> usize {
    let throttle_time_ms = 4;
    if version >= FETCH_SESSION_VERSION {
        throttle_time_ms + 2 + 4 // error_code, session_id
    } else {
        throttle_time_ms
    }
}

/// Bytes a topic's fields before `partitions` take.
fn topic_head_len(topic: &FetchableTopicResponse, version: i16) -> usize {
    let name = topic.topic.len();
    if version >= FETCH_TOPIC_ID_VERSION {
        16 // the topic id; the name is not sent
    } else if version >= FETCH_FLEXIBLE_VERSION {
        // Compact string: unsigned varint length + 1.
        unsigned_varint_len(u32::try_from(name).unwrap_or(u32::MAX).saturating_add(1)) + name
    } else {
        2 + name
    }
}

/// Bytes a partition's fields before `records` take.
fn partition_head_len(
    aborted: &Option<Vec<AbortedTransaction>>,
    version: i16,
) -> Result<usize, FetchEncodeError> {
    let flexible = version >= FETCH_FLEXIBLE_VERSION;
    // partition_index, error_code, high_watermark, last_stable_offset
    let mut len = 4 + 2 + 8 + 8;
    if version >= FETCH_LOG_START_VERSION {
        len += 8;
    }
    len += match aborted {
        None => null_bytes(flexible).len(),
        Some(list) => {
            let mut items = 0;
            for entry in list {
                items += entry.compute_size(version).map_err(encode_err)?;
            }
            array_len(list.len(), items, flexible)
        }
    };
    if version >= FETCH_PREFERRED_REPLICA_VERSION {
        len += 4;
    }
    Ok(len)
}

/// Splits a generated encoding at `head`, checking that `marker` (the empty array or null
/// records the splice replaces) stands there; returns (head, tail after the marker).
fn split_at_marker<'a>(
    encoded: &'a [u8],
    head: usize,
    marker: &[u8],
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), FetchEncodeError> {
    match encoded.get(head..head + marker.len()) {
        Some(found) if found == marker => Ok((&encoded[..head], &encoded[head + marker.len()..])),
        _ => Err(FetchEncodeError::Layout(what)),
    }
}

/// Accumulates encoded bytes and cuts them into chunks at each records marker.
struct ChunkWriter {
    pending: BytesMut,
    chunks: Vec<FetchChunk>,
    body_len: usize,
}

impl ChunkWriter {
    fn put(&mut self, bytes: &[u8]) {
        self.pending.put_slice(bytes);
    }

    fn records(&mut self, topic: usize, partition: usize, len: usize) {
        self.flush();
        self.body_len += len;
        self.chunks.push(FetchChunk::Records {
            topic,
            partition,
            len,
        });
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            let encoded = self.pending.split().freeze();
            self.body_len += encoded.len();
            self.chunks.push(FetchChunk::Encoded(encoded));
        }
    }
}

/// Encodes a Fetch response body at `version` around record data it does not copy.
///
/// `response` has every partition's `records` left `None` (or empty, the generated default);
/// `record_lens` gives, topic-major
/// (all partitions of topic 0, then topic 1, ...), the length of the record data the caller
/// will insert for each partition. The records field of each partition announces that length
/// (0 means empty records, as Kafka sends for a partition with nothing to return).
pub fn encode_fetch_body(
    mut response: FetchResponse,
    version: i16,
    record_lens: &[usize],
) -> Result<FetchBody, FetchEncodeError> {
    if !(FETCH_MIN_VERSION..=FETCH_MAX_VERSION).contains(&version) {
        return Err(FetchEncodeError::UnsupportedVersion(version));
    }
    let partitions: usize = response.responses.iter().map(|t| t.partitions.len()).sum();
    if record_lens.len() != partitions {
        return Err(FetchEncodeError::LengthCountMismatch {
            given: record_lens.len(),
            partitions,
        });
    }
    let flexible = version >= FETCH_FLEXIBLE_VERSION;
    let mut out = ChunkWriter {
        pending: BytesMut::with_capacity(256),
        chunks: Vec::with_capacity(2 * partitions + 1),
        body_len: 0,
    };
    let mut scratch = BytesMut::with_capacity(128);
    let topics = std::mem::take(&mut response.responses);
    response.encode(&mut scratch, version).map_err(encode_err)?;
    let top = scratch.split().freeze();
    let (head, top_tail) = split_at_marker(
        &top,
        response_head_len(version),
        empty_array(flexible),
        "response",
    )?;
    out.put(head);
    put_length(&mut out.pending, topics.len(), flexible)?;
    let mut lens = record_lens.iter().copied();
    for (topic_index, mut topic) in topics.into_iter().enumerate() {
        let partitions = std::mem::take(&mut topic.partitions);
        topic.encode(&mut scratch, version).map_err(encode_err)?;
        let topic_bytes = scratch.split().freeze();
        let (head, topic_tail) = split_at_marker(
            &topic_bytes,
            topic_head_len(&topic, version),
            empty_array(flexible),
            "topic",
        )?;
        out.put(head);
        put_length(&mut out.pending, partitions.len(), flexible)?;
        for (partition_index, mut partition) in partitions.into_iter().enumerate() {
            // The generated default is `Some(empty)`; both it and `None` mean "beside".
            if partition.records.take().is_some_and(|r| !r.is_empty()) {
                return Err(FetchEncodeError::InlineRecords {
                    topic: topic_index,
                    partition: partition_index,
                });
            }
            // Counted above: one length per partition.
            let len = lens.next().unwrap_or(0);
            partition
                .encode(&mut scratch, version)
                .map_err(encode_err)?;
            let (head, tail) = split_at_marker(
                &scratch,
                partition_head_len(&partition.aborted_transactions, version)?,
                null_bytes(flexible),
                "partition",
            )?;
            out.put(head);
            put_length(&mut out.pending, len, flexible)?;
            if len > 0 {
                out.records(topic_index, partition_index, len);
            }
            out.put(tail);
            scratch.clear();
        }
        out.put(topic_tail);
    }
    out.put(top_tail);
    out.flush();
    Ok(FetchBody {
        chunks: out.chunks,
        body_len: out.body_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{
        EpochEndOffset, LeaderIdAndEpoch, NodeEndpoint, PartitionData, SnapshotId,
    };
    use kafka_protocol::protocol::StrBytes;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// splitmix64: a tiny deterministic generator driven by proptest's seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> usize {
            (self.next() % n) as usize
        }
        fn chance(&mut self) -> bool {
            self.next() & 1 == 1
        }
        fn i32(&mut self) -> i32 {
            self.next() as i32
        }
        fn i64(&mut self) -> i64 {
            self.next() as i64
        }
        fn bytes(&mut self, max: u64) -> Bytes {
            (0..self.below(max + 1))
                .map(|_| self.next() as u8)
                .collect()
        }
        fn name(&mut self) -> StrBytes {
            let len = self.below(20);
            StrBytes::from_string(
                (0..len)
                    .map(|_| (b'a' + self.below(26) as u8) as char)
                    .collect(),
            )
        }
        /// Unknown tagged fields with keys from `first_key` (the generated encoders write the
        /// keys above the known ones).
        fn tagged(&mut self, first_key: i32) -> BTreeMap<i32, Bytes> {
            (0..self.below(3))
                .map(|_| (first_key + self.below(5) as i32, self.bytes(6)))
                .collect()
        }
    }

    /// A random response valid for `version`, with each partition's record data beside it.
    fn random_response(rng: &mut Rng, version: i16) -> (FetchResponse, Vec<Bytes>) {
        let mut response = FetchResponse::default();
        let mut records = Vec::new();
        response.throttle_time_ms = rng.i32();
        response.error_code = rng.i32() as i16;
        if version >= FETCH_SESSION_VERSION {
            response.session_id = rng.i32();
        }
        for _ in 0..rng.below(4) {
            let mut topic = FetchableTopicResponse::default();
            topic.topic = rng.name().into();
            topic.topic_id = format!("{:016x}{:016x}", rng.next(), rng.next())
                .parse()
                .expect("a 32-digit hex string is a uuid");
            topic.unknown_tagged_fields = rng.tagged(0);
            for _ in 0..rng.below(4) {
                let mut p = PartitionData::default();
                p.partition_index = rng.i32();
                p.error_code = rng.i32() as i16;
                p.high_watermark = rng.i64();
                p.last_stable_offset = rng.i64();
                p.log_start_offset = rng.i64();
                if rng.chance() {
                    let mut list = Vec::new();
                    for _ in 0..rng.below(4) {
                        let mut aborted = AbortedTransaction::default();
                        aborted.producer_id = rng.i64().into();
                        aborted.first_offset = rng.i64();
                        aborted.unknown_tagged_fields = rng.tagged(0);
                        list.push(aborted);
                    }
                    p.aborted_transactions = Some(list);
                } else {
                    p.aborted_transactions = None;
                }
                if version >= FETCH_PREFERRED_REPLICA_VERSION && rng.chance() {
                    p.preferred_read_replica = rng.i32().into();
                }
                if rng.chance() {
                    let mut diverging = EpochEndOffset::default();
                    diverging.epoch = rng.i32();
                    diverging.end_offset = rng.i64();
                    p.diverging_epoch = diverging;
                }
                if rng.chance() {
                    let mut leader = LeaderIdAndEpoch::default();
                    leader.leader_id = rng.i32().into();
                    leader.leader_epoch = rng.i32();
                    p.current_leader = leader;
                }
                if rng.chance() {
                    let mut snapshot = SnapshotId::default();
                    snapshot.end_offset = rng.i64();
                    snapshot.epoch = rng.i32();
                    p.snapshot_id = snapshot;
                }
                p.unknown_tagged_fields = rng.tagged(3);
                topic.partitions.push(p);
                records.push(rng.bytes(40));
            }
            response.responses.push(topic);
        }
        if version >= 16 {
            for _ in 0..rng.below(3) {
                let mut node = NodeEndpoint::default();
                node.node_id = rng.i32().into();
                node.host = rng.name();
                node.port = rng.i32();
                node.rack = rng.chance().then(|| rng.name());
                response.node_endpoints.push(node);
            }
        }
        response.unknown_tagged_fields = rng.tagged(1);
        (response, records)
    }

    /// The body kafka-protocol writes with the record data inline.
    fn reference(response: &FetchResponse, records: &[Bytes], version: i16) -> BytesMut {
        let mut inline = response.clone();
        let mut data = records.iter();
        for topic in &mut inline.responses {
            for partition in &mut topic.partitions {
                partition.records = data.next().cloned();
            }
        }
        let mut out = BytesMut::new();
        inline
            .encode(&mut out, version)
            .expect("the reference encodes");
        out
    }

    /// The gathered body with the record data inserted at the markers.
    fn gathered(body: &FetchBody, response: &FetchResponse, records: &[Bytes]) -> Vec<u8> {
        let first_of_topic: Vec<usize> = response
            .responses
            .iter()
            .scan(0, |next, t| {
                let first = *next;
                *next += t.partitions.len();
                Some(first)
            })
            .collect();
        let mut out = Vec::new();
        for chunk in &body.chunks {
            match chunk {
                FetchChunk::Encoded(bytes) => out.extend_from_slice(bytes),
                FetchChunk::Records {
                    topic,
                    partition,
                    len,
                } => {
                    let data = &records[first_of_topic[*topic] + partition];
                    assert_eq!(data.len(), *len);
                    out.extend_from_slice(data);
                }
            }
        }
        out
    }

    fn check(seed: u64, version: i16) {
        let mut rng = Rng(seed);
        let (response, records) = random_response(&mut rng, version);
        let expected = reference(&response, &records, version);
        let lens: Vec<usize> = records.iter().map(Bytes::len).collect();
        let body = encode_fetch_body(response.clone(), version, &lens).unwrap();
        assert_eq!(body.body_len, expected.len());
        assert_eq!(
            gathered(&body, &response, &records),
            &expected[..],
            "v{version}"
        );
    }

    #[test]
    fn every_version_matches_the_generated_encoder() {
        for version in FETCH_MIN_VERSION..=FETCH_MAX_VERSION {
            for seed in 0..50 {
                check(seed, version);
            }
        }
    }

    proptest! {
        #[test]
        fn random_responses_match_the_generated_encoder(
            seed: u64,
            version in FETCH_MIN_VERSION..=FETCH_MAX_VERSION,
        ) {
            check(seed, version);
        }
    }

    #[test]
    fn record_data_is_never_in_the_encoded_chunks() {
        let mut topic = FetchableTopicResponse::default();
        topic.partitions.push(PartitionData::default());
        let mut response = FetchResponse::default();
        response.responses.push(topic);
        let body = encode_fetch_body(response, 12, &[1 << 20]).unwrap();
        let encoded: usize = body
            .chunks
            .iter()
            .map(|c| match c {
                FetchChunk::Encoded(b) => b.len(),
                FetchChunk::Records { .. } => 0,
            })
            .sum();
        assert!(encoded < 100);
        assert_eq!(body.body_len, encoded + (1 << 20));
    }

    #[test]
    fn misuse_is_an_error() {
        let mut topic = FetchableTopicResponse::default();
        topic
            .partitions
            .push(PartitionData::default().with_records(Some(Bytes::from_static(b"x"))));
        let mut response = FetchResponse::default();
        response.responses.push(topic);
        assert!(matches!(
            encode_fetch_body(response.clone(), 12, &[]),
            Err(FetchEncodeError::LengthCountMismatch { .. })
        ));
        assert!(matches!(
            encode_fetch_body(response.clone(), 12, &[1]),
            Err(FetchEncodeError::InlineRecords { .. })
        ));
        assert!(matches!(
            encode_fetch_body(response, 3, &[1]),
            Err(FetchEncodeError::UnsupportedVersion(3))
        ));
    }
}
