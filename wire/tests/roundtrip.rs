//! Round trips through the protocol layer's public functions, for every api key at every
//! supported version, requests and responses: framing, header version choice, body codec.
//!
//! Every API is checked with its default message; the APIs real clients lean on are also
//! checked with a populated message whose fields are set wherever the version carries them.

use bytes::{Bytes, BytesMut};
use corebus_wire::header::{request_header_version, response_header_version};
use corebus_wire::kafka_protocol::messages::*;
use corebus_wire::kafka_protocol::protocol::{Encodable, StrBytes};
use corebus_wire::request::request_api_key;
use corebus_wire::response::response_api_key;
use corebus_wire::{
    ApiSupport, ErrorCode, FrameDecoder, WireError, WireLimits, decode_request, decode_response,
    encode_api_versions_fallback, encode_request, encode_request_into, encode_response,
    supported_versions,
};

/// A fixed topic id (the `uuid` type is only reachable through inference here).
macro_rules! topic_id {
    () => {
        "67e55044-10b1-426f-9247-bb680e5fe0c8"
            .parse()
            .expect("a valid uuid literal")
    };
}

/// `value.when(cond, f)`: apply a builder step only for versions that carry the field.
trait When: Sized {
    fn when(self, cond: bool, f: impl FnOnce(Self) -> Self) -> Self {
        if cond { f(self) } else { self }
    }
}
impl<T> When for T {}

fn s(text: &'static str) -> StrBytes {
    StrBytes::from_static_str(text)
}

fn topic_name(name: &'static str) -> TopicName {
    TopicName(s(name))
}

/// Cuts exactly one frame out of `framed`.
fn single_frame(framed: &[u8]) -> Bytes {
    let mut buf = BytesMut::from(framed);
    let frame = FrameDecoder::default()
        .next_frame(&mut buf)
        .expect("valid frame")
        .expect("complete frame");
    assert!(buf.is_empty(), "one frame expected");
    frame
}

fn check_request(body: RequestKind, version: i16) {
    let api_key = request_api_key(&body).expect("known request");
    let context = format!("{api_key:?} v{version} request");
    let correlation_id = 1000 + i32::from(version);
    let header = RequestHeader::default()
        .with_correlation_id(correlation_id)
        .with_client_id(Some(s("roundtrip-client")));
    let framed =
        encode_request(&header, &body, version).unwrap_or_else(|e| panic!("{context}: {e}"));
    let frame = single_frame(&framed);

    // The frame is the header at the version the API calls for, then the body.
    let header_version = request_header_version(api_key, version);
    let expected_header = header
        .clone()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version);
    let mut expected = BytesMut::new();
    expected_header
        .encode(&mut expected, header_version)
        .unwrap();
    body.encode(&mut expected, version).unwrap();
    assert_eq!(frame, expected, "{context}: bytes");

    let request =
        decode_request(frame, &WireLimits::default()).unwrap_or_else(|e| panic!("{context}: {e}"));
    assert_eq!(request.api_key, api_key, "{context}");
    assert_eq!(request.api_version, version, "{context}");
    assert_eq!(request.correlation_id(), correlation_id, "{context}");
    assert_eq!(request.header, expected_header, "{context}");
    assert_eq!(request.body, body, "{context}: body");
}

fn check_response(body: ResponseKind, version: i16) {
    let api_key = response_api_key(&body).expect("known response");
    let context = format!("{api_key:?} v{version} response");
    let correlation_id = -5 - i32::from(version);
    let mut framed = BytesMut::new();
    encode_response(correlation_id, api_key, version, &body, &mut framed)
        .unwrap_or_else(|e| panic!("{context}: {e}"));
    let frame = single_frame(&framed);

    // Correlation id, an empty tag section for header v1, then the body.
    let header_version = response_header_version(api_key, version);
    if api_key == ApiKey::ApiVersions {
        assert_eq!(
            header_version, 0,
            "{context}: ApiVersions answers with header v0"
        );
    }
    let mut expected = BytesMut::from(&correlation_id.to_be_bytes()[..]);
    if header_version == 1 {
        expected.extend_from_slice(&[0]);
    }
    body.encode(&mut expected, version).unwrap();
    assert_eq!(frame, expected, "{context}: bytes");

    let (header, decoded) =
        decode_response(frame, api_key, version).unwrap_or_else(|e| panic!("{context}: {e}"));
    assert_eq!(header.correlation_id, correlation_id, "{context}");
    assert_eq!(decoded, body, "{context}: body");
}

macro_rules! define_defaults {
    ([] $($name:ident),* $(,)?) => {
        fn default_request(api_key: ApiKey) -> RequestKind {
            match api_key { $(ApiKey::$name => RequestKind::$name(Default::default()),)* }
        }
        fn default_response(api_key: ApiKey) -> ResponseKind {
            match api_key { $(ApiKey::$name => ResponseKind::$name(Default::default()),)* }
        }
    };
}
corebus_wire::for_each_api!(define_defaults);

