//! Builds valid magic-2 record batches: for tests, tools and the bench harness, and for
//! batches the broker writes itself (transaction markers).
//!
//! Never: used on the produce path (clients' batches are stored as they arrive).

use bytes::Bytes;

use super::batch::{BATCH_HEADER_BYTES, BATCH_OVERHEAD_BYTES, MAGIC_V2, RecordBatch};
use super::compression::{Compression, compress};
use super::{RecordError, RecordHeader};
use crate::varint::{put_varint, put_varlong, varint_len};

/// Control record type of a transaction marker (the control record's key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlType {
    Abort,
    Commit,
}

impl ControlType {
    /// The marker type of a control record's key (version i16, type i16); `None` for a key
    /// that is not a version-0 transaction marker.
    pub fn from_key(key: &[u8]) -> Option<ControlType> {
        match key {
            [0, 0, 0, 0] => Some(ControlType::Abort),
            [0, 0, 0, 1] => Some(ControlType::Commit),
            _ => None,
        }
    }
}

/// A record waiting to be written into a batch.
#[derive(Clone, Debug)]
struct PendingRecord {
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: Vec<RecordHeader>,
}

/// Accumulates records and writes one magic-2 batch with a correct length and CRC.
#[derive(Clone, Debug)]
pub struct RecordBatchBuilder {
    compression: Compression,
    base_offset: i64,
    partition_leader_epoch: i32,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
    control: bool,
    log_append_time: Option<i64>,
    records: Vec<PendingRecord>,
}

impl RecordBatchBuilder {
    /// A builder for a non-idempotent (producer id -1) CreateTime batch at offset 0.
    pub fn new(compression: Compression) -> RecordBatchBuilder {
        RecordBatchBuilder {
            compression,
            base_offset: 0,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            transactional: false,
            control: false,
            log_append_time: None,
            records: Vec::new(),
        }
    }

    pub fn base_offset(&mut self, base_offset: i64) -> &mut Self {
        self.base_offset = base_offset;
        self
    }

    pub fn partition_leader_epoch(&mut self, epoch: i32) -> &mut Self {
        self.partition_leader_epoch = epoch;
        self
    }

    /// Makes the batch idempotent: producer id, epoch and the sequence of its first record.
    pub fn producer(&mut self, producer_id: i64, epoch: i16, base_sequence: i32) -> &mut Self {
        self.producer_id = producer_id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
        self
    }

    pub fn transactional(&mut self, transactional: bool) -> &mut Self {
        self.transactional = transactional;
        self
    }

    /// Marks the batch LogAppendTime with `append_time` as its max timestamp, as a broker
    /// would have stamped it.
    pub fn log_append_time(&mut self, append_time: i64) -> &mut Self {
        self.log_append_time = Some(append_time);
        self
    }

