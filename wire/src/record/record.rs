//! Records inside a (decompressed) magic-2 batch: lazy iteration with every field a `Bytes`
//! slice of the record data.
//!
//! Record layout (KIP-98): length varint, attributes i8, timestamp delta varlong, offset delta
//! varint, key (varint length, -1 = null), value (same), header count varint, then per header
//! a key (varint length, never null) and a value (varint length, -1 = null).
//!
//! Never: allocates by a count before checking it against the bytes present, reorders or
//! merges headers (duplicate keys are legal and kept in order), or panics on malformed bytes.

use std::ops::Range;

use bytes::Bytes;

use super::RecordError;
use crate::varint::{VarintError, read_varint, read_varlong};

/// The fewest bytes one record can take: a one-byte length, attributes, timestamp delta,
/// offset delta, key length, value length and header count of one byte each.
pub const MIN_RECORD_BYTES: usize = 7;
/// The fewest bytes one header can take: a one-byte key length and value length.
pub const MIN_HEADER_BYTES: usize = 2;

/// One record header. Kafka allows duplicate keys; order is significant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

/// One record, borrowed from the record data by `Bytes` slices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The record's length field: bytes after the length varint.
    pub length: i32,
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<RecordHeader>,
}

/// Lazily iterates the records of one batch's (decompressed) record data. Ends after the
/// declared count; yields an error if the data holds fewer records or bytes are left over.
#[derive(Clone, Debug)]
pub struct Records {
    data: Bytes,
    pos: usize,
    declared: i32,
    read: usize,
    done: bool,
}

fn varint(bytes: &[u8], pos: &mut usize, field: &'static str) -> Result<i32, RecordError> {
    read_varint(bytes, pos).map_err(|source| RecordError::Varint { field, source })
}

fn varlong(bytes: &[u8], pos: &mut usize, field: &'static str) -> Result<i64, RecordError> {
    read_varlong(bytes, pos).map_err(|source| RecordError::Varint { field, source })
}

/// Reads a varint-length-prefixed byte field of `body`: its byte range, or `None` for -1 when
/// `nullable`. Any other negative length, or one running past `body`, is an error.
fn field_range(
    body: &[u8],
    pos: &mut usize,
    what: &'static str,
    nullable: bool,
) -> Result<Option<Range<usize>>, RecordError> {
    let length = varint(body, pos, what)?;
    if length == -1 && nullable {
        return Ok(None);
    }
    let invalid = RecordError::InvalidLength {
        what,
        length: i64::from(length),
    };
    let Ok(length) = usize::try_from(length) else {
        return Err(invalid);
    };
    if length > body.len() - *pos {
        return Err(invalid);
    }
    let range = *pos..*pos + length;
    *pos += length;
    Ok(Some(range))
}

/// The fixed fields of one record body, with key and value as byte ranges of the body.
struct BodyFields {
    attributes: u8,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
}

/// The one reader of the record layout: walks exactly one record's body (the bytes its length
/// covers), handing each header's key and value ranges to `on_header`, and checks that the
/// fields use up the body exactly. Allocates nothing itself.
fn walk_body(
    body: &[u8],
    mut on_header: impl FnMut(Range<usize>, Option<Range<usize>>),
) -> Result<BodyFields, RecordError> {
    let mut pos = 0;
    let Some(&attributes) = body.first() else {
        return Err(RecordError::Varint {
            field: "record attributes",
            source: VarintError::Truncated,
        });
    };
    pos += 1;
    let timestamp_delta = varlong(body, &mut pos, "timestamp delta")?;
    let offset_delta = varint(body, &mut pos, "offset delta")?;
    let key = field_range(body, &mut pos, "record key", true)?;
    let value = field_range(body, &mut pos, "record value", true)?;
    let header_count = varint(body, &mut pos, "header count")?;
    let header_count = usize::try_from(header_count)
        .ok()
        .filter(|&count| count <= (body.len() - pos) / MIN_HEADER_BYTES)
        .ok_or(RecordError::InvalidLength {
            what: "header count",
            length: i64::from(header_count),
        })?;
    for _ in 0..header_count {
        // Header keys are never null: -1 is an invalid length here.
        let key = field_range(body, &mut pos, "header key", false)?.unwrap_or_default();
        let value = field_range(body, &mut pos, "header value", true)?;
        on_header(key, value);
    }
    if pos != body.len() {
        return Err(RecordError::RecordLengthMismatch {
            declared: body.len(),
            used: pos,
        });
    }
    Ok(BodyFields {
        attributes,
        timestamp_delta,
        offset_delta,
        key,
        value,
    })
}