fn versions(api_key: ApiKey) -> std::ops::RangeInclusive<i16> {
    let range = supported_versions(api_key);
    range.min..=range.max
}

#[test]
fn every_api_round_trips_its_default_messages_at_every_version() {
    let mut checked = 0;
    for api_key in ApiKey::iter() {
        assert!(!supported_versions(api_key).is_empty(), "{api_key:?}");
        for version in versions(api_key) {
            check_request(default_request(api_key), version);
            check_response(default_response(api_key), version);
            checked += 1;
        }
    }
    // Kafka 4.1 has 87 api keys. The version count is pinned so that a kafka-protocol upgrade
    // that moves a range shows up here and gets a look.
    assert_eq!(ApiKey::iter().count(), 87);
    assert_eq!(checked, 287, "api versions checked");
}

type Populated<T> = fn(i16) -> T;

/// Populated messages for the APIs real clients depend on, per version.
fn populated() -> Vec<(ApiKey, Populated<RequestKind>, Populated<ResponseKind>)> {
    vec![
        (
            ApiKey::ApiVersions,
            api_versions::request,
            api_versions::response,
        ),
        (ApiKey::Metadata, metadata::request, metadata::response),
        (ApiKey::Produce, produce::request, produce::response),
        (ApiKey::Fetch, fetch::request, fetch::response),
        (
            ApiKey::ListOffsets,
            list_offsets::request,
            list_offsets::response,
        ),
        (
            ApiKey::FindCoordinator,
            find_coordinator::request,
            find_coordinator::response,
        ),
        (ApiKey::JoinGroup, join_group::request, join_group::response),
        (ApiKey::SyncGroup, sync_group::request, sync_group::response),
        (ApiKey::Heartbeat, heartbeat::request, heartbeat::response),
        (
            ApiKey::OffsetCommit,
            offset_commit::request,
            offset_commit::response,
        ),
        (
            ApiKey::OffsetFetch,
            offset_fetch::request,
            offset_fetch::response,
        ),
        (
            ApiKey::InitProducerId,
            init_producer_id::request,
            init_producer_id::response,
        ),
        (
            ApiKey::CreateTopics,
            create_topics::request,
            create_topics::response,
        ),
    ]
}

#[test]
fn important_apis_round_trip_populated_messages_at_every_version() {
    for (api_key, request, response) in populated() {
        for version in versions(api_key) {
            let body = request(version);
            // ApiVersions v0-v2 requests have no fields to populate.
            let has_fields = !(api_key == ApiKey::ApiVersions && version < 3);
            assert!(
                !has_fields || body != default_request(api_key),
                "{api_key:?} v{version}: populated"
            );
            check_request(body, version);
            let body = response(version);
            assert_ne!(
                body,
                default_response(api_key),
                "{api_key:?} v{version}: populated"
            );
            check_response(body, version);
        }
    }
}

#[test]
fn produce_records_are_slices_of_the_frame() {
    let records = Bytes::from(vec![0xab; 4096]);
    for version in versions(ApiKey::Produce) {
        let framed = encode_request(
            &RequestHeader::default(),
            &produce::request_with(version, records.clone()),
            version,
        )
        .unwrap();
        let frame = single_frame(&framed);
        let frame_range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        let request = decode_request(frame.clone(), &WireLimits::default()).unwrap();
        let RequestKind::Produce(produce) = request.body else {
            panic!("not a produce request")
        };
        let decoded = produce.topic_data[0].partition_data[0]
            .records
            .as_ref()
            .expect("records");
        assert_eq!(decoded, &records);
        let start = decoded.as_ptr() as usize;
        assert!(
            frame_range.contains(&start) && frame_range.contains(&(start + decoded.len() - 1)),
            "v{version}: records were copied out of the frame"
        );
    }
}

#[test]
fn api_versions_v3_without_features_writes_no_tagged_fields() {
    // librdkafka before 2.1 mis-skips non-empty tagged fields: defaults must stay unwritten.
    let support = ApiSupport::all();
    let body = support.api_versions_response();
    let keys = body.api_keys.len();
    assert!(keys < 127, "one-byte compact array length below");
    let mut framed = BytesMut::new();
    encode_response(
        42,
        ApiKey::ApiVersions,
        3,
        &ResponseKind::ApiVersions(body),
        &mut framed,
    )
    .unwrap();
    let frame = single_frame(&framed);
    // header v0 (correlation id) + error code + compact array length + entries (key, min, max,
    // zero tags) + throttle time + zero tags: nothing else.
    let expected_bytes = 4 + 2 + 1 + keys * (2 + 2 + 2 + 1) + 4 + 1;
    assert_eq!(frame.len(), expected_bytes);
    assert_eq!(&frame[..4], &42i32.to_be_bytes());
    assert_eq!(
        frame[frame.len() - 1],
        0,
        "zero tagged fields at the top level"
    );
}

