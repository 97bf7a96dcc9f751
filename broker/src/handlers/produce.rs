//! Produce (key 0): checks every batch of a partition before any is appended:
//! - framing and CRC32C (magic 2), else CORRUPT_MESSAGE;
//! - Kafka's client-origin validation (`LogValidator`), else INVALID_RECORD:
//!   `last_offset_delta + 1 == record_count > 0`, no control batch, a sequence with every
//!   producer id, and on every topic every record body parsed (a compressed batch is
//!   decompressed into one scratch buffer; uncompressed records are walked in place) with
//!   offset deltas 0..n, lengths in bounds, no bytes left over, and keys present on compacted
//!   topics. Record-level refusals name the record in `record_errors` (v8+, KIP-467);
//! - size against the topic's `max.message.bytes`, and every record's CreateTime against
//!   `message.timestamp.before/after.max.ms` (INVALID_TIMESTAMP, naming the record).
//!
//! It then routes each partition's batches to its owning shard in one message per shard, all
//! shards at once, appends them there (the batch is copied once, into the storage engine's
//! aligned write buffer) and answers when they are as durable as `acks` asks: acks=1 written,
//! acks=all synced (the storage durability contract; a request's partitions on one shard share
//! one group-commit round) and, on a replicated partition, held by every in-sync replica (its
//! high watermark passed it, within the request's `timeout_ms`, else REQUEST_TIMED_OUT;
//! refused before appending with NOT_ENOUGH_REPLICAS when the in-sync set is smaller than
//! `min.insync.replicas`, as in Kafka), acks=0 no answer at all. The
//! connection's next request may start once the appends are in the logs (`server::order`),
//! so pipelined requests take effect in order while their durability waits overlap.
//!
//! Idempotent producers (ids from InitProducerId): each partition's producer state (epoch and
//! the last 5 batches' sequences) answers a retried batch with its original offset and
//! refuses gaps (OUT_OF_ORDER_SEQUENCE_NUMBER) and old epochs (INVALID_PRODUCER_EPOCH).
//! Transactional batches are refused (INVALID_PRODUCER_ID_MAPPING) until transactions exist.
//!
//! Clients cannot write to `__consumer_offsets` (INVALID_TOPIC_EXCEPTION, as in Kafka).
//!
//! Never: answers before the data is as durable as acks asks; writes part of a partition's
//! batches when one of them is invalid; touches another shard's log.

use std::rc::Rc;

use bytes::Bytes;
use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use corebus_wire::kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use corebus_wire::record::{InvalidBatch, RecordBatch, RecordBatches, RecordRules};

use super::Reply;
use super::common::{locate_partition, str_bytes};
use crate::config::settings::{Scope, lookup};
use crate::config::value::Value;
use crate::metadata::{MetadataImage, TopicId};
use crate::server::order::Turn;
use crate::shard::partitions::Log;
use crate::shard::producer_state::{ProducerStates, Verdict};
use crate::shard::{Shard, ShardId, router};
use crate::storage::{AppendTicket, Durability, now_ms};

/// One partition's append, as sent to its shard.
struct Append {
    topic_id: TopicId,
    partition: i32,
    batches: Vec<RecordBatch>,
}

/// What a partition's append gave: base offset, LogAppendTime, log start offset.
type Appended = (i64, Option<i64>, i64);
type Outcome = Result<Appended, (i16, String)>;
/// A partition of the request: its topic's position, its index, and its outcome once known.
type Slot = (usize, i32, Option<Result<Appended, Refused>>);

/// A partition refused before its append: the error code and message, and the index inside
/// its batch of the record at fault when one record is (Produce v8+'s `record_errors`,
/// KIP-467).
struct Refused {
    code: i16,
    message: String,
    record_errors: Vec<(usize, String)>,
}

/// The message beside a partition that cannot be produced to here.
fn where_not(e: ResponseError) -> String {
    match e {
        ResponseError::NotLeaderOrFollower => "this broker is not the partition's leader".into(),
        _ => "unknown partition".into(),
    }
}

