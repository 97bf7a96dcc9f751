//! `corebus-bench sink`: a Kafka responder that acknowledges and stores nothing, so the
//! harness can state its own ceiling (its rate against a broker that costs nothing).
//!
//! Owns: answering ApiVersions, Metadata (itself as the only broker, every topic it was told
//! of), CreateTopics (remembered), Produce (success, offsets counted per partition from the
//! batches' record counts, nothing kept; no answer for acks=0) and Fetch (always empty, after
//! the request's max wait, capped at [`MAX_FETCH_WAIT_MS`]).
//! Never: stores or checks record data (it measures the client, not a log); answers an API it
//! does not advertise (those requests close the connection, as a real broker's would fail).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use anyhow::Context;
use bytes::BytesMut;
use corebus_wire::kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use corebus_wire::kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, PartitionData,
};
use corebus_wire::kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use corebus_wire::kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, TopicProduceResponse,
};
use corebus_wire::kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsResponse, FetchResponse, MetadataResponse, ProduceResponse,
    RequestKind, ResponseKind,
};
use corebus_wire::kafka_protocol::protocol::StrBytes;
use corebus_wire::record::RecordBatches;
use corebus_wire::{
    ApiSupport, FrameDecoder, WireError, WireLimits, decode_request, encode_api_versions_fallback,
    encode_response,
};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};

/// Longest a Fetch is held before its empty answer, in milliseconds.
pub const MAX_FETCH_WAIT_MS: u64 = 500;
/// Partitions given to a topic first seen in a Metadata request that allows auto-creation.
const AUTO_CREATE_PARTITIONS: usize = 1;
/// Kafka's UNKNOWN_TOPIC_OR_PARTITION.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// Pause after a failed accept, in milliseconds.
const ACCEPT_ERROR_BACKOFF_MS: u64 = 10;
/// Bytes the sink asks the socket for per read.
const READ_CHUNK_BYTES: usize = 256 * 1024;

/// Per topic, the next offset of each partition.
type Topics = Rc<RefCell<HashMap<String, Vec<i64>>>>;

struct Sink {
    host: String,
    port: i32,
    topics: Topics,
    support: ApiSupport,
}

/// Serves on `listen` until killed, on the first CPU the process may use.
pub fn serve(listen: &str) -> anyhow::Result<()> {
    let address: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen {listen}: expected IP:PORT"))?;
    let cpu = crate::cpus::allowed_cpus().context("sched_getaffinity")?[0];
    let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name("bench-sink")
        .spawn(move || accept_loop(address))
        .map_err(|e| anyhow::anyhow!("starting the sink executor: {e}"))?;
    handle
        .join()
        .map_err(|e| anyhow::anyhow!("sink executor: {e}"))?
        .map_err(anyhow::Error::msg)
}

async fn accept_loop(address: std::net::SocketAddr) -> Result<(), String> {
    let listener = TcpListener::bind(address).map_err(|e| format!("bind {address}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    println!("corebus-bench sink listening on {bound}");
    let sink = Rc::new(Sink {
        host: bound.ip().to_string(),
        port: i32::from(bound.port()),
        topics: Rc::new(RefCell::new(HashMap::new())),
        support: ApiSupport::new()
            .with(ApiKey::ApiVersions)
            .with(ApiKey::Metadata)
            .with(ApiKey::CreateTopics)
            .with(ApiKey::Produce)
            .with(ApiKey::Fetch),
    });
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(serve_connection(sink.clone(), stream)).detach();
            }
            Err(e) => {
                // Out of descriptors and the like: say so and keep serving the others.
                eprintln!("sink: accept: {e}");
                glommio::timer::sleep(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)).await;
            }
        }
    }
}