#[test]
fn unsupported_api_versions_gets_the_v0_fallback() {
    // A client newer than us sends ApiVersions v5 with a flexible header.
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&18i16.to_be_bytes());
    frame.extend_from_slice(&5i16.to_be_bytes());
    frame.extend_from_slice(&77i32.to_be_bytes());
    frame.extend_from_slice(&[0, 4, b'k', b'c', b'a', b't', 0, 0, 0]);
    let error = decode_request(frame.freeze(), &WireLimits::default()).unwrap_err();
    assert!(
        matches!(
            error,
            WireError::ApiVersionsFallback {
                api_version: 5,
                correlation_id: 77
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.correlation_id(), Some(77));

    let mut framed = BytesMut::new();
    encode_api_versions_fallback(77, &ApiSupport::all(), &mut framed).unwrap();
    let frame = single_frame(&framed);
    // v0 format: correlation id, error code 35, int32 array length 1, one (key, min, max).
    let mut expected = Vec::new();
    expected.extend_from_slice(&77i32.to_be_bytes());
    expected.extend_from_slice(&35i16.to_be_bytes());
    expected.extend_from_slice(&1i32.to_be_bytes());
    expected.extend_from_slice(&18i16.to_be_bytes());
    expected.extend_from_slice(&0i16.to_be_bytes());
    expected.extend_from_slice(&4i16.to_be_bytes());
    assert_eq!(&frame[..], &expected[..]);

    // A client that asked for v3 still reads it: decode_response falls back to v0.
    let (header, body) = decode_response(frame, ApiKey::ApiVersions, 3).unwrap();
    assert_eq!(header.correlation_id, 77);
    let ResponseKind::ApiVersions(body) = body else {
        panic!("not ApiVersions")
    };
    assert_eq!(
        ErrorCode::from_code(body.error_code),
        ErrorCode::UNSUPPORTED_VERSION
    );
    assert_eq!(body.api_keys.len(), 1);
    assert_eq!(
        (body.api_keys[0].min_version, body.api_keys[0].max_version),
        (0, 4)
    );
}

#[test]
fn the_fallback_follows_a_capped_api_versions_range() {
    let support = ApiSupport::new()
        .with_max_version(ApiKey::ApiVersions, 3)
        .unwrap();
    let mut framed = BytesMut::new();
    encode_api_versions_fallback(1, &support, &mut framed).unwrap();
    let (_, body) = decode_response(single_frame(&framed), ApiKey::ApiVersions, 0).unwrap();
    let ResponseKind::ApiVersions(body) = body else {
        panic!("not ApiVersions")
    };
    assert_eq!(body.api_keys[0].max_version, 3);
}

#[test]
fn encode_refuses_mismatched_or_unsupported_messages() {
    let body = ResponseKind::Heartbeat(HeartbeatResponse::default());
    let mut out = BytesMut::from(&b"earlier frames"[..]);
    assert!(encode_response(1, ApiKey::Metadata, 4, &body, &mut out).is_err());
    assert!(encode_response(1, ApiKey::Heartbeat, 99, &body, &mut out).is_err());
    assert_eq!(&out[..], b"earlier frames", "nothing written on error");
    let request = RequestKind::Produce(ProduceRequest::default());
    assert!(
        encode_request(&RequestHeader::default(), &request, 2).is_err(),
        "below the KIP-896 floor"
    );
    let mut out = BytesMut::from(&b"earlier frames"[..]);
    assert!(encode_request_into(&RequestHeader::default(), &request, 2, &mut out).is_err());
    assert_eq!(&out[..], b"earlier frames", "nothing written on error");
    encode_request_into(&RequestHeader::default(), &request, 3, &mut out).unwrap();
    let appended = single_frame(&out[b"earlier frames".len()..]);
    let decoded = decode_request(appended, &WireLimits::default()).unwrap();
    assert_eq!(decoded.body, request);
}

mod api_versions {
    use super::*;
    use corebus_wire::kafka_protocol::messages::api_versions_response::{
        FinalizedFeatureKey, SupportedFeatureKey,
    };

    pub fn request(v: i16) -> RequestKind {
        // v0-v2 have no fields: the default message is the only one.
        ApiVersionsRequest::default()
            .when(v >= 3, |m| {
                m.with_client_software_name(s("corebus-test"))
                    .with_client_software_version(s("1.0.0"))
            })
            .into()
    }

    pub fn response(v: i16) -> ResponseKind {
        ApiSupport::all()
            .api_versions_response()
            .when(v >= 1, |m| m.with_throttle_time_ms(5))
            .when(v >= 3, |m| {
                m.with_supported_features(vec![
                    SupportedFeatureKey::default()
                        .with_name(s("metadata.version"))
                        .with_min_version(1)
                        .with_max_version(27),
                ])
                .with_finalized_features_epoch(9)
                .with_finalized_features(vec![
                    FinalizedFeatureKey::default()
                        .with_name(s("metadata.version"))
                        .with_min_version_level(27)
                        .with_max_version_level(27),
                ])
            })
            .into()
    }
}

mod metadata {
    use super::*;
    use corebus_wire::kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use corebus_wire::kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };

    pub fn request(v: i16) -> RequestKind {
        let topic = MetadataRequestTopic::default()
            .with_name(Some(topic_name("orders")))
            .when(v >= 10, |t| t.with_topic_id(topic_id!()));
        MetadataRequest::default()
            .with_topics(Some(vec![topic]))
            .when(v >= 4, |m| m.with_allow_auto_topic_creation(false))
            .when((8..=10).contains(&v), |m| {
                m.with_include_cluster_authorized_operations(true)
            })
            .when(v >= 8, |m| m.with_include_topic_authorized_operations(true))
            .into()
    }

    pub fn response(v: i16) -> ResponseKind {
        let broker = MetadataResponseBroker::default()
            .with_node_id(BrokerId(1))
            .with_host(s("broker-1.local"))
            .with_port(9092)
            .when(v >= 1, |b| b.with_rack(Some(s("rack-a"))));
        let partition = MetadataResponsePartition::default()
            .with_partition_index(2)
            .with_leader_id(BrokerId(1))
            .with_replica_nodes(vec![BrokerId(1), BrokerId(2)])
            .with_isr_nodes(vec![BrokerId(1)])
            .when(v >= 7, |p| p.with_leader_epoch(4))
            .when(v >= 5, |p| p.with_offline_replicas(vec![BrokerId(2)]));
        let topic = MetadataResponseTopic::default()
            .with_name(Some(topic_name("orders")))
            .with_partitions(vec![partition])
            .when(v >= 10, |t| t.with_topic_id(topic_id!()))
            .when(v >= 1, |t| t.with_is_internal(false))
            .when(v >= 8, |t| t.with_topic_authorized_operations(0b1111_1000));
        let unknown = MetadataResponseTopic::default()
            .with_name(Some(topic_name("missing")))
            .with_error_code(ErrorCode::from_code(3).code());
        MetadataResponse::default()
            .with_brokers(vec![broker])
            .with_topics(vec![topic, unknown])
            .when(v >= 1, |m| m.with_controller_id(BrokerId(1)))
            .when(v >= 2, |m| m.with_cluster_id(Some(s("corebus-cluster"))))
            .when(v >= 3, |m| m.with_throttle_time_ms(3))
            .when((8..=10).contains(&v), |m| {
                m.with_cluster_authorized_operations(0)
            })
            .into()
    }
}