/// Reads one record's length varint at `*pos` of `data` and returns the range of its body,
/// advancing `*pos` past the length (not past the body).
fn body_range(data: &[u8], pos: &mut usize) -> Result<(i32, Range<usize>), RecordError> {
    let length = varint(data, pos, "record length")?;
    let body_len = usize::try_from(length)
        .ok()
        .filter(|&len| len <= data.len() - *pos)
        .ok_or(RecordError::InvalidLength {
            what: "record",
            length: i64::from(length),
        })?;
    Ok((length, *pos..*pos + body_len))
}

/// What validating a client's batch needs of one record, read without building a [`Record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordShape {
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub has_key: bool,
}

/// Checks the record starting at `*pos` of `data` with every check [`Records`] makes (length
/// varint against the bytes present, key, value and header lengths in bounds, fields using up
/// the record exactly) and moves `*pos` past it. No allocation: this is the produce path.
pub(crate) fn scan_record(data: &[u8], pos: &mut usize) -> Result<RecordShape, RecordError> {
    let mut at = *pos;
    let (_, body) = body_range(data, &mut at)?;
    let end = body.end;
    let fields = walk_body(&data[body], |_, _| {})?;
    *pos = end;
    Ok(RecordShape {
        timestamp_delta: fields.timestamp_delta,
        offset_delta: fields.offset_delta,
        has_key: fields.key.is_some(),
    })
}

impl Records {
    /// Records of one batch: `data` is the record data (after the 61-byte header, decompressed
    /// when the batch is compressed) and `record_count` the header's count. A count larger than
    /// the bytes could hold is refused here, before anything is read.
    pub fn new(data: Bytes, record_count: i32) -> Result<Records, RecordError> {
        if record_count < 0 {
            return Err(RecordError::NegativeRecordCount(record_count));
        }
        if record_count as usize > data.len() / MIN_RECORD_BYTES {
            return Err(RecordError::RecordCountTooLarge {
                count: record_count,
                available: data.len(),
            });
        }
        Ok(Records {
            data,
            pos: 0,
            declared: record_count,
            read: 0,
            done: false,
        })
    }

    /// The record count the batch header declares.
    pub fn declared_count(&self) -> i32 {
        self.declared
    }

    fn parse_next(&mut self) -> Result<Record, RecordError> {
        let mut pos = self.pos;
        let (length, range) = body_range(&self.data, &mut pos)?;
        let end = range.end;
        let body = self.data.slice(range);
        let record = parse_body(&body, length)?;
        self.pos = end;
        Ok(record)
    }
}

/// Parses one record's fields from exactly its body (the bytes its length covers).
fn parse_body(body: &Bytes, length: i32) -> Result<Record, RecordError> {
    let mut headers = Vec::new();
    let fields = walk_body(body, |key, value| {
        headers.push(RecordHeader {
            key: body.slice(key),
            value: value.map(|v| body.slice(v)),
        });
    })?;
    Ok(Record {
        length,
        attributes: fields.attributes as i8,
        timestamp_delta: fields.timestamp_delta,
        offset_delta: fields.offset_delta,
        key: fields.key.map(|k| body.slice(k)),
        value: fields.value.map(|v| body.slice(v)),
        headers,
    })
}