async fn serve_connection(sink: Rc<Sink>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let limits = WireLimits::default();
    let decoder = FrameDecoder::new(limits);
    let mut input = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut output = BytesMut::new();
    loop {
        loop {
            match decoder.next_frame(&mut input) {
                Ok(Some(frame)) => {
                    if let Err(e) = sink.answer(frame, &limits, &mut output).await {
                        eprintln!("sink: closing a connection: {e}");
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!("sink: closing a connection: {e}");
                    return;
                }
            }
        }
        if !output.is_empty() {
            if stream.write_all(&output).await.is_err() {
                return;
            }
            output.clear();
        }
        let filled = input.len();
        let room = (input.capacity() - filled).max(READ_CHUNK_BYTES);
        input.resize(filled + room, 0);
        match stream.read(&mut input[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => input.truncate(filled + n),
        }
    }
}

impl Sink {
    async fn answer(
        &self,
        frame: bytes::Bytes,
        limits: &WireLimits,
        out: &mut BytesMut,
    ) -> Result<(), WireError> {
        let request = match decode_request(frame, limits) {
            Ok(r) => r,
            Err(WireError::ApiVersionsFallback { correlation_id, .. }) => {
                return encode_api_versions_fallback(correlation_id, &self.support, out);
            }
            Err(e) => return Err(e),
        };
        let (key, version) = (request.api_key, request.api_version);
        if !self.support.supports(key, version) {
            return Err(WireError::UnsupportedVersion {
                api_key: key,
                api_version: version,
                correlation_id: request.correlation_id(),
            });
        }
        let body = match request.body {
            RequestKind::ApiVersions(_) => {
                ResponseKind::ApiVersions(self.support.api_versions_response())
            }
            RequestKind::Metadata(r) => {
                let names = r.topics.map(|ts| {
                    ts.into_iter()
                        .filter_map(|t| t.name)
                        .map(|n| n.0.to_string())
                });
                ResponseKind::Metadata(self.metadata(names, r.allow_auto_topic_creation))
            }
            RequestKind::CreateTopics(r) => {
                let mut results = Vec::new();
                for t in r.topics {
                    let partitions = usize::try_from(t.num_partitions).unwrap_or(1).max(1);
                    self.topics
                        .borrow_mut()
                        .entry(t.name.0.to_string())
                        .or_insert_with(|| vec![0; partitions]);
                    results.push(
                        CreatableTopicResult::default()
                            .with_name(t.name)
                            .with_num_partitions(partitions as i32)
                            .with_replication_factor(1),
                    );
                }
                ResponseKind::CreateTopics(CreateTopicsResponse::default().with_topics(results))
            }
            RequestKind::Produce(r) => {
                let response = self.produce(&r);
                if r.acks == 0 {
                    return Ok(());
                }
                ResponseKind::Produce(response)
            }
            RequestKind::Fetch(r) => {
                let wait = u64::try_from(r.max_wait_ms)
                    .unwrap_or(0)
                    .min(MAX_FETCH_WAIT_MS);
                glommio::timer::sleep(Duration::from_millis(wait)).await;
                let topics = self.topics.borrow();
                let responses = r
                    .topics
                    .into_iter()
                    .map(|t| {
                        let offsets = topics.get(t.topic.0.as_str());
                        FetchableTopicResponse::default()
                            .with_topic(t.topic.clone())
                            .with_topic_id(t.topic_id)
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        let end = offsets
                                            .and_then(|o| o.get(p.partition as usize))
                                            .copied();
                                        PartitionData::default()
                                            .with_partition_index(p.partition)
                                            .with_error_code(
                                                end.map_or(UNKNOWN_TOPIC_OR_PARTITION, |_| 0),
                                            )
                                            .with_high_watermark(end.unwrap_or(-1))
                                            .with_last_stable_offset(end.unwrap_or(-1))
                                            .with_log_start_offset(0)
                                            .with_records(Some(bytes::Bytes::new()))
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                ResponseKind::Fetch(FetchResponse::default().with_responses(responses))
            }
            _ => {
                return Err(WireError::UnsupportedVersion {
                    api_key: key,
                    api_version: version,
                    correlation_id: request.header.correlation_id,
                });
            }
        };
        encode_response(request.header.correlation_id, key, version, &body, out)
    }

    fn metadata(
        &self,
        names: Option<impl Iterator<Item = String>>,
        auto_create: bool,
    ) -> MetadataResponse {
        let mut topics = self.topics.borrow_mut();
        let wanted: Vec<String> = match names {
            Some(names) => names.collect(),
            None => topics.keys().cloned().collect(),
        };
        let answers = wanted
            .into_iter()
            .map(|name| {
                if auto_create {
                    topics
                        .entry(name.clone())
                        .or_insert_with(|| vec![0; AUTO_CREATE_PARTITIONS]);
                }
                let topic = MetadataResponseTopic::default()
                    .with_name(Some(crate::client::cluster::topic_name(&name)));
                match topics.get(&name) {
                    None => topic.with_error_code(UNKNOWN_TOPIC_OR_PARTITION),
                    Some(partitions) => topic.with_partitions(
                        (0..partitions.len() as i32)
                            .map(|p| {
                                MetadataResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_leader_id(BrokerId(0))
                                    .with_leader_epoch(0)
                                    .with_replica_nodes(vec![BrokerId(0)])
                                    .with_isr_nodes(vec![BrokerId(0)])
                            })
                            .collect(),
                    ),
                }
            })
            .collect();
        MetadataResponse::default()
            .with_brokers(vec![
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(0))
                    .with_host(StrBytes::from_string(self.host.clone()))
                    .with_port(self.port),
            ])
            .with_cluster_id(Some(StrBytes::from_static_str("corebus-bench-sink")))
            .with_controller_id(BrokerId(0))
            .with_topics(answers)
    }

    fn produce(
        &self,
        request: &corebus_wire::kafka_protocol::messages::ProduceRequest,
    ) -> ProduceResponse {
        let mut topics = self.topics.borrow_mut();
        let responses = request
            .topic_data
            .iter()
            .map(|t| {
                let mut offsets = topics.get_mut(t.name.0.as_str());
                TopicProduceResponse::default()
                    .with_name(t.name.clone())
                    .with_partition_responses(
                        t.partition_data
                            .iter()
                            .map(|p| {
                                let answer =
                                    PartitionProduceResponse::default().with_index(p.index);
                                let Some(next) = offsets
                                    .as_deref_mut()
                                    .and_then(|o| o.get_mut(p.index as usize))
                                else {
                                    return answer.with_error_code(UNKNOWN_TOPIC_OR_PARTITION);
                                };
                                let records: i64 = p
                                    .records
                                    .clone()
                                    .map(|r| {
                                        RecordBatches::new(r)
                                            .filter_map(Result::ok)
                                            .map(|b| i64::from(b.record_count()))
                                            .sum()
                                    })
                                    .unwrap_or(0);
                                let base = *next;
                                *next += records;
                                answer.with_base_offset(base).with_log_append_time_ms(-1)
                            })
                            .collect(),
                    )
            })
            .collect();
        ProduceResponse::default().with_responses(responses)
    }
}