mod produce {
    use super::*;
    use corebus_wire::kafka_protocol::messages::produce_request::{
        PartitionProduceData, TopicProduceData,
    };
    use corebus_wire::kafka_protocol::messages::produce_response::{
        BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse,
        TopicProduceResponse,
    };

    pub fn request_with(v: i16, records: Bytes) -> RequestKind {
        let partition = PartitionProduceData::default()
            .with_index(3)
            .with_records(Some(records));
        let topic = TopicProduceData::default()
            .with_partition_data(vec![partition])
            .when(v <= 12, |t| t.with_name(topic_name("orders")))
            .when(v >= 13, |t| t.with_topic_id(topic_id!()));
        ProduceRequest::default()
            .with_transactional_id(Some(TransactionalId(s("txn-1"))))
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![topic])
            .into()
    }

    pub fn request(v: i16) -> RequestKind {
        request_with(v, Bytes::from_static(b"opaque record batch bytes"))
    }

    pub fn response(v: i16) -> ResponseKind {
        let partition = PartitionProduceResponse::default()
            .with_index(3)
            .with_base_offset(42)
            .with_log_append_time_ms(1_700_000_000_000)
            .when(v >= 5, |p| p.with_log_start_offset(7))
            .when(v >= 8, |p| {
                p.with_record_errors(vec![
                    BatchIndexAndErrorMessage::default()
                        .with_batch_index(1)
                        .with_batch_index_error_message(Some(s("bad record"))),
                ])
                .with_error_message(Some(s("one record rejected")))
            })
            .when(v >= 10, |p| {
                p.with_current_leader(
                    LeaderIdAndEpoch::default()
                        .with_leader_id(BrokerId(2))
                        .with_leader_epoch(6),
                )
            });
        let topic = TopicProduceResponse::default()
            .with_partition_responses(vec![partition])
            .when(v <= 12, |t| t.with_name(topic_name("orders")))
            .when(v >= 13, |t| t.with_topic_id(topic_id!()));
        ProduceResponse::default()
            .with_responses(vec![topic])
            .with_throttle_time_ms(1)
            .when(v >= 10, |m| {
                m.with_node_endpoints(vec![
                    NodeEndpoint::default()
                        .with_node_id(BrokerId(2))
                        .with_host(s("broker-2.local"))
                        .with_port(9093)
                        .with_rack(Some(s("rack-b"))),
                ])
            })
            .into()
    }
}