    /// Appends a record without headers.
    pub fn record(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> &mut Self {
        self.record_with_headers(timestamp, key, value, &[])
    }

    /// Appends a record; headers keep their order and may repeat keys.
    pub fn record_with_headers(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> &mut Self {
        self.records.push(PendingRecord {
            timestamp,
            key: key.map(Bytes::copy_from_slice),
            value: value.map(Bytes::copy_from_slice),
            headers: headers
                .iter()
                .map(|(key, value)| RecordHeader {
                    key: Bytes::copy_from_slice(key),
                    value: value.map(Bytes::copy_from_slice),
                })
                .collect(),
        });
        self
    }

    /// Makes this a control batch holding one transaction marker (Kafka's
    /// `EndTransactionMarker`: key = version 0 + type, value = version 0 + coordinator epoch).
    /// The batch is transactional and must carry the producer id and epoch of the transaction.
    pub fn control_marker(
        &mut self,
        control: ControlType,
        coordinator_epoch: i32,
        timestamp: i64,
    ) -> &mut Self {
        let kind: i16 = match control {
            ControlType::Abort => 0,
            ControlType::Commit => 1,
        };
        let mut key = 0i16.to_be_bytes().to_vec();
        key.extend_from_slice(&kind.to_be_bytes());
        let mut value = 0i16.to_be_bytes().to_vec();
        value.extend_from_slice(&coordinator_epoch.to_be_bytes());
        self.control = true;
        self.transactional = true;
        self.records.clear();
        self.record(timestamp, Some(&key), Some(&value))
    }

    /// Number of records appended so far.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn attributes(&self) -> i16 {
        let mut attributes = self.compression.id();
        if self.log_append_time.is_some() {
            attributes |= 0x08;
        }
        if self.transactional {
            attributes |= 0x10;
        }
        if self.control {
            attributes |= 0x20;
        }
        attributes
    }

    /// Record data as it sits uncompressed in the batch.
    fn encode_records(&self, base_timestamp: i64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut body = Vec::new();
        for (offset_delta, record) in self.records.iter().enumerate() {
            let fields = RecordFields {
                attributes: 0, // unused in magic 2
                timestamp_delta: record.timestamp.wrapping_sub(base_timestamp),
                offset_delta: offset_delta as i32,
                key: record.key.as_deref(),
                value: record.value.as_deref(),
                headers: &record.headers,
            };
            put_record(&mut out, &mut body, &fields);
        }
        out
    }

    /// Writes the batch: offsets deltas 0..n, base timestamp = first record's timestamp (as
    /// Kafka's producer does), max timestamp = the largest (or the LogAppendTime).
    pub fn build(&self) -> Result<RecordBatch, RecordError> {
        let base_timestamp = self.records.first().map_or(-1, |r| r.timestamp);
        let max_timestamp = match self.log_append_time {
            Some(append_time) => append_time,
            None => self.records.iter().map(|r| r.timestamp).max().unwrap_or(-1),
        };
        let records = compress(self.compression, &self.encode_records(base_timestamp))?;
        let total = BATCH_HEADER_BYTES + records.len();
        let batch_length = i32::try_from(total - BATCH_OVERHEAD_BYTES).map_err(|_| {
            RecordError::InvalidLength {
                what: "built batch",
                length: total as i64,
            }
        })?;
        let record_count = self.records.len() as i32;
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&self.base_offset.to_be_bytes());
        out.extend_from_slice(&batch_length.to_be_bytes());
        out.extend_from_slice(&self.partition_leader_epoch.to_be_bytes());
        out.push(MAGIC_V2 as u8);
        out.extend_from_slice(&[0; 4]); // CRC, filled in below
        let crc_start = out.len();
        out.extend_from_slice(&self.attributes().to_be_bytes());
        out.extend_from_slice(&(record_count - 1).max(0).to_be_bytes());
        out.extend_from_slice(&base_timestamp.to_be_bytes());
        out.extend_from_slice(&max_timestamp.to_be_bytes());
        out.extend_from_slice(&self.producer_id.to_be_bytes());
        out.extend_from_slice(&self.producer_epoch.to_be_bytes());
        out.extend_from_slice(&self.base_sequence.to_be_bytes());
        out.extend_from_slice(&record_count.to_be_bytes());
        out.extend_from_slice(&records);
        let crc = crc32c::crc32c(&out[crc_start..]);
        out[crc_start - 4..crc_start].copy_from_slice(&crc.to_be_bytes());
        RecordBatch::parse(Bytes::from(out))
    }
}

/// One record's fields as they are encoded.
pub(crate) struct RecordFields<'a> {
    pub attributes: u8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [RecordHeader],
}

/// Appends one record, length-prefixed, to `out` (`body` is scratch space, reused).
pub(crate) fn put_record(out: &mut Vec<u8>, body: &mut Vec<u8>, r: &RecordFields<'_>) {
    body.clear();
    body.push(r.attributes);
    put_varlong(body, r.timestamp_delta);
    put_varint(body, r.offset_delta);
    put_nullable(body, r.key);
    put_nullable(body, r.value);
    put_varint(body, r.headers.len() as i32);
    for header in r.headers {
        put_nullable(body, Some(&header.key));
        put_nullable(body, header.value.as_deref());
    }
    out.reserve(varint_len(body.len() as i32) + body.len());
    put_varint(out, body.len() as i32);
    out.extend_from_slice(body);
}

/// Appends a varint-length-prefixed field, -1 for null.
pub(crate) fn put_nullable(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        None => put_varint(out, -1),
        Some(bytes) => {
            put_varint(out, bytes.len() as i32);
            out.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_batch_reads_back() {
        let mut builder = RecordBatchBuilder::new(Compression::None);
        builder
            .base_offset(40)
            .producer(7, 2, 100)
            .record(1_000, Some(b"a"), Some(b"one"))
            .record_with_headers(900, None, Some(b"two"), &[(b"h", None), (b"h", Some(b"x"))]);
        let batch = builder.build().unwrap();
        batch.verify_crc().unwrap();
        assert_eq!(batch.base_offset(), 40);
        assert_eq!(batch.last_offset(), 41);
        assert_eq!(batch.record_count(), 2);
        assert_eq!(batch.base_timestamp(), 1_000);
        assert_eq!(batch.max_timestamp(), 1_000);
        assert_eq!(
            (
                batch.producer_id(),
                batch.producer_epoch(),
                batch.base_sequence()
            ),
            (7, 2, 100)
        );
        let records: Vec<_> = batch.records().unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(records[1].timestamp_delta, -100);
        assert_eq!(records[1].offset_delta, 1);
        assert_eq!(records[1].headers.len(), 2);
    }

    #[test]
    fn control_markers_carry_their_type() {
        let mut builder = RecordBatchBuilder::new(Compression::None);
        builder
            .producer(3, 0, -1)
            .control_marker(ControlType::Commit, 5, 77);
        let batch = builder.build().unwrap();
        assert!(batch.is_control() && batch.is_transactional());
        let record = batch.records().unwrap().next().unwrap().unwrap();
        assert_eq!(
            ControlType::from_key(record.key.as_deref().unwrap()),
            Some(ControlType::Commit)
        );
    }
}