impl From<(i16, String)> for Refused {
    fn from((code, message): (i16, String)) -> Refused {
        Refused {
            code,
            message,
            record_errors: Vec::new(),
        }
    }
}

impl From<InvalidBatch> for Refused {
    fn from(e: InvalidBatch) -> Refused {
        Refused {
            code: e.kafka_error_code(),
            message: e.to_string(),
            record_errors: e.record_errors(),
        }
    }
}

/// Handles one Produce; `turn` is passed on (the connection's next request may start) once
/// every partition's append is in its log, before the wait for durability.
pub async fn handle(
    shard: &Rc<Shard>,
    request: ProduceRequest,
    version: i16,
    mut turn: Turn,
) -> Reply {
    let image = shard.metadata();
    let acks = request.acks;
    let timeout_ms = request.timeout_ms;
    let now = now_ms();
    // Every partition of the request in order, with its outcome or its append to do.
    let mut slots: Vec<Slot> = Vec::new();
    let mut work = Vec::new();
    let mut rules: Option<(TopicId, RulesOrRefusal)> = None;
    for (t, topic) in request.topic_data.iter().enumerate() {
        for p in &topic.partition_data {
            let pos = slots.len();
            let name = (version < 13).then(|| topic.name.0.as_str());
            let checked = if acks != 0 && acks != 1 && acks != -1 {
                Err(Refused::from((
                    ResponseError::InvalidRequiredAcks.code(),
                    format!("acks={acks}"),
                )))
            } else if request.transactional_id.is_some() {
                Err(Refused::from((
                    ResponseError::InvalidProducerIdMapping.code(),
                    "transactions are not supported yet".to_string(),
                )))
            } else {
                locate_partition(&image, shard.here(), name, topic.topic_id, p.index)
                    .map_err(|e| Refused::from((e.code(), where_not(e))))
                    .and_then(|(id, owner)| {
                        // A topic's settings are resolved once per request, not per partition.
                        let rules = match &rules {
                            Some((cached, r)) if *cached == id => r,
                            _ => &rules.insert((id, TopicRules::of(&image, id, shard))).1,
                        };
                        let rules = rules.as_ref().map_err(|e| Refused::from(e.clone()))?;
                        let batches = check_batches(rules, p.records.clone(), now)?;
                        Ok((id, owner, batches))
                    })
            };
            match checked {
                Ok((topic_id, owner, batches)) => {
                    slots.push((t, p.index, None));
                    work.push((
                        pos,
                        owner,
                        Append {
                            topic_id,
                            partition: p.index,
                            batches,
                        },
                    ));
                }
                Err(e) => slots.push((t, p.index, Some(Err(e)))),
            }
        }
    }
    // Every owning shard appends at once (`router::scatter`); each says when its appends are
    // in the logs, and then the connection's next request may start while this one waits
    // for durability.
    let positions: Vec<usize> = work.iter().map(|(pos, _, _)| *pos).collect();
    let work: Vec<(ShardId, Append)> = work.into_iter().map(|(_, o, a)| (o, a)).collect();
    let mut owners: Vec<ShardId> = work.iter().map(|(o, _)| *o).collect();
    owners.sort_unstable();
    owners.dedup();
    let (appended, started) = flume::bounded::<()>(owners.len());
    let appends = router::scatter(shard, work, move |s: Rc<Shard>, items| {
        let appended = appended.clone();
        async move { append_all(&s, items, acks, timeout_ms, now, appended).await }
    });
    let in_order = async {
        for _ in &owners {
            // An error: every group is done or its shard gone; nothing more to wait for.
            if started.recv_async().await.is_err() {
                break;
            }
        }
        turn.pass();
    };
    let (done, ()) = futures_lite::future::zip(appends, in_order).await;
    for (pos, outcome) in positions.into_iter().zip(done) {
        let outcome = outcome.unwrap_or_else(|gone| {
            Err((
                ResponseError::KafkaStorageError.code(),
                format!("the owning {gone}"),
            ))
        });
        slots[pos].2 = Some(outcome.map_err(Refused::from));
    }
    if acks == 0 {
        return Reply::Nothing;
    }
    let mut responses: Vec<TopicProduceResponse> = request
        .topic_data
        .iter()
        .map(|t| {
            TopicProduceResponse::default()
                .with_name(t.name.clone())
                .with_topic_id(t.topic_id)
        })
        .collect();
    for (t, index, outcome) in slots {
        let outcome = outcome.unwrap_or_else(|| {
            Err(Refused::from((
                ResponseError::KafkaStorageError.code(),
                "the owning shard is gone".to_string(),
            )))
        });
        let mut r = PartitionProduceResponse::default()
            .with_index(index)
            .with_log_append_time_ms(-1);
        match outcome {
            Ok((base, append_time, log_start)) => {
                r.base_offset = base;
                r.log_append_time_ms = append_time.unwrap_or(-1);
                r.log_start_offset = log_start;
            }
            Err(Refused {
                code,
                message,
                record_errors,
            }) => {
                tracing::debug!(partition = index, code, %message, "produce refused");
                r.error_code = code;
                r.base_offset = -1;
                r.log_start_offset = -1;
                // Every refused record, as Kafka lists them. Versions below 8 carry neither
                // field; the encoder leaves them out there.
                r.record_errors = record_errors
                    .into_iter()
                    .filter_map(|(i, why)| {
                        let record = i32::try_from(i).ok()?;
                        Some(
                            BatchIndexAndErrorMessage::default()
                                .with_batch_index(record)
                                .with_batch_index_error_message(Some(str_bytes(why))),
                        )
                    })
                    .collect();
                r.error_message = Some(str_bytes(message));
            }
        }
        responses[t].partition_responses.push(r);
    }
    Reply::Respond(
        corebus_wire::kafka_protocol::messages::ResponseKind::Produce(
            ProduceResponse::default().with_responses(responses),
        ),
    )
}