mod fetch {
    use super::*;
    use corebus_wire::kafka_protocol::messages::fetch_request::{
        FetchPartition, FetchTopic, ForgottenTopic,
    };
    use corebus_wire::kafka_protocol::messages::fetch_response::{
        AbortedTransaction, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
    };

    pub fn request(v: i16) -> RequestKind {
        let partition = FetchPartition::default()
            .with_partition(0)
            .with_fetch_offset(100)
            .with_partition_max_bytes(1 << 20)
            .when(v >= 9, |p| p.with_current_leader_epoch(5))
            .when(v >= 12, |p| p.with_last_fetched_epoch(4))
            .when(v >= 5, |p| p.with_log_start_offset(0));
        let topic = FetchTopic::default()
            .with_partitions(vec![partition])
            .when(v <= 12, |t| t.with_topic(topic_name("orders")))
            .when(v >= 13, |t| t.with_topic_id(topic_id!()));
        let forgotten = ForgottenTopic::default()
            .with_partitions(vec![1, 2])
            .when(v <= 12, |t| t.with_topic(topic_name("old")))
            .when(v >= 13, |t| t.with_topic_id(topic_id!()));
        FetchRequest::default()
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_max_bytes(50 << 20)
            .with_isolation_level(1)
            .with_topics(vec![topic])
            .when(v >= 7, |m| {
                m.with_session_id(3)
                    .with_session_epoch(4)
                    .with_forgotten_topics_data(vec![forgotten])
            })
            .when(v >= 11, |m| m.with_rack_id(s("rack-a")))
            .into()
    }

    pub fn response(v: i16) -> ResponseKind {
        let partition = PartitionData::default()
            .with_partition_index(0)
            .with_high_watermark(200)
            .with_last_stable_offset(190)
            .with_aborted_transactions(Some(vec![
                AbortedTransaction::default()
                    .with_producer_id(ProducerId(9))
                    .with_first_offset(150),
            ]))
            .with_records(Some(Bytes::from_static(b"opaque batches")))
            .when(v >= 5, |p| p.with_log_start_offset(10))
            .when(v >= 11, |p| p.with_preferred_read_replica(BrokerId(2)))
            .when(v >= 12, |p| {
                p.with_current_leader(
                    LeaderIdAndEpoch::default()
                        .with_leader_id(BrokerId(1))
                        .with_leader_epoch(8),
                )
            });
        let topic = FetchableTopicResponse::default()
            .with_partitions(vec![partition])
            .when(v <= 12, |t| t.with_topic(topic_name("orders")))
            .when(v >= 13, |t| t.with_topic_id(topic_id!()));
        FetchResponse::default()
            .with_throttle_time_ms(2)
            .with_responses(vec![topic])
            .when(v >= 7, |m| m.with_session_id(3))
            .when(v >= 16, |m| {
                m.with_node_endpoints(vec![
                    NodeEndpoint::default()
                        .with_node_id(BrokerId(1))
                        .with_host(s("broker-1.local"))
                        .with_port(9092),
                ])
            })
            .into()
    }
}

mod list_offsets {
    use super::*;
    use corebus_wire::kafka_protocol::messages::list_offsets_request::{
        ListOffsetsPartition, ListOffsetsTopic,
    };
    use corebus_wire::kafka_protocol::messages::list_offsets_response::{
        ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
    };

    pub fn request(v: i16) -> RequestKind {
        let partition = ListOffsetsPartition::default()
            .with_partition_index(1)
            .with_timestamp(-2)
            .when(v >= 4, |p| p.with_current_leader_epoch(3));
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(topic_name("orders"))
                    .with_partitions(vec![partition]),
            ])
            .when(v >= 2, |m| m.with_isolation_level(1))
            .when(v >= 10, |m| m.with_timeout_ms(1_000))
            .into()
    }

    pub fn response(v: i16) -> ResponseKind {
        let partition = ListOffsetsPartitionResponse::default()
            .with_partition_index(1)
            .with_timestamp(1_700_000_000_000)
            .with_offset(42)
            .when(v >= 4, |p| p.with_leader_epoch(3));
        ListOffsetsResponse::default()
            .with_topics(vec![
                ListOffsetsTopicResponse::default()
                    .with_name(topic_name("orders"))
                    .with_partitions(vec![partition]),
            ])
            .when(v >= 2, |m| m.with_throttle_time_ms(4))
            .into()
    }
}

