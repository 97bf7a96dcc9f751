//! Benchmark of the wire crate's hot path, printed as a Markdown section for BENCHMARKS.md.
//!
//!   cargo run --release -p corebus-wire --example wire_bench
//!
//! Measures, for one 1 MiB batch and one 16 KiB batch: decoding a Produce request (frame ->
//! typed request -> record batches with headers parsed, CRC excluded) and encoding a Fetch
//! response body around the batch (gather chunks plus the iovec list a send would use). Both
//! must cost the same at either size: record data is never copied or read. Then the byte
//! rates that do scale with size, each against a memcpy baseline from the same run: CRC32C
//! verification and the produce path's one copy (copy_rewritten with LogAppendTime).
//! Figures are medians of several rounds; the machine is shared, so compare ratios.

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use corebus_wire::fetch::{FetchChunk, encode_fetch_body};
use corebus_wire::kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, PartitionData,
};
use corebus_wire::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use corebus_wire::kafka_protocol::messages::{
    FetchResponse, ProduceRequest, RequestHeader, RequestKind,
};
use corebus_wire::kafka_protocol::protocol::StrBytes;
use corebus_wire::limits::WireLimits;
use corebus_wire::record::{Compression, RecordBatch, RecordBatchBuilder, RecordBatches};
use corebus_wire::request::{decode_request, encode_request};

const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 12;
const SMALL_BATCH_BYTES: usize = 16 << 10;
const LARGE_BATCH_BYTES: usize = 1 << 20;
/// Rounds per measurement; the median is reported.
const ROUNDS: usize = 15;
/// Wall time one round aims for.
const ROUND_NANOS: u128 = 20_000_000;

/// One batch of about `bytes` bytes: 1 KiB records, like a producer's linger batch.
fn batch_of(bytes: usize) -> RecordBatch {
    let mut builder = RecordBatchBuilder::new(Compression::None);
    builder.producer(1, 0, 0);
    let value = vec![b'x'; 1000];
    for i in 0..bytes / 1024 {
        builder.record(1_700_000_000_000 + i as i64, Some(b"key"), Some(&value));
    }
    builder.build().expect("bench batch builds")
}

fn produce_frame(batch: &RecordBatch) -> Bytes {
    let partition = PartitionProduceData::default()
        .with_index(0)
        .with_records(Some(batch.as_bytes().clone()));
    let topic = TopicProduceData::default()
        .with_name(StrBytes::from_static_str("bench").into())
        .with_partition_data(vec![partition]);
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![topic]);
    let header = RequestHeader::default()
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("bench")));
    let frame = encode_request(&header, &RequestKind::Produce(request), PRODUCE_VERSION)
        .expect("bench request encodes");
    frame.slice(4..) // decode_request takes the body after the size prefix
}

/// Median nanoseconds per call of `op` over ROUNDS rounds.
fn median_nanos(mut op: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut calibration = 0u64;
    while start.elapsed().as_nanos() < ROUND_NANOS / 10 {
        op();
        calibration += 1;
    }
    let per_round = (calibration * 10).max(1);
    let mut samples: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_round {
                op();
            }
            start.elapsed().as_nanos() as f64 / per_round as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[ROUNDS / 2]
}

fn decode_produce(frame: &Bytes, limits: &WireLimits) -> usize {
    let request = decode_request(frame.clone(), limits).expect("bench request decodes");
    let RequestKind::Produce(produce) = request.body else {
        unreachable!("the bench frame is a Produce request");
    };
    let mut records = 0;
    for topic in produce.topic_data {
        for partition in topic.partition_data {
            for batch in RecordBatches::new(partition.records.unwrap_or_default()) {
                let batch = batch.expect("bench batch parses");
                records += batch.record_count() as usize;
            }
        }
    }
    records
}

fn fetch_response() -> FetchResponse {
    let partition = PartitionData::default()
        .with_partition_index(0)
        .with_high_watermark(1_000_000)
        .with_last_stable_offset(1_000_000)
        .with_log_start_offset(0)
        .with_records(None);
    let topic = FetchableTopicResponse::default()
        .with_topic(StrBytes::from_static_str("bench").into())
        .with_partitions(vec![partition]);
    FetchResponse::default().with_responses(vec![topic])
}

