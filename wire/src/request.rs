//! Requests: a frame in, a typed request out (server side), and the reverse (client side).
//!
//! Owns: [`decode_request`] (prefix, version check, header, generated body, nothing left over)
//! and [`encode_request`], both on kafka-protocol's generated messages, plus the mapping from a
//! message to its api key.
//! Never: copies record data (a Produce request's record sets are slices of the frame's
//! allocation); panics or allocates by an untrusted count (the vendored decoder checks counts
//! against the bytes present, and array memory against [`decode_budget_bytes`] of the frame);
//! answers anything (the broker does, from the error's variant).

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::types::with_array_budget;

use crate::error::WireError;
use crate::frame::{check_frame_bytes, write_frame};
use crate::header::{decode_request_header, encode_request_header, peek_request_prefix};
use crate::limits::{WireLimits, decode_budget_bytes};
use crate::versions::is_supported_version;

/// Invokes `$callback! { [args] Produce, Fetch, ... }` with the name of every api key, which is
/// also the name of its `RequestKind` and `ResponseKind` variant, after the optional `args`
/// given here. One list, so per-API code (here and in tests) is written once and cannot miss an
/// API.
#[doc(hidden)]
#[macro_export]
macro_rules! for_each_api {
    ($callback:ident $(, $arg:tt)*) => {
        $callback! {
            [$($arg)*]
            Produce, Fetch, ListOffsets, Metadata, OffsetCommit, OffsetFetch, FindCoordinator,
            JoinGroup, Heartbeat, LeaveGroup, SyncGroup, DescribeGroups, ListGroups, SaslHandshake,
            ApiVersions, CreateTopics, DeleteTopics, DeleteRecords, InitProducerId,
            OffsetForLeaderEpoch, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, WriteTxnMarkers,
            TxnOffsetCommit, DescribeAcls, CreateAcls, DeleteAcls, DescribeConfigs, AlterConfigs,
            AlterReplicaLogDirs, DescribeLogDirs, SaslAuthenticate, CreatePartitions,
            CreateDelegationToken, RenewDelegationToken, ExpireDelegationToken,
            DescribeDelegationToken, DeleteGroups, ElectLeaders, IncrementalAlterConfigs,
            AlterPartitionReassignments, ListPartitionReassignments, OffsetDelete,
            DescribeClientQuotas, AlterClientQuotas, DescribeUserScramCredentials,
            AlterUserScramCredentials, Vote, BeginQuorumEpoch, EndQuorumEpoch, DescribeQuorum,
            AlterPartition, UpdateFeatures, Envelope, FetchSnapshot, DescribeCluster,
            DescribeProducers, BrokerRegistration, BrokerHeartbeat, UnregisterBroker,
            DescribeTransactions, ListTransactions, AllocateProducerIds, ConsumerGroupHeartbeat,
            ConsumerGroupDescribe, ControllerRegistration, GetTelemetrySubscriptions,
            PushTelemetry, AssignReplicasToDirs, ListConfigResources, DescribeTopicPartitions,
            ShareGroupHeartbeat, ShareGroupDescribe, ShareFetch, ShareAcknowledge, AddRaftVoter,
            RemoveRaftVoter, UpdateRaftVoter, InitializeShareGroupState, ReadShareGroupState,
            WriteShareGroupState, DeleteShareGroupState, ReadShareGroupStateSummary,
            DescribeShareGroupOffsets, AlterShareGroupOffsets, DeleteShareGroupOffsets,
        }
    };
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The header as sent (correlation id, client id, tagged fields).
    pub header: RequestHeader,
    /// The api key, already checked.
    pub api_key: ApiKey,
    /// The api version, within [`crate::versions::supported_versions`].
    pub api_version: i16,
    /// The body.
    pub body: RequestKind,
}

impl Request {
    /// The correlation id the response must echo.
    pub fn correlation_id(&self) -> i32 {
        self.header.correlation_id
    }
}

/// Defines `pub fn $lookup(body: &$kind) -> Option<ApiKey>`, the api key of a message, `None`
/// for a variant this crate does not know (kafka-protocol's enums are non-exhaustive).
macro_rules! define_api_key_lookup {
    ([$lookup:ident $kind:ident] $($name:ident),* $(,)?) => {
        /// The api key of a message, or `None` for a variant this crate does not know
        /// (kafka-protocol's enum is non-exhaustive).
        pub fn $lookup(body: &$kind) -> Option<ApiKey> {
            match body {
                $($kind::$name(_) => Some(ApiKey::$name),)*
                _ => None,
            }
        }
    };
}
pub(crate) use define_api_key_lookup;

crate::for_each_api!(define_api_key_lookup, request_api_key, RequestKind);