mod find_coordinator {
    use super::*;
    use corebus_wire::kafka_protocol::messages::find_coordinator_response::Coordinator;

    pub fn request(v: i16) -> RequestKind {
        FindCoordinatorRequest::default()
            .when(v <= 3, |m| m.with_key(s("group-a")))
            .when(v >= 1, |m| m.with_key_type(0))
            .when(v >= 4, |m| {
                m.with_coordinator_keys(vec![s("group-a"), s("group-b")])
            })
            .into()
    }

    pub fn response(v: i16) -> ResponseKind {
        FindCoordinatorResponse::default()
            .when(v >= 1, |m| m.with_throttle_time_ms(1))
            .when(v <= 3, |m| {
                m.with_node_id(BrokerId(1))
                    .with_host(s("broker-1.local"))
                    .with_port(9092)
            })
            .when((1..=3).contains(&v), |m| {
                m.with_error_message(Some(s("none")))
            })
            .when(v >= 4, |m| {
                m.with_coordinators(vec![
                    Coordinator::default()
                        .with_key(s("group-a"))
                        .with_node_id(BrokerId(1))
                        .with_host(s("broker-1.local"))
                        .with_port(9092),
                    Coordinator::default()
                        .with_key(s("group-b"))
                        .with_node_id(BrokerId(-1))
                        .with_error_code(ErrorCode::from_code(15).code())
                        .with_error_message(Some(s("coordinator not available"))),
                ])
            })
            .into()
    }
}

mod join_group {
    use super::*;
    use corebus_wire::kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use corebus_wire::kafka_protocol::messages::join_group_response::JoinGroupResponseMember;

    pub fn request(v: i16) -> RequestKind {
        JoinGroupRequest::default()
            .with_group_id(GroupId(s("group-a")))
            .with_session_timeout_ms(45_000)
            .with_member_id(s(""))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(b"\x00\x01subscription")),
            ])
            .when(v >= 1, |m| m.with_rebalance_timeout_ms(300_000))
            .when(v >= 5, |m| m.with_group_instance_id(Some(s("instance-1"))))
            .when(v >= 8, |m| m.with_reason(Some(s("rejoin"))))
            .into()
    }

    pub fn response(v: i16) -> ResponseKind {
        JoinGroupResponse::default()
            .with_generation_id(3)
            .with_protocol_name(Some(s("range")))
            .with_leader(s("member-1"))
            .with_member_id(s("member-1"))
            .with_members(vec![
                JoinGroupResponseMember::default()
                    .with_member_id(s("member-1"))
                    .with_metadata(Bytes::from_static(b"subscription"))
                    .when(v >= 5, |m| m.with_group_instance_id(Some(s("instance-1")))),
            ])
            .when(v >= 2, |m| m.with_throttle_time_ms(1))
            .when(v >= 7, |m| m.with_protocol_type(Some(s("consumer"))))
            .when(v >= 9, |m| m.with_skip_assignment(true))
            .into()
    }
}

mod sync_group {
    use super::*;
    use corebus_wire::kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;

    pub fn request(v: i16) -> RequestKind {
        SyncGroupRequest::default()
            .with_group_id(GroupId(s("group-a")))
            .with_generation_id(3)
            .with_member_id(s("member-1"))
            .with_assignments(vec![
                SyncGroupRequestAssignment::default()
                    .with_member_id(s("member-1"))
                    .with_assignment(Bytes::from_static(b"assignment")),
            ])
            .when(v >= 3, |m| m.with_group_instance_id(Some(s("instance-1"))))
            .when(v >= 5, |m| {
                m.with_protocol_type(Some(s("consumer")))
                    .with_protocol_name(Some(s("range")))
            })
            .into()
    }

    pub fn response(v: i16) -> ResponseKind {
        SyncGroupResponse::default()
            .with_assignment(Bytes::from_static(b"assignment"))
            .when(v >= 1, |m| m.with_throttle_time_ms(1))
            .when(v >= 5, |m| {
                m.with_protocol_type(Some(s("consumer")))
                    .with_protocol_name(Some(s("range")))
            })
            .into()
    }
}

mod heartbeat {
    use super::*;

    pub fn request(v: i16) -> RequestKind {
        HeartbeatRequest::default()
            .with_group_id(GroupId(s("group-a")))
            .with_generation_id(3)
            .with_member_id(s("member-1"))
            .when(v >= 3, |m| m.with_group_instance_id(Some(s("instance-1"))))
            .into()
    }

