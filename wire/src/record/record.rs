//! Records inside a (decompressed) magic-2 batch: lazy iteration with every field a `Bytes`
//! slice of the record data.
//!
//! Record layout (KIP-98): length varint, attributes i8, timestamp delta varlong, offset delta
//! varint, key (varint length, -1 = null), value (same), header count varint, then per header
//! a key (varint length, never null) and a value (varint length, -1 = null).
//!
//! Never: allocates by a count before checking it against the bytes present, reorders or
//! merges headers (duplicate keys are legal and kept in order), or panics on malformed bytes.

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

/// Reads a varint-length-prefixed byte field as a slice of `body`; -1 is null when `nullable`.
fn bytes_field(
    body: &Bytes,
    pos: &mut usize,
    what: &'static str,
    nullable: bool,
) -> Result<Option<Bytes>, RecordError> {
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
    let field = body.slice(*pos..*pos + length);
    *pos += length;
    Ok(Some(field))
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
        let length = varint(&self.data, &mut pos, "record length")?;
        let body_len = usize::try_from(length)
            .ok()
            .filter(|&len| len <= self.data.len() - pos)
            .ok_or(RecordError::InvalidLength {
                what: "record",
                length: i64::from(length),
            })?;
        let body = self.data.slice(pos..pos + body_len);
        let record = parse_body(&body, length)?;
        self.pos = pos + body_len;
        Ok(record)
    }
}

/// Parses one record's fields from exactly its body (the bytes its length covers).
fn parse_body(body: &Bytes, length: i32) -> Result<Record, RecordError> {
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
    let key = bytes_field(body, &mut pos, "record key", true)?;
    let value = bytes_field(body, &mut pos, "record value", true)?;
    let header_count = varint(body, &mut pos, "header count")?;
    let header_count = usize::try_from(header_count)
        .ok()
        .filter(|&count| count <= (body.len() - pos) / MIN_HEADER_BYTES)
        .ok_or(RecordError::InvalidLength {
            what: "header count",
            length: i64::from(header_count),
        })?;
    let mut headers = Vec::with_capacity(header_count);
    for _ in 0..header_count {
        let key = bytes_field(body, &mut pos, "header key", false)?.unwrap_or_default();
        let value = bytes_field(body, &mut pos, "header value", true)?;
        headers.push(RecordHeader { key, value });
    }
    if pos != body.len() {
        return Err(RecordError::RecordLengthMismatch {
            declared: body.len(),
            used: pos,
        });
    }
    Ok(Record {
        length,
        attributes: attributes as i8,
        timestamp_delta,
        offset_delta,
        key,
        value,
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
