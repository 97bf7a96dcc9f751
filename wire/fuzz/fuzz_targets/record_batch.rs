//! The record layer on hostile bytes: batch iteration (strict and partial-tail), header
//! parsing, CRC, the produce-path rewrite, decompression and record iteration must never panic
//! or allocate beyond the decompression limit.
#![no_main]

use bytes::Bytes;
use corebus_wire::record::compression::decompress;
use corebus_wire::record::{BatchHeader, Compression, RecordBatches, Records};
use libfuzzer_sys::fuzz_target;

/// Keeps a fuzz input's decompression small: the limit's behaviour is what is tested.
const FUZZ_MAX_DECOMPRESSED_BYTES: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    let _ = BatchHeader::parse(data);
    for batch in RecordBatches::allow_partial_tail(bytes.clone())
        .chain(RecordBatches::new(bytes.clone()))
        .flatten()
    {
        let _ = batch.verify_crc();
        let _ = (batch.header(), batch.next_offset(), batch.timestamp_type());
        let mut dst = vec![0u8; batch.len()];
        batch.copy_rewritten(&mut dst, 42, 7, Some(1_700_000_000_000));
        if let Ok(records) = batch.records_with_limit(FUZZ_MAX_DECOMPRESSED_BYTES) {
            records.for_each(drop);
        }
    }
    // The codecs directly, with the first byte choosing one, so that every decoder sees
    // inputs that did not pass through a valid batch header.
    if let Some((&selector, payload)) = data.split_first() {
        let codec = [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ][usize::from(selector % 4)];
        let _ = decompress(codec, payload, FUZZ_MAX_DECOMPRESSED_BYTES);
    }
    if let Ok(records) = Records::new(bytes, i32::from(data.first().copied().unwrap_or(0))) {
        records.for_each(drop);
    }
});