/// Decodes one request frame (the bytes after the size prefix).
///
/// Takes `Bytes` so that byte fields (a Produce request's record sets above all) come out as
/// slices sharing the frame's allocation, never copies. Errors carry the correlation id once
/// the 8-byte prefix was present; an ApiVersions request that cannot be read at its version
/// gives [`WireError::ApiVersionsFallback`], to be answered with
/// [`crate::response::encode_api_versions_fallback`]. A request other than Produce larger than
/// [`crate::limits::MAX_NON_PRODUCE_REQUEST_BYTES`] is refused before its body is decoded
/// ([`WireError::RequestTooLarge`]).
pub fn decode_request(frame: Bytes, limits: &WireLimits) -> Result<Request, WireError> {
    check_frame_bytes(frame.len(), limits)?;
    let prefix = peek_request_prefix(&frame).ok_or(WireError::TruncatedHeader {
        frame_bytes: frame.len(),
    })?;
    let (api_version, correlation_id) = (prefix.api_version, prefix.correlation_id);
    let api_key = ApiKey::try_from(prefix.api_key).map_err(|()| WireError::UnknownApiKey {
        api_key: prefix.api_key,
        correlation_id,
    })?;
    // KIP-511: an ApiVersions request the broker cannot read still gets an answer the client
    // understands, whatever went wrong with it.
    let fallback_or = |error: WireError| match api_key {
        ApiKey::ApiVersions => WireError::ApiVersionsFallback {
            api_version,
            correlation_id,
        },
        _ => error,
    };
    let max_request_bytes = limits.max_request_bytes(api_key);
    if frame.len() > max_request_bytes {
        return Err(WireError::RequestTooLarge {
            api_key,
            frame_bytes: frame.len(),
            max_request_bytes,
            correlation_id,
        });
    }
    if !is_supported_version(api_key, api_version) {
        return Err(fallback_or(WireError::UnsupportedVersion {
            api_key,
            api_version,
            correlation_id,
        }));
    }
    let mut rest = frame;
    let header = decode_request_header(&mut rest, api_key, api_version).map_err(|reason| {
        fallback_or(WireError::MalformedHeader {
            api_key,
            api_version,
            correlation_id,
            reason,
        })
    })?;
    let budget_bytes = decode_budget_bytes(rest.len());
    let decoded = with_array_budget(budget_bytes, || {
        RequestKind::decode(api_key, &mut rest, api_version)
    });
    let body = decoded.map_err(|e| {
        fallback_or(WireError::MalformedBody {
            api_key,
            api_version,
            correlation_id,
            reason: format!("{e:#}"),
        })
    })?;
    // A request must use its frame exactly: leftover bytes mean the client and this side
    // disagree about the message's layout.
    if !rest.is_empty() {
        return Err(fallback_or(WireError::TrailingBytes {
            api_key,
            api_version,
            correlation_id,
            trailing_bytes: rest.len(),
        }));
    }
    Ok(Request {
        header,
        api_key,
        api_version,
        body,
    })
}

/// Encodes a request as one frame, size prefix included (client side: bench-harness, tools).
///
/// The api key and version written in the header come from `body` and `api_version`; the
/// header's own `request_api_key`/`request_api_version` are ignored, so they cannot disagree
/// with the body.
pub fn encode_request(
    header: &RequestHeader,
    body: &RequestKind,
    api_version: i16,
) -> Result<Bytes, WireError> {
    let mut out = BytesMut::new();
    encode_request_into(header, body, api_version, &mut out)?;
    Ok(out.freeze())
}

/// [`encode_request`] appending to a caller's buffer, so a client can reuse one buffer for many
/// requests. On error `out` is unchanged.
pub fn encode_request_into(
    header: &RequestHeader,
    body: &RequestKind,
    api_version: i16,
    out: &mut BytesMut,
) -> Result<(), WireError> {
    let api_key = request_api_key(body).ok_or(WireError::UnknownMessageKind)?;
    let encode_error = |reason: String| WireError::Encode {
        api_key,
        api_version,
        reason,
    };
    if !is_supported_version(api_key, api_version) {
        return Err(encode_error(
            "version outside the supported range".to_owned(),
        ));
    }
    let header = header
        .clone()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(api_version);
    write_frame(out, |out| {
        encode_request_header(&header, api_key, out).map_err(encode_error)?;
        body.encode(out, api_version)
            .map_err(|e| encode_error(format!("{e:#}")))
    })
}

/// One CreateTopics entry: `partitions` partitions (-1: the broker's default),
/// `replication_factor` (-1: the broker's default) and the topic's settings. The workspace's
/// clients (the broker forwarding to its controller, the load generator) build them alike.
pub fn creatable_topic<K: AsRef<str>, V: AsRef<str>>(
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: impl IntoIterator<Item = (K, V)>,
) -> kafka_protocol::messages::create_topics_request::CreatableTopic {
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    use kafka_protocol::protocol::StrBytes;
    CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_string(name.to_owned())))
        .with_num_partitions(partitions)
        .with_replication_factor(replication_factor)
        .with_configs(
            configs
                .into_iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_string(k.as_ref().to_owned()))
                        .with_value(Some(StrBytes::from_string(v.as_ref().to_owned())))
                })
                .collect(),
        )
}