/// Encodes the body and builds the list of buffers a vectored send would take.
fn encode_fetch(template: &FetchResponse, batch: &RecordBatch) -> usize {
    let body = encode_fetch_body(template.clone(), FETCH_VERSION, &[batch.len()])
        .expect("bench response encodes");
    let iovecs: Vec<Bytes> = body
        .chunks
        .into_iter()
        .map(|chunk| match chunk {
            FetchChunk::Encoded(bytes) => bytes,
            FetchChunk::Records { .. } => batch.as_bytes().clone(),
        })
        .collect();
    black_box(&iovecs);
    body.body_len
}

fn gib_per_s(bytes: usize, nanos: f64) -> f64 {
    bytes as f64 / nanos // bytes per ns == GB/s; convert to GiB/s
        * 1e9
        / (1u64 << 30) as f64
}

fn main() {
    let limits = WireLimits::default();
    let small = batch_of(SMALL_BATCH_BYTES);
    let large = batch_of(LARGE_BATCH_BYTES);
    let (small_frame, large_frame) = (produce_frame(&small), produce_frame(&large));
    let template = fetch_response();

    let produce_small = median_nanos(|| {
        black_box(decode_produce(black_box(&small_frame), &limits));
    });
    let produce_large = median_nanos(|| {
        black_box(decode_produce(black_box(&large_frame), &limits));
    });
    let fetch_small = median_nanos(|| {
        black_box(encode_fetch(&template, black_box(&small)));
    });
    let fetch_large = median_nanos(|| {
        black_box(encode_fetch(&template, black_box(&large)));
    });

    let mut dst = vec![0u8; large.len()];
    let memcpy = median_nanos(|| {
        dst.copy_from_slice(black_box(large.as_bytes()));
        black_box(&dst);
    });
    let crc = median_nanos(|| {
        black_box(large.verify_crc()).expect("bench batch CRC is valid");
    });
    let rewrite_create_time = median_nanos(|| {
        large.copy_rewritten(&mut dst, 123_456, 3, None);
        black_box(&dst);
    });
    let rewrite = median_nanos(|| {
        large.copy_rewritten(&mut dst, 123_456, 3, Some(1_800_000_000_000));
        black_box(&dst);
    });

    println!("## wire\n");
    println!(
        "Command: `cargo run --release -p corebus-wire --example wire_bench` (medians of {ROUNDS} rounds; Produce v{PRODUCE_VERSION}, Fetch v{FETCH_VERSION}; \
         one uncompressed batch of 1 KiB records per request).\n"
    );
    println!("| per request, CRC excluded | 16 KiB batch | 1 MiB batch | ratio 1 MiB / 16 KiB |");
    println!("|---|---|---|---|");
    println!(
        "| Produce decode (frame -> request -> batch headers) | {produce_small:.0} ns | \
         {produce_large:.0} ns | {:.2} |",
        produce_large / produce_small
    );
    println!(
        "| Fetch encode (body chunks + iovec list) | {fetch_small:.0} ns | {fetch_large:.0} ns \
         | {:.2} |",
        fetch_large / fetch_small
    );
    println!();
    println!("| byte rate over one 1 MiB batch | GiB/s | vs memcpy |");
    println!("|---|---|---|");
    let base = gib_per_s(large.len(), memcpy);
    println!("| memcpy (baseline, same run) | {base:.2} | 1.00 |");
    let crc_rate = gib_per_s(large.len() - 21, crc);
    println!(
        "| CRC32C verify (crc32c crate, SSE4.2) | {crc_rate:.2} | {:.2} |",
        crc_rate / base
    );
    let create_time_rate = gib_per_s(large.len(), rewrite_create_time);
    println!(
        "| copy_rewritten, CreateTime (the produce path's one copy) | {create_time_rate:.2} | \
         {:.2} |",
        create_time_rate / base
    );
    let rewrite_rate = gib_per_s(large.len(), rewrite);
    println!(
        "| copy_rewritten, LogAppendTime (CRC updated without re-reading) | \
         {rewrite_rate:.2} | {:.2} |",
        rewrite_rate / base
    );
}