impl Iterator for Records {
    type Item = Result<Record, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.read == self.declared as usize {
            self.done = true;
            let trailing = self.data.len() - self.pos;
            if trailing != 0 {
                return Some(Err(RecordError::TrailingBytes {
                    declared: self.declared,
                    trailing,
                }));
            }
            return None;
        }
        if self.pos == self.data.len() {
            self.done = true;
            return Some(Err(RecordError::MissingRecords {
                declared: self.declared,
                found: self.read,
            }));
        }
        match self.parse_next() {
            Ok(record) => {
                self.read += 1;
                Some(Ok(record))
            }
            Err(error) => {
                self.done = true;
                Some(Err(error))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done {
            return (0, Some(0));
        }
        // Plus one for a possible trailing error item.
        (0, Some(self.declared as usize - self.read + 1))
    }
}

impl std::iter::FusedIterator for Records {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::builder::put_nullable as put_field;
    use crate::varint::{put_varint, put_varlong};

    fn record(offset_delta: i32, headers: &[(&[u8], Option<&[u8]>)]) -> Vec<u8> {
        let mut body = vec![0u8];
        put_varlong(&mut body, 5);
        put_varint(&mut body, offset_delta);
        put_field(&mut body, Some(b"k"));
        put_field(&mut body, None);
        put_varint(&mut body, headers.len() as i32);
        for (key, value) in headers {
            put_field(&mut body, Some(key));
            put_field(&mut body, *value);
        }
        let mut out = Vec::new();
        put_varint(&mut out, body.len() as i32);
        out.extend(body);
        out
    }

    #[test]
    fn duplicate_headers_are_kept_in_order() {
        let data = record(0, &[(b"a", Some(b"1")), (b"b", None), (b"a", Some(b"2"))]);
        let records: Vec<Record> = Records::new(Bytes::from(data), 1)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(records.len(), 1);
        let keys: Vec<&[u8]> = records[0].headers.iter().map(|h| &h.key[..]).collect();
        assert_eq!(keys, [b"a", b"b", b"a"]);
        assert_eq!(records[0].headers[2].value.as_deref(), Some(&b"2"[..]));
        assert_eq!(records[0].headers[1].value, None);
        assert_eq!(records[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(records[0].value, None);
        assert_eq!(records[0].timestamp_delta, 5);
    }

    #[test]
    fn hostile_counts_are_refused_before_reading() {
        assert!(matches!(
            Records::new(Bytes::from_static(&[0; 10]), 1_000_000),
            Err(RecordError::RecordCountTooLarge { .. })
        ));
        // A header count far beyond the record's bytes.
        let mut body = vec![0u8, 0, 0, 1, 1];
        put_varint(&mut body, i32::MAX);
        let mut data = Vec::new();
        put_varint(&mut data, body.len() as i32);
        data.extend(body);
        let mut records = Records::new(Bytes::from(data), 1).unwrap();
        assert!(matches!(
            records.next(),
            Some(Err(RecordError::InvalidLength {
                what: "header count",
                ..
            }))
        ));
        assert!(records.next().is_none());
    }

    #[test]
    fn count_must_match_the_data() {
        let mut data = record(0, &[]);
        data.extend(record(1, &[]));
        let mut two = Records::new(Bytes::from(data.clone()), 1).unwrap();
        assert!(two.next().unwrap().is_ok());
        assert!(matches!(
            two.next(),
            Some(Err(RecordError::TrailingBytes { .. }))
        ));
        let one = record(0, &[]);
        let mut short = Records::new(Bytes::from(one), 1).unwrap();
        assert!(short.next().unwrap().is_ok());
        assert!(short.next().is_none());
        let mut none_declared = Records::new(Bytes::from(record(0, &[])), 0).unwrap();
        assert!(matches!(
            none_declared.next(),
            Some(Err(RecordError::TrailingBytes { .. }))
        ));
        let mut missing = Records::new(Bytes::from(record(0, &[(b"abcdefgh", None)])), 2).unwrap();
        assert!(missing.next().unwrap().is_ok());
        assert!(matches!(
            missing.next(),
            Some(Err(RecordError::MissingRecords { found: 1, .. }))
        ));
    }

    #[test]
    fn record_length_must_cover_exactly_its_fields() {
        let mut data = record(0, &[]);
        data[0] += 2; // zigzag: +1 in value
        data.push(0);
        let mut records = Records::new(Bytes::from(data), 1).unwrap();
        assert!(matches!(
            records.next(),
            Some(Err(RecordError::RecordLengthMismatch { .. }))
        ));
    }
}
