//! Framing a Fetch response around record data it does not copy: wire's gather encoder writes
//! everything but the records; the frame goes out as a list of pieces (`super::pieces`) in
//! which the encoded fields between two record sets are merged into one buffer and every
//! record set is referenced where it lies (a storage chunk of this shard, or the one copy a
//! remote owner made), then written with one vectored send.
//!
//! Never: copies record data.

use bytes::{BufMut, BytesMut};
use corebus_wire::fetch::{FetchChunk, encode_fetch_body};
use corebus_wire::header::response_header_version;
use corebus_wire::kafka_protocol::messages::{ApiKey, ResponseHeader};
use corebus_wire::kafka_protocol::protocol::Encodable;

use super::pieces::Piece;
use crate::handlers::fetch::FetchReply;
use crate::shard::memory_pool::MemoryPermit;

/// A framed Fetch response: the pieces to write in order, and the fetch memory its storage
/// chunks hold until they are written.
pub struct FramedFetch {
    pub pieces: Vec<Piece>,
    pub held: Vec<MemoryPermit>,
}

/// The whole frame (size prefix, response header, body) as pieces to write in order.
pub fn frame_fetch(
    correlation_id: i32,
    version: i16,
    reply: FetchReply,
) -> Result<FramedFetch, String> {
    let FetchReply {
        response,
        mut records,
        held,
    } = reply;
    let lens: Vec<usize> = records
        .iter()
        .map(|set| set.iter().map(Piece::len).sum())
        .collect();
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
    let mut pieces = Vec::with_capacity(2 * records.len() + 2);
    let mut encoded = BytesMut::with_capacity(4 + header.len() + 256);
    encoded.put_i32(size);
    encoded.extend_from_slice(&header);
    for chunk in body.chunks {
        match chunk {
            FetchChunk::Encoded(b) => encoded.extend_from_slice(&b),
            FetchChunk::Records {
                topic,
                partition,
                len,
            } => {
                let set = first_of_topic
                    .get(topic)
                    .and_then(|first| records.get_mut(first + partition))
                    .ok_or("record data missing for a partition")?;
                if set.iter().map(Piece::len).sum::<usize>() != len {
                    return Err("record data length changed".to_string());
                }
                if len == 0 {
                    continue;
                }
                if !encoded.is_empty() {
                    pieces.push(Piece::Shared(encoded.split().freeze()));
                }
                pieces.append(set);
            }
        }
    }
    if !encoded.is_empty() {
        pieces.push(Piece::Shared(encoded.freeze()));
    }
    Ok(FramedFetch { pieces, held })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use corebus_wire::kafka_protocol::messages::fetch_response::{
        FetchableTopicResponse, PartitionData,
    };
    use corebus_wire::kafka_protocol::messages::{FetchResponse, ResponseKind, TopicName};
    use corebus_wire::kafka_protocol::protocol::StrBytes;
    use corebus_wire::response::encode_response;

    #[test]
    fn gathered_frame_equals_the_generated_encoding() {
        for version in [4i16, 11, 12, 13, 16] {
            let big = Bytes::from(vec![7u8; 20_000]);
            let small = Bytes::from_static(b"tiny records");
            let (first, second) = (Bytes::from(vec![1u8; 30]), Bytes::from(vec![2u8; 50]));
            let partition = |i: i32| {
                PartitionData::default()
                    .with_partition_index(i)
                    .with_high_watermark(9)
            };
            let topic = FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![partition(0), partition(1), partition(2), partition(3)]);
            let response = FetchResponse::default().with_responses(vec![topic]);
            // Partition 3's record set comes in two pieces (two chunks of a read).
            let inline_records = [
                big.clone(),
                Bytes::new(),
                small.clone(),
                [first.clone(), second.clone()].concat().into(),
            ];
            let mut inline = response.clone();
            for (p, r) in inline.responses[0]
                .partitions
                .iter_mut()
                .zip(&inline_records)
            {
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
            let records = vec![
                vec![Piece::Shared(big.clone())],
                Vec::new(),
                vec![Piece::Shared(small.clone())],
                vec![Piece::Shared(first.clone()), Piece::Shared(second.clone())],
            ];
            let reply = FetchReply {
                response,
                records,
                held: Vec::new(),
            };
            let framed = frame_fetch(5, version, reply).unwrap();
            let joined: Vec<u8> = framed
                .pieces
                .iter()
                .flat_map(|p| p.as_slice().iter().copied())
                .collect();
            assert_eq!(joined, expected.to_vec(), "v{version}");
            for set in [&big, &small, &first, &second] {
                assert!(
                    framed
                        .pieces
                        .iter()
                        .any(|p| p.as_slice().as_ptr() == set.as_ptr()),
                    "no record set is copied, however small"
                );
            }
            // Encoded fields between record sets are merged: at most one piece before, between
            // and after the record sets (4 pieces of them, the empty set has none).
            assert!(
                framed.pieces.len() <= 4 + 4,
                "v{version}: {}",
                framed.pieces.len()
            );
        }
    }
}