/// A topic's rules, or why nothing can be produced to it (code, message).
type RulesOrRefusal = Result<TopicRules, (i16, String)>;

/// What a topic's settings say about the batches produced to it, resolved once per request.
#[derive(Clone, Copy)]
struct TopicRules {
    max_bytes: i64,
    /// CreateTime timestamps are checked against the bounds below (not LogAppendTime).
    create_time: bool,
    before_ms: i64,
    after_ms: i64,
    /// Kafka refuses keyless records on a compacted topic (the cleaner could not keep them).
    compacted: bool,
}

impl TopicRules {
    fn of(image: &MetadataImage, id: TopicId, shard: &Shard) -> RulesOrRefusal {
        let topic = image.topic_by_id(id).ok_or_else(|| {
            (
                ResponseError::UnknownTopicOrPartition.code(),
                "topic deleted".to_string(),
            )
        })?;
        // Only the group coordinator writes the offsets topic (its replay trusts the layout).
        if topic.name == crate::groups::OFFSETS_TOPIC {
            return Err((
                ResponseError::InvalidTopicException.code(),
                format!("Cannot append to internal topic {}", topic.name),
            ));
        }
        let setting = |name: &str| {
            lookup(Scope::Topic, name)
                .and_then(|s| shard.config.settings.resolve_topic(s, &topic.configs).value)
        };
        let ms = |name: &str| setting(name).and_then(|v| v.as_i64()).unwrap_or(i64::MAX);
        Ok(TopicRules {
            max_bytes: ms("max.message.bytes"),
            create_time: !matches!(setting("message.timestamp.type"), Some(Value::String(s)) if s == "LogAppendTime"),
            before_ms: ms("message.timestamp.before.max.ms"),
            after_ms: ms("message.timestamp.after.max.ms"),
            compacted: matches!(setting("cleanup.policy"), Some(Value::List(p)) if p.iter().any(|x| x == "compact")),
        })
    }
}

