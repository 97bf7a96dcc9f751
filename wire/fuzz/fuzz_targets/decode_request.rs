//! Request decoding: any frame body must decode or give a `WireError`, never panic or abort;
//! a Produce request's record sets then go through the record layer as the broker reads them.
#![no_main]

use bytes::Bytes;
use corebus_wire::kafka_protocol::messages::RequestKind;
use corebus_wire::limits::WireLimits;
use corebus_wire::record::RecordBatches;
use corebus_wire::request::decode_request;
use libfuzzer_sys::fuzz_target;

/// Keeps a fuzz input's decompression small: the limit's behaviour is what is tested.
const FUZZ_MAX_DECOMPRESSED_BYTES: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = decode_request(Bytes::copy_from_slice(data), &WireLimits::default()) else {
        return;
    };
    if let RequestKind::Produce(produce) = request.body {
        for topic in produce.topic_data {
            for partition in topic.partition_data {
                let Some(records) = partition.records else {
                    continue;
                };
                for batch in RecordBatches::new(records).flatten() {
                    let _ = batch.verify_crc();
                    if let Ok(records) = batch.records_with_limit(FUZZ_MAX_DECOMPRESSED_BYTES) {
                        records.for_each(drop);
                    }
                }
            }
        }
    }
});