    pub fn response(v: i16) -> ResponseKind {
        HeartbeatResponse::default()
            .with_error_code(ErrorCode::from_code(27).code())
            .when(v >= 1, |m| m.with_throttle_time_ms(1))
            .into()
    }
}

mod offset_commit {
    use super::*;
    use corebus_wire::kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use corebus_wire::kafka_protocol::messages::offset_commit_response::{
        OffsetCommitResponsePartition, OffsetCommitResponseTopic,
    };

    pub fn request(v: i16) -> RequestKind {
        let partition = OffsetCommitRequestPartition::default()
            .with_partition_index(0)
            .with_committed_offset(1234)
            .with_committed_metadata(Some(s("checkpoint")))
            .when(v >= 6, |p| p.with_committed_leader_epoch(2));
        let topic = OffsetCommitRequestTopic::default()
            .with_partitions(vec![partition])
            .when(v <= 9, |t| t.with_name(topic_name("orders")))
            .when(v >= 10, |t| t.with_topic_id(topic_id!()));
        OffsetCommitRequest::default()
            .with_group_id(GroupId(s("group-a")))
            .with_generation_id_or_member_epoch(3)
            .with_member_id(s("member-1"))
            .with_topics(vec![topic])
            .when(v <= 4, |m| m.with_retention_time_ms(60_000))
            .when(v >= 7, |m| m.with_group_instance_id(Some(s("instance-1"))))
            .into()
    }

    pub fn response(v: i16) -> ResponseKind {
        let topic = OffsetCommitResponseTopic::default()
            .with_partitions(vec![
                OffsetCommitResponsePartition::default()
                    .with_partition_index(0)
                    .with_error_code(ErrorCode::from_code(25).code()),
            ])
            .when(v <= 9, |t| t.with_name(topic_name("orders")))
            .when(v >= 10, |t| t.with_topic_id(topic_id!()));
        OffsetCommitResponse::default()
            .with_topics(vec![topic])
            .when(v >= 3, |m| m.with_throttle_time_ms(1))
            .into()
    }
}

mod offset_fetch {
    use super::*;
    use corebus_wire::kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    };
    use corebus_wire::kafka_protocol::messages::offset_fetch_response::{
        OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
        OffsetFetchResponseTopic, OffsetFetchResponseTopics,
    };

    pub fn request(v: i16) -> RequestKind {
        let group = || {
            let topics = OffsetFetchRequestTopics::default()
                .with_partition_indexes(vec![0, 1])
                .when(v <= 9, |t| t.with_name(topic_name("orders")))
                .when(v >= 10, |t| t.with_topic_id(topic_id!()));
            OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s("group-a")))
                .with_topics(Some(vec![topics]))
                .when(v >= 9, |g| {
                    g.with_member_id(Some(s("member-1"))).with_member_epoch(5)
                })
        };
        OffsetFetchRequest::default()
            .when(v <= 7, |m| {
                m.with_group_id(GroupId(s("group-a")))
                    .with_topics(Some(vec![
                        OffsetFetchRequestTopic::default()
                            .with_name(topic_name("orders"))
                            .with_partition_indexes(vec![0, 1]),
                    ]))
            })
            .when(v >= 8, |m| m.with_groups(vec![group()]))
            .when(v >= 7, |m| m.with_require_stable(true))
            .into()
    }

    pub fn response(v: i16) -> ResponseKind {
        OffsetFetchResponse::default()
            .when(v >= 3, |m| m.with_throttle_time_ms(1))
            .when(v <= 7, |m| {
                let partition = OffsetFetchResponsePartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(1234)
                    .with_metadata(Some(s("checkpoint")))
                    .when(v >= 5, |p| p.with_committed_leader_epoch(2));
                m.with_topics(vec![
                    OffsetFetchResponseTopic::default()
                        .with_name(topic_name("orders"))
                        .with_partitions(vec![partition]),
                ])
            })
            .when((2..=7).contains(&v), |m| m.with_error_code(0))
            .when(v >= 8, |m| {
                let partition = OffsetFetchResponsePartitions::default()
                    .with_partition_index(0)
                    .with_committed_offset(1234)
                    .with_committed_leader_epoch(2)
                    .with_metadata(Some(s("checkpoint")));
                let topics = OffsetFetchResponseTopics::default()
                    .with_partitions(vec![partition])
                    .when(v <= 9, |t| t.with_name(topic_name("orders")))
                    .when(v >= 10, |t| t.with_topic_id(topic_id!()));
                m.with_groups(vec![
                    OffsetFetchResponseGroup::default()
                        .with_group_id(GroupId(s("group-a")))
                        .with_topics(vec![topics]),
                ])
            })
            .into()
    }
}