/// Parses and checks a partition's record set against its topic's `rules`: the framing and
/// CRC of every batch (CORRUPT_MESSAGE), then Kafka's client-origin validation (INVALID_RECORD:
/// offset range against record count, no control batch, a sequence with every producer id,
/// every record body well formed, keys on compacted topics), size, transactions and
/// timestamps. Any refusal refuses the whole partition: nothing of it is appended.
fn check_batches(
    rules: &TopicRules,
    records: Option<Bytes>,
    now: i64,
) -> Result<Vec<RecordBatch>, Refused> {
    let corrupt = |m: String| Refused::from((ResponseError::CorruptMessage.code(), m));
    let records = records
        .filter(|r| !r.is_empty())
        .ok_or_else(|| corrupt("no records".into()))?;
    let TopicRules {
        max_bytes,
        create_time,
        before_ms,
        after_ms,
        compacted,
    } = *rules;
    let mut batches = Vec::new();
    for batch in RecordBatches::new(records) {
        let batch = batch.map_err(InvalidBatch::from_parse_error)?;
        batch
            .verify_crc()
            .map_err(|e| Refused::from((e.kafka_error_code(), e.to_string())))?;
        // Header checks first: a control batch is an invalid record (as in Kafka) before it is
        // an unsupported transaction.
        batch.validate_header_from_client()?;
        if batch.len() as i64 > max_bytes {
            return Err(Refused::from((
                ResponseError::MessageTooLarge.code(),
                format!(
                    "batch of {} bytes exceeds max.message.bytes {max_bytes}",
                    batch.len()
                ),
            )));
        }
        if batch.is_transactional() {
            return Err(Refused::from((
                ResponseError::InvalidProducerIdMapping.code(),
                "transactions are not supported yet".to_string(),
            )));
        }
        // One pass over the records on every topic (a stored malformed record would break
        // every consumer reading past it); the key check (compacted topics) and each record's
        // CreateTime against the topic's window (Kafka checks every record, and names the one
        // at fault) ride along.
        batch.validate_records_from_client(&RecordRules {
            require_keys: compacted,
            create_time_window: create_time
                .then(|| (now.saturating_sub(before_ms), now.saturating_add(after_ms))),
        })?;
        batches.push(batch);
    }
    if batches.is_empty() {
        return Err(corrupt("no record batch".into()));
    }
    Ok(batches)
}

/// An append started, or a retried batch found already written.
enum Started {
    Appended(crate::storage::AppendInfo),
    Duplicate(i64),
}

/// The idempotence verdict for a partition's batches: the first batch with a producer id
/// decides for a duplicate (a retried request repeats its batches), any refusal refuses all.
fn idempotence_verdict(states: &ProducerStates, batches: &[RecordBatch]) -> Verdict {
    let mut verdict = Verdict::Append;
    for (i, b) in batches
        .iter()
        .enumerate()
        .filter(|(_, b)| b.producer_id() >= 0)
    {
        match states.check(
            b.producer_id(),
            b.producer_epoch(),
            b.base_sequence(),
            b.record_count(),
        ) {
            Verdict::Duplicate { base_offset } if i == 0 => {
                verdict = Verdict::Duplicate { base_offset }
            }
            Verdict::Duplicate { .. } | Verdict::Append => {}
            refuse @ Verdict::Refuse(_) => return refuse,
        }
    }
    verdict
}

