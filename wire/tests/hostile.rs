//! Hostile input against the protocol layer: every malformed frame gives a typed error, never a
//! panic, an abort, or an allocation sized by an untrusted count.
//!
//! Hand-made cases for each kind of damage, then randomized properties (proptest) over random
//! bytes, random bytes behind a valid prefix, mutated valid frames and arbitrary read splits.

use bytes::{BufMut, Bytes, BytesMut};
use corebus_wire::kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use corebus_wire::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use corebus_wire::kafka_protocol::messages::*;
use corebus_wire::kafka_protocol::protocol::StrBytes;
use corebus_wire::{
    FrameDecoder, WireError, WireLimits, decode_request, decode_response, encode_request,
    limits::MAX_NON_PRODUCE_REQUEST_BYTES, supported_versions,
};
use proptest::prelude::*;

const CORRELATION_ID: i32 = 0x0102_0304;

fn limits() -> WireLimits {
    WireLimits::default()
}

/// The fixed request prefix: api key, api version, correlation id.
fn prefix(api_key: i16, api_version: i16) -> BytesMut {
    let mut frame = BytesMut::new();
    frame.put_i16(api_key);
    frame.put_i16(api_version);
    frame.put_i32(CORRELATION_ID);
    frame
}

/// A request frame body (size prefix removed) as a client would send it.
fn request_frame(body: RequestKind, api_version: i16) -> Bytes {
    let header = RequestHeader::default()
        .with_correlation_id(CORRELATION_ID)
        .with_client_id(Some(StrBytes::from_static_str("hostile")));
    let framed = encode_request(&header, &body, api_version).expect("encodable");
    framed.slice(4..)
}

fn metadata_request() -> RequestKind {
    MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("orders")))),
        ]))
        .into()
}

fn produce_request() -> RequestKind {
    let partition = PartitionProduceData::default()
        .with_index(0)
        .with_records(Some(Bytes::from_static(&[7; 64])));
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("orders")))
                .with_partition_data(vec![partition]),
        ])
        .into()
}

/// Valid frames of a few shapes: non-flexible and flexible, with strings, arrays and bytes.
fn sample_frames() -> Vec<Bytes> {
    vec![
        request_frame(metadata_request(), 4),
        request_frame(metadata_request(), 12),
        request_frame(produce_request(), 7),
        request_frame(produce_request(), 11),
        request_frame(ApiVersionsRequest::default().into(), 3),
    ]
}

fn error_of(frame: Bytes) -> WireError {
    match decode_request(frame, &limits()) {
        Ok(request) => panic!("decoded a malformed frame: {request:?}"),
        Err(error) => error,
    }
}

#[test]
fn every_truncation_of_every_default_request_is_an_error() {
    for api_key in ApiKey::iter() {
        let range = supported_versions(api_key);
        for version in range.min..=range.max {
            let frame = request_frame(default_request(api_key), version);
            for cut in 0..frame.len() {
                let error = error_of(frame.slice(..cut));
                if cut >= 8 {
                    assert_eq!(
                        error.correlation_id(),
                        Some(CORRELATION_ID),
                        "{api_key:?} v{version} cut {cut}"
                    );
                } else {
                    assert!(
                        matches!(error, WireError::TruncatedHeader { .. }),
                        "{error:?}"
                    );
                }
            }
        }
    }
}

macro_rules! define_default_request {
    ([] $($name:ident),* $(,)?) => {
        fn default_request(api_key: ApiKey) -> RequestKind {
            match api_key { $(ApiKey::$name => RequestKind::$name(Default::default()),)* }
        }
    };
}
corebus_wire::for_each_api!(define_default_request);

#[test]
fn every_truncation_of_populated_requests_is_an_error() {
    for frame in sample_frames() {
        for cut in 0..frame.len() {
            let error = error_of(frame.slice(..cut));
            assert!(
                cut < 8 || error.correlation_id() == Some(CORRELATION_ID),
                "{error:?}"
            );
        }
    }
}

#[test]
fn trailing_bytes_are_refused() {
    for frame in sample_frames() {
        let mut longer = BytesMut::from(&frame[..]);
        longer.put_u8(0);
        let error = error_of(longer.freeze());
        let fallback = matches!(error, WireError::ApiVersionsFallback { .. });
        assert!(
            matches!(
                error,
                WireError::TrailingBytes {
                    trailing_bytes: 1,
                    ..
                }
            ) || fallback,
            "{error:?}"
        );
    }
}