mod init_producer_id {
    use super::*;

    pub fn request(v: i16) -> RequestKind {
        InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(s("txn-1"))))
            .with_transaction_timeout_ms(60_000)
            .when(v >= 3, |m| {
                m.with_producer_id(ProducerId(77)).with_producer_epoch(2)
            })
            .into()
    }

    pub fn response(v: i16) -> ResponseKind {
        InitProducerIdResponse::default()
            .with_throttle_time_ms(1)
            .with_producer_id(ProducerId(77))
            .with_producer_epoch(3)
            .when(v >= 6, |m| {
                m.with_ongoing_txn_producer_id(ProducerId(76))
                    .with_ongoing_txn_producer_epoch(1)
            })
            .into()
    }
}

mod create_topics {
    use super::*;
    use corebus_wire::kafka_protocol::messages::create_topics_request::{
        CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
    };
    use corebus_wire::kafka_protocol::messages::create_topics_response::{
        CreatableTopicConfigs, CreatableTopicResult,
    };

    pub fn request(_v: i16) -> RequestKind {
        let configured = CreatableTopic::default()
            .with_name(topic_name("orders"))
            .with_num_partitions(3)
            .with_replication_factor(1)
            .with_configs(vec![
                CreatableTopicConfig::default()
                    .with_name(s("cleanup.policy"))
                    .with_value(Some(s("compact"))),
            ]);
        let assigned = CreatableTopic::default()
            .with_name(topic_name("placed"))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_assignments(vec![
                CreatableReplicaAssignment::default()
                    .with_partition_index(0)
                    .with_broker_ids(vec![BrokerId(1)]),
            ]);
        CreateTopicsRequest::default()
            .with_topics(vec![configured, assigned])
            .with_timeout_ms(30_000)
            .with_validate_only(true)
            .into()
    }

    pub fn response(v: i16) -> ResponseKind {
        let result = CreatableTopicResult::default()
            .with_name(topic_name("orders"))
            .with_error_code(ErrorCode::from_code(36).code())
            .with_error_message(Some(s("Topic 'orders' already exists.")))
            .when(v >= 5, |r| {
                r.with_num_partitions(3)
                    .with_replication_factor(1)
                    .with_configs(Some(vec![
                        CreatableTopicConfigs::default()
                            .with_name(s("cleanup.policy"))
                            .with_value(Some(s("compact")))
                            .with_config_source(1),
                    ]))
            })
            .when(v >= 7, |r| r.with_topic_id(topic_id!()));
        CreateTopicsResponse::default()
            .with_throttle_time_ms(1)
            .with_topics(vec![result])
            .into()
    }
}

mod properties {
    use super::*;
    use corebus_wire::header::request_header_version as header_version_of;
    use proptest::prelude::*;

    /// Any request that decodes re-encodes to a frame that decodes to the same request: the
    /// codec never accepts a message it cannot write back.
    fn reencodes_to_itself(
        api_key: ApiKey,
        version: i16,
        tail: &[u8],
    ) -> Result<(), TestCaseError> {
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&(api_key as i16).to_be_bytes());
        frame.extend_from_slice(&version.to_be_bytes());
        frame.extend_from_slice(&7i32.to_be_bytes());
        // A null client id, and no header tags when the header is flexible, then random body.
        frame.extend_from_slice(&(-1i16).to_be_bytes());
        if header_version_of(api_key, version) >= 2 {
            frame.extend_from_slice(&[0]);
        }
        frame.extend_from_slice(tail);
        let Ok(request) = decode_request(frame.freeze(), &WireLimits::default()) else {
            return Ok(());
        };
        let framed = encode_request(&request.header, &request.body, version)
            .map_err(|e| TestCaseError::fail(format!("{api_key:?} v{version}: {e}")))?;
        let again = decode_request(single_frame(&framed), &WireLimits::default())
            .map_err(|e| TestCaseError::fail(format!("{api_key:?} v{version}: {e}")))?;
        prop_assert_eq!(again, request);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        #[test]
        fn decoded_requests_reencode_to_themselves(
            api_key in proptest::sample::select(ApiKey::iter().collect::<Vec<_>>()),
            pick in any::<u16>(),
            // Mostly zeros and small values, which read as empty arrays, empty strings and
            // small counts, so that many tails parse; every prefix of the tail is tried.
            tail in proptest::collection::vec(
                prop_oneof![6 => Just(0u8), 2 => 0u8..4, 1 => Just(0xff), 1 => any::<u8>()],
                0..48,
            ),
        ) {
            let range = supported_versions(api_key);
            let version = range.min + (pick % (range.max - range.min + 1) as u16) as i16;
            for cut in 0..=tail.len() {
                reencodes_to_itself(api_key, version, &tail[..cut])?;
            }
        }
    }
}