/// Runs on the owning shard: starts every append first (so their writes and syncs coalesce
/// into the shard's group commit), says so on `appended`, then waits for each to be as
/// durable as acks asks.
async fn append_all(
    shard: &Shard,
    items: Vec<Append>,
    acks: i16,
    timeout_ms: i32,
    now: i64,
    appended: flume::Sender<()>,
) -> Vec<Outcome> {
    let mut started = Vec::with_capacity(items.len());
    for a in items {
        let Some(log) = shard.logs.log((a.topic_id, a.partition)) else {
            started.push(Err((
                ResponseError::KafkaStorageError.code(),
                "partition log is not open".to_string(),
            )));
            continue;
        };
        let key = (a.topic_id, a.partition);
        if !crate::replication::leader::leads(shard, key) {
            started.push(Err((
                ResponseError::NotLeaderOrFollower.code(),
                "this broker does not lead the partition (any more)".to_string(),
            )));
            continue;
        }
        if acks == -1
            && let Err(e) = enough_in_sync(shard, key, &log)
        {
            started.push(Err((ResponseError::NotEnoughReplicas.code(), e)));
            continue;
        }
        // Check, append and record producer state without an await in between, so two
        // requests of one producer cannot interleave on this shard.
        let outcome = shard.logs.with_producers(key, |states| {
            match idempotence_verdict(states, &a.batches) {
                Verdict::Append => {}
                Verdict::Duplicate { base_offset } => return Ok(Started::Duplicate(base_offset)),
                Verdict::Refuse(e) => {
                    return Err((
                        e.code(),
                        format!("{e:?} for producer {}", a.batches[0].producer_id()),
                    ));
                }
            }
            let info = log
                .append_nowait(&a.batches, log.leader_epoch(), now)
                .map_err(|e| (e.kafka_error_code(), e.to_string()))?;
            let mut base = info.base_offset;
            for b in a.batches.iter().filter(|b| b.producer_id() >= 0) {
                states.record(
                    b.producer_id(),
                    b.producer_epoch(),
                    b.base_sequence(),
                    b.record_count(),
                    base,
                    info.log_append_time.unwrap_or(b.max_timestamp()),
                );
                base += i64::from(b.last_offset_delta()) + 1;
            }
            Ok(Started::Appended(info))
        });
        // With the leader epoch the append was made under (a leadership that changes while
        // acks=all waits is then seen, `in_sync_replicas`).
        let epoch = shard.leaders.led_epoch(key);
        started.push(outcome.map(|o| (key, log, o, epoch)));
    }
    // The receiver may be gone with its request (the connection closed): nothing to tell.
    let _ = appended.try_send(());
    // The partitions that must be synced are synced together: one group-commit round for
    // all of them (`PartitionLog::sync_all`), not one per partition.
    let synced: Vec<(&Log, AppendTicket)> = started
        .iter()
        .filter_map(|s| match s {
            Ok((_, log, Started::Appended(info), _))
                if log.config().durability_for_acks(acks) == Durability::Synced =>
            {
                Some((log, info.ticket))
            }
            _ => None,
        })
        .collect();
    let mut synced = Log::sync_all(&synced).await.into_iter();
    // acks=all on a replicated partition also waits for the in-sync replicas: until the
    // high watermark passes the append, up to the request's timeout.
    let deadline = std::time::Instant::now()
        + std::time::Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0));
    let mut done = Vec::with_capacity(started.len());
    for s in &started {
        let outcome = match s {
            Err(e) => Err(e.clone()),
            Ok((key, log, Started::Duplicate(base), epoch)) => {
                // The original is already in the log; wait for it as a new append would.
                let next = log.log_end_offset().min(base + 1);
                match log.wait_written(next).await {
                    Ok(()) if acks == -1 => {
                        in_sync_replicas(shard, *key, log, next, deadline, *epoch).await
                    }
                    other => other.map_err(|e| (e.kafka_error_code(), e.to_string())),
                }
                .map(|()| (*base, None, log.log_start_offset()))
            }
            Ok((key, log, Started::Appended(info), epoch)) => {
                let durable = match log.config().durability_for_acks(acks) {
                    Durability::Written => Some(log.wait_appended(info.ticket).await),
                    // In the order `synced` was built in; never missing, and never taken
                    // for durable if it were.
                    Durability::Synced => synced.next(),
                };
                let durable = match durable {
                    Some(Ok(())) if acks == -1 => Some(
                        in_sync_replicas(shard, *key, log, info.last_offset + 1, deadline, *epoch)
                            .await,
                    ),
                    Some(Ok(())) => Some(Ok(())),
                    Some(Err(e)) => Some(Err((e.kafka_error_code(), e.to_string()))),
                    None => None,
                };
                match durable {
                    Some(Ok(())) => Ok((
                        info.base_offset,
                        info.log_append_time,
                        log.log_start_offset(),
                    )),
                    Some(Err(e)) => Err(e),
                    None => Err((
                        ResponseError::KafkaStorageError.code(),
                        "no sync result for this partition".to_string(),
                    )),
                }
            }
        };
        done.push(outcome);
    }
    done
}

