//! Writes seed inputs for the fuzz targets in wire/fuzz (run by scripts/fuzz when a corpus is
//! empty): valid batches of every codec for `record_batch`, and Produce request frames carrying
//! them for `decode_request`. Random bytes rarely form a valid compressed payload; seeds let
//! the fuzzer start from the deep paths (decompression, record iteration) and mutate there.
//!
//!   cargo run -p corebus-wire --example fuzz_seeds -- <corpus dir>

use std::path::PathBuf;

use corebus_wire::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use corebus_wire::kafka_protocol::messages::{ProduceRequest, RequestHeader, RequestKind};
use corebus_wire::kafka_protocol::protocol::StrBytes;
use corebus_wire::record::{Compression, RecordBatchBuilder};
use corebus_wire::request::encode_request;

const CODECS: [Compression; 5] = Compression::ALL;
/// Produce versions seeded: the KIP-896 floor, the last non-flexible, a flexible one.
const PRODUCE_VERSIONS: [i16; 3] = [3, 8, 9];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: fuzz_seeds <corpus dir>")?,
    );
    let (batches_dir, requests_dir) = (root.join("record_batch"), root.join("decode_request"));
    std::fs::create_dir_all(&batches_dir)?;
    std::fs::create_dir_all(&requests_dir)?;
    for codec in CODECS {
        let mut builder = RecordBatchBuilder::new(codec);
        builder.producer(5, 1, 0);
        for i in 0..4 {
            builder.record_with_headers(
                1_700_000_000_000 + i,
                Some(b"key"),
                Some(b"value value value"),
                &[(b"h", Some(b"1")), (b"h", None)],
            );
        }
        let batch = builder.build()?;
        std::fs::write(
            batches_dir.join(format!("seed-{}", codec.name())),
            batch.as_bytes(),
        )?;
        for version in PRODUCE_VERSIONS {
            let partition = PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch.as_bytes().clone()));
            let topic = TopicProduceData::default()
                .with_name(StrBytes::from_static_str("t").into())
                .with_partition_data(vec![partition]);
            let request = ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(1000)
                .with_topic_data(vec![topic]);
            let header = RequestHeader::default()
                .with_correlation_id(1)
                .with_client_id(Some(StrBytes::from_static_str("seed")));
            let frame = encode_request(&header, &RequestKind::Produce(request), version)?;
            // The target takes a frame body: drop the 4-byte size prefix.
            std::fs::write(
                requests_dir.join(format!("seed-produce-v{version}-{}", codec.name())),
                &frame[4..],
            )?;
        }
    }
    Ok(())
}