#[test]
fn unknown_api_keys_and_versions_keep_the_correlation_id() {
    for api_key in [-1, 88, 89, 93, 1000, i16::MAX, i16::MIN] {
        let error = error_of(prefix(api_key, 0).freeze());
        assert!(
            matches!(error, WireError::UnknownApiKey { .. }),
            "{error:?}"
        );
        assert_eq!(error.correlation_id(), Some(CORRELATION_ID));
    }
    // Produce below the KIP-896 floor, above the maximum, negative.
    for version in [0, 2, 14, -1, i16::MAX] {
        let error = error_of(prefix(0, version).freeze());
        assert!(
            matches!(
                error,
                WireError::UnsupportedVersion {
                    api_key: ApiKey::Produce,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(error.correlation_id(), Some(CORRELATION_ID));
    }
}

#[test]
fn an_unreadable_api_versions_request_asks_for_the_fallback() {
    // Unsupported version, then a supported version whose body is cut short.
    let error = error_of(prefix(18, 99).freeze());
    assert!(
        matches!(
            error,
            WireError::ApiVersionsFallback {
                api_version: 99,
                ..
            }
        ),
        "{error:?}"
    );
    let mut cut = prefix(18, 3);
    cut.put_i16(5); // a client id of five bytes, then nothing
    let error = error_of(cut.freeze());
    assert!(matches!(
        error,
        WireError::ApiVersionsFallback {
            api_version: 3,
            correlation_id: CORRELATION_ID
        }
    ));
}

#[test]
fn string_lengths_past_the_frame_are_errors() {
    // Client id claims 0x7fff bytes; three follow.
    let mut frame = prefix(3, 4);
    frame.put_i16(0x7fff);
    frame.put_slice(b"abc");
    assert!(matches!(
        error_of(frame.freeze()),
        WireError::MalformedHeader { .. }
    ));
    // A topic name claims 1000 bytes inside a Metadata v4 body.
    let mut frame = prefix(3, 4);
    frame.put_i16(-1); // null client id
    frame.put_i32(1); // one topic
    frame.put_i16(1000);
    frame.put_slice(b"short");
    assert!(matches!(
        error_of(frame.freeze()),
        WireError::MalformedBody { .. }
    ));
}

#[test]
fn huge_and_negative_array_counts_are_errors_not_allocations() {
    // Metadata v4: a 4-byte topics count of 0x7fffffff. Unpatched, kafka-protocol reserves
    // 0x7fffffff elements up front and aborts the process.
    for count in [i32::MAX, 0x0100_0000, -2, i32::MIN] {
        let mut frame = prefix(3, 4);
        frame.put_i16(-1);
        frame.put_i32(count);
        frame.put_slice(&[0; 16]);
        let error = error_of(frame.freeze());
        assert!(
            matches!(
                error,
                WireError::MalformedBody {
                    api_key: ApiKey::Metadata,
                    ..
                }
            ),
            "{count}: {error:?}"
        );
    }
    // Metadata v12 (flexible): a compact-array count of u32::MAX as an unsigned varint.
    let mut frame = prefix(3, 12);
    frame.put_i16(-1); // header v2 client id is still a non-compact nullable string
    frame.put_u8(0); // no header tagged fields
    frame.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    frame.put_slice(&[0; 16]);
    assert!(matches!(
        error_of(frame.freeze()),
        WireError::MalformedBody { .. }
    ));
    // Produce v7: a records byte length of 0x7fffffff.
    let mut frame = prefix(0, 7);
    frame.put_i16(-1);
    frame.put_i16(-1); // null transactional id
    frame.put_i16(-1);
    frame.put_i32(1000);
    frame.put_i32(1); // one topic
    frame.put_i16(1);
    frame.put_u8(b't');
    frame.put_i32(1); // one partition
    frame.put_i32(0);
    frame.put_i32(i32::MAX);
    frame.put_slice(&[0; 8]);
    assert!(matches!(
        error_of(frame.freeze()),
        WireError::MalformedBody {
            api_key: ApiKey::Produce,
            ..
        }
    ));
}

#[test]
fn varint_overflow_is_an_error() {
    // Metadata v12: header tagged-field count encoded in six bytes (more than 32 bits).
    let mut frame = prefix(3, 12);
    frame.put_i16(-1);
    frame.put_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    assert!(matches!(
        error_of(frame.freeze()),
        WireError::MalformedHeader { .. }
    ));
    // The same overflow as the topics count in the body.
    let mut frame = prefix(3, 12);
    frame.put_i16(-1);
    frame.put_u8(0);
    frame.put_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
    assert!(matches!(
        error_of(frame.freeze()),
        WireError::MalformedBody { .. }
    ));
}

#[test]
fn frames_over_the_limit_are_refused_by_decode_request_too() {
    let small = WireLimits {
        max_frame_bytes: 16,
    };
    let frame = request_frame(metadata_request(), 4);
    assert!(frame.len() > 16);
    assert!(matches!(
        decode_request(frame, &small),
        Err(WireError::FrameTooLarge { .. })
    ));
}

#[test]
fn only_produce_may_use_the_whole_frame_limit() {
    let big = MAX_NON_PRODUCE_REQUEST_BYTES + 1;
    // A Metadata request of null topic names: two input bytes per 72-byte decoded struct.
    let mut frame = prefix(3, 4);
    frame.put_i16(-1);
    frame.put_i32(i32::try_from(big / 2).unwrap());
    frame.put_bytes(0xff, big - frame.len());
    let error = decode_request(frame.freeze(), &limits()).unwrap_err();
    assert!(
        matches!(
            error,
            WireError::RequestTooLarge {
                api_key: ApiKey::Metadata,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.correlation_id(), Some(CORRELATION_ID));
    // A Produce request of the same size decodes: its records stay slices of the frame.
    let partition = PartitionProduceData::default()
        .with_index(0)
        .with_records(Some(Bytes::from(vec![1; big])));
    let produce: RequestKind = ProduceRequest::default()
        .with_topic_data(vec![
            TopicProduceData::default().with_partition_data(vec![partition]),
        ])
        .into();
    assert!(decode_request(request_frame(produce, 9), &limits()).is_ok());
}

#[test]
fn arrays_beyond_the_decode_budget_are_errors() {
    // Produce v9: 3-byte empty topic entries (empty name, empty partitions, no tags) decode
    // into 96-byte structs. A million of them (3 MiB) would need 96 MB; the budget for a
    // 3 MiB frame is 32 MiB + 2 x 3 MiB. Unbudgeted, this decodes.
    let entries = 1 << 20;
    let mut frame = prefix(0, 9);
    frame.put_i16(-1); // client id
    frame.put_u8(0); // header tags
    frame.put_u8(0); // null transactional id
    frame.put_i16(-1);
    frame.put_i32(1000);
    put_unsigned_varint(&mut frame, u32::try_from(entries + 1).unwrap());
    for _ in 0..entries {
        frame.put_slice(&[1, 1, 0]);
    }
    frame.put_u8(0);
    let error = error_of(frame.freeze());
    let WireError::MalformedBody { reason, .. } = &error else {
        panic!("{error:?}")
    };
    assert!(reason.contains("decode budget"), "{reason}");
    // A real Produce request of the same size is far inside the budget.
    let records = PartitionProduceData::default()
        .with_index(0)
        .with_records(Some(Bytes::from(vec![1; 4 << 20])));
    let produce: RequestKind = ProduceRequest::default()
        .with_topic_data(vec![
            TopicProduceData::default().with_partition_data(vec![records]),
        ])
        .into();
    assert!(decode_request(request_frame(produce, 9), &limits()).is_ok());
}

#[test]
fn unknown_tagged_fields_beyond_the_decode_budget_are_errors() {
    // Produce v9 with a million distinct unknown top-level tags (2-4 bytes each, about 80 in a
    // map once decoded): 80 MB against a budget of 32 MiB + 2 x 3.9 MiB.
    let tags = 1u32 << 20;
    let mut frame = prefix(0, 9);
    frame.put_i16(-1); // client id
    frame.put_u8(0); // header tags
    frame.put_u8(0); // null transactional id
    frame.put_i16(-1);
    frame.put_i32(1000);
    frame.put_u8(1); // no topics
    put_unsigned_varint(&mut frame, tags);
    for tag in 0..tags {
        put_unsigned_varint(&mut frame, tag);
        frame.put_u8(0); // empty value
    }
    let error = error_of(frame.freeze());
    let WireError::MalformedBody { reason, .. } = &error else {
        panic!("{error:?}")
    };
    assert!(reason.contains("decode budget"), "{reason}");
}

fn put_unsigned_varint(frame: &mut BytesMut, mut value: u32) {
    while value >= 0x80 {
        frame.put_u8((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    frame.put_u8(value as u8);
}

#[test]
fn truncated_responses_are_errors() {
    let body = ResponseKind::Metadata(MetadataResponse::default());
    let mut framed = BytesMut::new();
    corebus_wire::encode_response(9, ApiKey::Metadata, 12, &body, &mut framed).unwrap();
    let frame = framed.freeze().slice(4..);
    for cut in 0..frame.len() {
        assert!(
            decode_response(frame.slice(..cut), ApiKey::Metadata, 12).is_err(),
            "cut {cut}"
        );
    }
}

/// A strategy for frames that pass the prefix checks and reach a body decoder.
fn frame_with_valid_prefix() -> impl Strategy<Value = Bytes> {
    let keys: Vec<ApiKey> = ApiKey::iter().collect();
    (
        proptest::sample::select(keys),
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..96),
    )
        .prop_map(|(api_key, pick, tail)| {
            let range = supported_versions(api_key);
            let span = (range.max - range.min + 1) as u16;
            let version = range.min + (pick % span) as i16;
            let mut frame = prefix(api_key as i16, version);
            frame.put_slice(&tail);
            frame.freeze()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = decode_request(Bytes::from(bytes.clone()), &limits());
        for api_key in [ApiKey::ApiVersions, ApiKey::Metadata, ApiKey::Fetch] {
            let _ = decode_response(Bytes::from(bytes.clone()), api_key, supported_versions(api_key).max);
        }
    }

    #[test]
    fn random_bodies_behind_a_valid_prefix_never_panic(frame in frame_with_valid_prefix()) {
        if let Err(error) = decode_request(frame, &limits()) {
            prop_assert_eq!(error.correlation_id(), Some(CORRELATION_ID));
        }
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        which in 0usize..5,
        flips in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..6),
    ) {
        let frame = &sample_frames()[which];
        let mut mutated = BytesMut::from(&frame[..]);
        for (position, value) in flips {
            let index = usize::from(position) % mutated.len();
            mutated[index] = value;
        }
        let _ = decode_request(mutated.freeze(), &limits());
    }

    #[test]
    fn frame_decoder_is_split_independent(
        sizes in proptest::collection::vec(0usize..300, 1..8),
        reads in proptest::collection::vec(1usize..64, 1..64),
    ) {
        // Several frames read in arbitrary pieces come out the same as read whole.
        let mut wire = BytesMut::new();
        for (i, size) in sizes.iter().enumerate() {
            corebus_wire::write_frame(&mut wire, |out| {
                out.put_bytes(i as u8, *size);
                Ok(())
            }).unwrap();
        }
        let decoder = FrameDecoder::default();
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        let mut offset = 0;
        let mut read = reads.iter().cycle();
        while offset < wire.len() {
            let step = (*read.next().unwrap()).min(wire.len() - offset);
            buf.extend_from_slice(&wire[offset..offset + step]);
            offset += step;
            while let Some(frame) = decoder.next_frame(&mut buf).unwrap() {
                frames.push(frame);
            }
            prop_assert!(offset == wire.len() || decoder.bytes_needed(&buf).unwrap() > 0);
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(frames.len(), sizes.len());
        for (i, (frame, size)) in frames.iter().zip(&sizes).enumerate() {
            prop_assert_eq!(frame.len(), *size);
            prop_assert!(frame.iter().all(|&b| b == i as u8));
        }
    }

    #[test]
    fn random_size_prefixes_never_panic(prefix_bytes in any::<[u8; 4]>(), max_frame_bytes in 0usize..1 << 20) {
        let decoder = FrameDecoder::new(WireLimits { max_frame_bytes });
        let mut buf = BytesMut::from(&prefix_bytes[..]);
        let size = i32::from_be_bytes(prefix_bytes);
        match decoder.next_frame(&mut buf) {
            Ok(Some(frame)) => prop_assert!(size == 0 && frame.is_empty()),
            Ok(None) => prop_assert!(size > 0 && size as usize <= max_frame_bytes),
            Err(_) => prop_assert!(size < 0 || size as usize > max_frame_bytes),
        }
    }
}