/// How often an acks=all append waiting for the in-sync replicas checks that this broker still
/// leads its partition.
const LEADERSHIP_CHECK_MS: u64 = 50;

/// Whether a partition has the in-sync replicas its topic's `min.insync.replicas` asks of an
/// acks=all append (checked before appending, as Kafka does: NOT_ENOUGH_REPLICAS).
fn enough_in_sync(shard: &Shard, key: (TopicId, i32), log: &Log) -> Result<(), String> {
    let isr = shard.leaders.isr_len(key);
    let min = usize::try_from(log.config().min_insync_replicas).unwrap_or(1);
    if isr < min {
        return Err(format!(
            "{isr} in-sync replicas, min.insync.replicas is {min}"
        ));
    }
    Ok(())
}

/// Waits until the in-sync replicas hold every offset below `next` (the high watermark passed
/// it), at most until `deadline` (REQUEST_TIMED_OUT); then checks that the in-sync set did not
/// shrink below `min.insync.replicas` meanwhile (NOT_ENOUGH_REPLICAS_AFTER_APPEND). Immediate on
/// a partition whose leader is its only in-sync replica: its high watermark is its written
/// offset.
async fn in_sync_replicas(
    shard: &Shard,
    key: (TopicId, i32),
    log: &Log,
    next: i64,
    deadline: std::time::Instant,
    epoch: Option<i32>,
) -> Result<(), (i16, String)> {
    // `epoch`: the leader epoch the append was made under. A leader replaced meanwhile (a
    // failover, a controlled shutdown) answers NOT_LEADER_OR_FOLLOWER at once, as Kafka's
    // delayed produce does, and the client retries on the new leader (which deduplicates an
    // idempotent batch it already has).
    while log.high_watermark() < next {
        let now = std::time::Instant::now();
        if now >= deadline {
            return Err((
                ResponseError::RequestTimedOut.code(),
                "the in-sync replicas did not acknowledge within the request's timeout".to_string(),
            ));
        }
        let slice = deadline
            .saturating_duration_since(now)
            .min(std::time::Duration::from_millis(LEADERSHIP_CHECK_MS));
        match glommio::timer::timeout(slice, async { Ok(log.wait_high_watermark(next).await) })
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err((e.kafka_error_code(), e.to_string())),
            // Deposed meanwhile: answered below.
            Err(_) if epoch.is_some() && shard.leaders.led_epoch(key) != epoch => break,
            Err(_) => {}
        }
    }
    // Also when the high watermark passed: a deposed leader's log may have been truncated
    // under a new leader meanwhile (its high watermark then comes from that leader), so only a
    // leader still under the append's epoch acknowledges.
    if epoch.is_some() && shard.leaders.led_epoch(key) != epoch {
        return Err((
            ResponseError::NotLeaderOrFollower.code(),
            "this broker stopped leading the partition before the in-sync replicas acknowledged"
                .to_string(),
        ));
    }
    if let Err(e) = enough_in_sync(shard, key, log) {
        return Err((ResponseError::NotEnoughReplicasAfterAppend.code(), e));
    }
    Ok(())
}
