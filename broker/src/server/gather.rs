//! Framing a Fetch response around record data it does not copy: wire's gather encoder writes
//! everything but the records; the frame goes out as a list of `Bytes` in which small pieces
//! (headers, lengths, small record sets) are merged into one buffer and large record sets are
//! sent as they are.
//!
//! Never: copies a record set of `GATHER_COPY_BELOW_BYTES` or more.

use bytes::{BufMut, Bytes, BytesMut};
use corebus_wire::fetch::{FetchChunk, encode_fetch_body};
use corebus_wire::header::response_header_version;
use corebus_wire::kafka_protocol::messages::{ApiKey, ResponseHeader};
use corebus_wire::kafka_protocol::protocol::Encodable;

use crate::handlers::fetch::FetchReply;

/// Pieces smaller than this are copied into a shared buffer (one write instead of many);
/// larger record sets are sent from their own buffers.
pub const GATHER_COPY_BELOW_BYTES: usize = 16 * 1024;

/// The whole frame (size prefix, response header, body) as pieces to write in order.
pub fn frame_fetch(
    correlation_id: i32,
    version: i16,
    reply: FetchReply,
) -> Result<Vec<Bytes>, String> {
    let FetchReply { response, records } = reply;
    let lens: Vec<usize> = records.iter().map(Bytes::len).collect();
    // Index of each topic's first partition in `records` (topic-major).
    let mut first_of_topic = Vec::with_capacity(response.responses.len());
    let mut n = 0;
    for t in &response.responses {
        first_of_topic.push(n);
        n += t.partitions.len();
    }
    let body = encode_fetch_body(response, version, &lens).map_err(|e| e.to_string())?;
    let mut header = BytesMut::with_capacity(16);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut header, response_header_version(ApiKey::Fetch, version))
        .map_err(|e| format!("{e:#}"))?;
    let size = i32::try_from(header.len() + body.body_len)
        .map_err(|_| "Fetch response too large".to_string())?;
    let mut out = Vec::new();
    let mut small = BytesMut::with_capacity(4 + header.len() + 256);
    small.put_i32(size);
    small.extend_from_slice(&header);
    for chunk in body.chunks {
        let piece = match chunk {
            FetchChunk::Encoded(b) => b,
            FetchChunk::Records {
                topic,
                partition,
                len,
            } => {
                let r = first_of_topic
                    .get(topic)
                    .and_then(|first| records.get(first + partition))
                    .ok_or("record data missing for a partition")?;
                if r.len() != len {
                    return Err("record data length changed".to_string());
                }
                r.clone()
            }
        };
        if piece.len() < GATHER_COPY_BELOW_BYTES {
            small.extend_from_slice(&piece);
        } else {
            if !small.is_empty() {
                out.push(small.split().freeze());
            }
            out.push(piece);
        }
    }
    if !small.is_empty() {
        out.push(small.freeze());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use corebus_wire::kafka_protocol::messages::fetch_response::{
        FetchableTopicResponse, PartitionData,
    };
    use corebus_wire::kafka_protocol::messages::{FetchResponse, ResponseKind, TopicName};
    use corebus_wire::kafka_protocol::protocol::StrBytes;
    use corebus_wire::response::encode_response;

    #[test]
    fn gathered_frame_equals_the_generated_encoding() {
        for version in [4i16, 11, 12, 13, 16] {
            let big = Bytes::from(vec![7u8; GATHER_COPY_BELOW_BYTES + 5]);
            let small = Bytes::from_static(b"tiny records");
            let partition = |i: i32| {
                PartitionData::default()
                    .with_partition_index(i)
                    .with_high_watermark(9)
            };
            let topic = FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![partition(0), partition(1), partition(2)]);
            let response = FetchResponse::default().with_responses(vec![topic]);
            let records = vec![big.clone(), Bytes::new(), small.clone()];
            let mut inline = response.clone();
            for (p, r) in inline.responses[0].partitions.iter_mut().zip(&records) {
                p.records = Some(r.clone());
            }
            let mut expected = BytesMut::new();
            encode_response(
                5,
                ApiKey::Fetch,
                version,
                &ResponseKind::Fetch(inline),
                &mut expected,
            )
            .unwrap();
            let pieces = frame_fetch(5, version, FetchReply { response, records }).unwrap();
            let joined: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
            assert_eq!(joined, expected.to_vec(), "v{version}");
            assert!(
                pieces.iter().any(|p| p.as_ptr() == big.as_ptr()),
                "the large set is not copied"
            );
        }
    }
}
