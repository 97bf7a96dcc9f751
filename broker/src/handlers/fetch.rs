//! Fetch (key 1): reads each partition on its owning shard (`shard::router::scatter`: one
//! message per shard per round, all shards at once), from the batch holding the fetch offset (a mid-batch start returns the whole
//! batch; clients skip the earlier records), within `partition_max_bytes` and the response's
//! `max_bytes`, cut at batch boundaries in request order (KIP-74: only the first batch of the
//! first non-empty partition may exceed `max_bytes`, so a large batch cannot stall a
//! consumer; no read asks for more than `max_bytes`). With less than `min_bytes`, the request
//! waits up to `max_wait_ms` and is woken by the first append to any of its partitions.
//!
//! Fetch sessions (KIP-227, `shard::fetch_sessions`): a full fetch with epoch 0 opens a session,
//! incremental fetches then carry only changed partitions and are answered only for partitions
//! with news; epoch -1 fetches without a session. Transactions do not exist yet, so the last stable offset
//! is the high watermark and no aborted transactions are listed.
//!
//! Never: returns data above the high watermark (nothing a crash could take back); blocks a
//! shard while waiting (the wait is an await on the logs' write watermarks).

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, PartitionData,
};
use corebus_wire::kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use futures_lite::future;

use corebus_wire::kafka_protocol::messages::TopicName;
use uuid::Uuid;

use super::common::{locate_partition, str_bytes};
use crate::metadata::TopicId;
use crate::shard::fetch_sessions::{PartKey, Plan};
use crate::shard::{Shard, ShardId, router};

/// Longest a fetch waits for data, whatever `max_wait_ms` says (Kafka's clients use 500 ms).
const MAX_FETCH_WAIT_MS: i32 = 60_000;
/// First Fetch version with sessions (KIP-227).
const FETCH_SESSION_VERSION: i16 = 7;
/// First Fetch version naming topics by id (KIP-516).
const FETCH_TOPIC_ID_VERSION: i16 = 13;
/// Kafka's isolation levels.
const READ_COMMITTED: i8 = 1;

/// One partition to read, as sent to its shard.
#[derive(Clone, Copy)]
struct Want {
    topic_id: TopicId,
    partition: i32,
    offset: i64,
    max_bytes: usize,
}

/// A partition of the answer: its position, index, and owning shard with the read to do
/// (or the error it gets).
type Slot = (usize, i32, Result<(ShardId, Want), i16>);

/// A partition to read as the session or request gives it, with what the client last heard.
type PlannedPart = (PartKey, i64, i32, Option<(i64, i64)>);

/// What a partition read gave.
#[derive(Clone, Default)]
struct Got {
    error: i16,
    high_watermark: i64,
    log_start_offset: i64,
    records: Bytes,
}

/// A Fetch answer: the response with its record data kept beside it (topic-major, one entry
/// per partition in response order), so the connection sends the data without encoding a
/// copy of it (`server::gather`).
pub struct FetchReply {
    pub response: FetchResponse,
    pub records: Vec<Bytes>,
}

pub async fn handle(shard: &Rc<Shard>, request: FetchRequest, version: i16) -> FetchReply {
    // Topics are named by id from v13 on, by name before.
    let by_id = version >= FETCH_TOPIC_ID_VERSION;
    let topic_key = |name: &TopicName, id: Uuid| {
        if by_id {
            (String::new(), id)
        } else {
            (name.0.to_string(), Uuid::nil())
        }
    };
    let requested: Vec<(PartKey, i64, i32)> = request
        .topics
        .iter()
        .flat_map(|t| {
            let (name, id) = topic_key(&t.topic, t.topic_id);
            t.partitions.iter().map(move |p| {
                (
                    (name.clone(), id, p.partition),
                    p.fetch_offset,
                    p.partition_max_bytes,
                )
            })
        })
        .collect();
    let forgotten: Vec<PartKey> = request
        .forgotten_topics_data
        .iter()
        .flat_map(|f| {
            let (name, id) = topic_key(&f.topic, f.topic_id);
            f.partitions.iter().map(move |p| (name.clone(), id, *p))
        })
        .collect();
    let plan = if version >= FETCH_SESSION_VERSION {
        shard.fetch_sessions.borrow_mut().begin(
            request.session_id,
            request.session_epoch,
            requested.clone(),
            forgotten,
        )
    } else {
        Plan::Full { session_id: 0 }
    };
    // The partitions to read, with what the client last heard (incremental sessions only).
    let (session_id, incremental, parts): (i32, bool, Vec<PlannedPart>) = match plan {
        Plan::Refuse(e) => {
            return FetchReply {
                response: FetchResponse::default().with_error_code(e.code()),
                records: Vec::new(),
            };
        }
        Plan::Full { session_id } => (
            session_id,
            false,
            requested
                .into_iter()
                .map(|(k, o, m)| (k, o, m, None))
                .collect(),
        ),
        Plan::Incremental { session_id, parts } => (
            session_id,
            true,
            parts
                .into_iter()
                .map(|p| (p.key, p.fetch_offset, p.max_bytes, p.sent))
                .collect(),
        ),
    };
    let image = shard.metadata();
    // A negative request limit means none (old clients send i32::MAX anyway).
    let response_max = usize::try_from(request.max_bytes).unwrap_or(usize::MAX);
    let slots: Vec<Slot> = parts
        .iter()
        .enumerate()
        .map(|(pos, ((name, id, partition), offset, max_bytes, _))| {
            let name = (!by_id).then_some(name.as_str());
            let routed = locate_partition(&image, shard.shard_count(), name, *id, *partition)
                .map(|(topic_id, owner)| {
                    (
                        owner,
                        Want {
                            topic_id,
                            partition: *partition,
                            offset: *offset,
                            // No partition can use more than the whole response.
                            max_bytes: usize::try_from(*max_bytes).unwrap_or(0).min(response_max),
                        },
                    )
                })
                .map_err(|e| e.code());
            (pos, *partition, routed)
        })
        .collect();
    let wait = Duration::from_millis(request.max_wait_ms.clamp(0, MAX_FETCH_WAIT_MS) as u64);
    let deadline = Instant::now() + wait;
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let mut got = read_round(shard, &slots).await;
    loop {
        let total: usize = got.iter().map(|g| g.records.len()).sum();
        let any_error = got.iter().any(|g| g.error != 0);
        // Data below the high watermark that this round did not return (a partition limit of
        // 0, say) will never wake a wait: answer now instead of spinning until the deadline.
        let stuck = slots.iter().zip(&got).any(|((_, _, r), g)| {
            r.as_ref()
                .is_ok_and(|(_, w)| g.records.is_empty() && g.high_watermark > w.offset)
        });
        if total >= min_bytes
            || any_error
            || stuck
            || Instant::now() >= deadline
            || shard.shutdown.is_fired()
        {
            break;
        }
        wait_for_data(shard, &slots, deadline).await;
        got = read_round(shard, &slots).await;
    }
    trim_to(&mut got, response_max);
    let mut responses: Vec<FetchableTopicResponse> = Vec::new();
    let mut records = Vec::new();
    let mut sent = Vec::new();
    for ((key, _, _, heard), g) in parts.into_iter().zip(got) {
        // An incremental answer leaves out partitions with nothing new for the client.
        let news = !g.records.is_empty()
            || g.error != 0
            || heard != Some((g.high_watermark, g.log_start_offset));
        if incremental && !news {
            continue;
        }
        sent.push((key.clone(), g.high_watermark, g.log_start_offset));
        let (name, id, partition) = key;
        let mut data = PartitionData::default()
            .with_partition_index(partition)
            .with_error_code(g.error)
            .with_high_watermark(g.high_watermark)
            .with_last_stable_offset(g.high_watermark)
            .with_log_start_offset(g.log_start_offset)
            .with_preferred_read_replica(BrokerId(-1));
        records.push(g.records);
        if request.isolation_level == READ_COMMITTED {
            data.aborted_transactions = Some(Vec::new());
        }
        match responses.last_mut() {
            Some(t) if t.topic.0.as_str() == name && t.topic_id == id => t.partitions.push(data),
            _ => responses.push(
                FetchableTopicResponse::default()
                    .with_topic(TopicName(str_bytes(name)))
                    .with_topic_id(id)
                    .with_partitions(vec![data]),
            ),
        }
    }
    if session_id != 0 {
        shard.fetch_sessions.borrow_mut().finish(session_id, &sent);
    }
    FetchReply {
        response: FetchResponse::default()
            .with_session_id(session_id)
            .with_responses(responses),
        records,
    }
}

/// Reads every routed partition once, each on its shard (all shards at once); errors stand
/// for the others.
async fn read_round(shard: &Rc<Shard>, slots: &[Slot]) -> Vec<Got> {
    let mut got: Vec<Got> = slots
        .iter()
        .map(|(_, _, r)| match r {
            Ok(_) => Got::default(),
            Err(code) => Got {
                error: *code,
                high_watermark: -1,
                log_start_offset: -1,
                records: Bytes::new(),
            },
        })
        .collect();
    let mut positions = Vec::new();
    let mut work = Vec::new();
    for (pos, (_, _, r)) in slots.iter().enumerate() {
        if let Ok((owner, want)) = r {
            positions.push(pos);
            work.push((*owner, *want));
        }
    }
    let done = router::scatter(shard, work, |s: Rc<Shard>, wants| async move {
        read_on_owner(&s, wants).await
    })
    .await;
    for (pos, g) in positions.into_iter().zip(done) {
        match g {
            Ok(g) => got[pos] = g,
            Err(_) => got[pos].error = ResponseError::KafkaStorageError.code(),
        }
    }
    got
}

/// Runs on the owning shard: one read per partition, one answer per want, in order. The read
/// is copied once into `Bytes` here because the storage engine's buffers are shard-local and
/// the response may be encoded on another shard.
async fn read_on_owner(shard: &Shard, wants: Vec<Want>) -> Vec<Got> {
    let mut out = Vec::with_capacity(wants.len());
    for want in wants {
        let Some(log) = shard.logs.log((want.topic_id, want.partition)) else {
            out.push(Got {
                error: ResponseError::KafkaStorageError.code(),
                high_watermark: -1,
                log_start_offset: -1,
                records: Bytes::new(),
            });
            continue;
        };
        let high_watermark = log.written_offset();
        let log_start_offset = log.log_start_offset();
        let g = if want.offset == high_watermark {
            Got {
                error: 0,
                high_watermark,
                log_start_offset,
                records: Bytes::new(),
            }
        } else {
            match log.read(want.offset, want.max_bytes).await {
                Ok(read) => Got {
                    error: 0,
                    high_watermark: read.high_watermark,
                    log_start_offset: read.log_start_offset,
                    records: read.to_bytes(),
                },
                Err(e) => Got {
                    error: e.kafka_error_code(),
                    high_watermark,
                    log_start_offset,
                    records: Bytes::new(),
                },
            }
        };
        out.push(g);
    }
    out
}

/// Waits until some partition of the request has data past its fetch offset, the deadline
/// passes, or the shard shuts down.
async fn wait_for_data(shard: &Rc<Shard>, slots: &[Slot], deadline: Instant) {
    let remaining = deadline.saturating_duration_since(Instant::now());
    let work = slots
        .iter()
        .filter_map(|(_, _, r)| {
            let (owner, want) = r.as_ref().ok()?;
            Some((*owner, (want.topic_id, want.partition, want.offset)))
        })
        .collect();
    let (woke_tx, woke_rx) = flume::bounded::<()>(1);
    // Dropping these cancels the waits still running (on this shard; remote ones end at
    // their own deadline).
    let mut waits = Vec::new();
    // Returns at the first wake from any shard, so not `router::scatter` (which waits for all).
    for (owner, _, items) in router::group(work) {
        let s = shard.clone();
        let tx = woke_tx.clone();
        waits.push(glommio::spawn_local(async move {
            let _ = s
                .on_shard(owner, move |o: Rc<Shard>| async move {
                    wait_on_owner(&o, items, remaining).await
                })
                .await;
            let _ = tx.try_send(());
        }));
    }
    drop(woke_tx);
    let shutdown = shard.shutdown.clone();
    future::or(
        async {
            let _ = woke_rx.recv_async().await;
        },
        future::or(
            async {
                glommio::timer::sleep(remaining).await;
            },
            async move { shutdown.wait().await },
        ),
    )
    .await;
    drop(waits);
}

/// Runs on the owning shard: returns when any of `items` has a written offset past its fetch
/// offset, or after `wait`.
async fn wait_on_owner(shard: &Shard, items: Vec<(TopicId, i32, i64)>, wait: Duration) {
    let (tx, rx) = flume::bounded::<()>(1);
    let mut waits = Vec::new();
    for (topic_id, partition, offset) in items {
        let Some(log) = shard.logs.log((topic_id, partition)) else {
            continue;
        };
        let tx = tx.clone();
        waits.push(glommio::spawn_local(async move {
            let _ = log.wait_written(offset.saturating_add(1)).await;
            let _ = tx.try_send(());
        }));
    }
    drop(tx);
    let _ = glommio::timer::timeout(wait, async {
        let _ = rx.recv_async().await;
        Ok(())
    })
    .await;
    drop(waits);
}

/// Keeps record data within `max_bytes` in request order, cutting at batch boundaries: each
/// partition keeps the whole batches that still fit, and the first batch of the first
/// non-empty partition is kept whatever its size (KIP-74: only that one batch may exceed the
/// limit, so a large batch cannot stall a consumer).
fn trim_to(got: &mut [Got], max_bytes: usize) {
    let mut used = 0usize;
    for g in got.iter_mut() {
        if g.records.is_empty() {
            continue;
        }
        let room = max_bytes.saturating_sub(used);
        let keep = whole_batches_within(&g.records, room, used == 0);
        g.records.truncate(keep);
        used = used.saturating_add(keep);
    }
}

/// Offset of the record batch's `batchLength` field (after the base offset).
const BATCH_LENGTH_AT: usize = 8;
/// Bytes of a batch before what `batchLength` counts: the base offset and the length itself.
const BATCH_PREFIX_BYTES: usize = 12;

/// The length of the longest prefix of `records` made of whole batches within `room` bytes;
/// with `at_least_one`, the first batch counts whatever its size.
fn whole_batches_within(records: &[u8], room: usize, at_least_one: bool) -> usize {
    let mut end = 0usize;
    while let Some(len_bytes) = records.get(end + BATCH_LENGTH_AT..end + BATCH_PREFIX_BYTES) {
        let declared = i32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        let Some(next) = usize::try_from(declared)
            .ok()
            .and_then(|l| end.checked_add(BATCH_PREFIX_BYTES + l))
            .filter(|n| *n <= records.len())
        else {
            // The log only returns whole batches; anything else is not split further.
            break;
        };
        if next > room && !(at_least_one && end == 0) {
            break;
        }
        end = next;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record set of batches of these total sizes (only the length field is real).
    fn got(batches: &[usize]) -> Got {
        let mut v = Vec::new();
        for &n in batches {
            let mut b = vec![0u8; n];
            b[BATCH_LENGTH_AT..BATCH_PREFIX_BYTES]
                .copy_from_slice(&((n - BATCH_PREFIX_BYTES) as i32).to_be_bytes());
            v.extend_from_slice(&b);
        }
        Got {
            records: Bytes::from(v),
            ..Got::default()
        }
    }

    fn sizes(g: &[Got]) -> Vec<usize> {
        g.iter().map(|g| g.records.len()).collect()
    }

    #[test]
    fn max_bytes_lets_only_the_first_batch_exceed_it() {
        // The first non-empty partition's first batch goes whole, nothing after it fits.
        let mut g = vec![got(&[]), got(&[100, 20]), got(&[30]), got(&[12])];
        trim_to(&mut g, 50);
        assert_eq!(sizes(&g), vec![0, 100, 0, 0]);
        // Whole batches while they fit, across partitions; a partition may be cut.
        let mut g = vec![got(&[13]), got(&[15, 15]), got(&[20])];
        trim_to(&mut g, 45);
        assert_eq!(sizes(&g), vec![13, 30, 0]);
        let mut g = vec![got(&[20, 20, 20]), got(&[12])];
        trim_to(&mut g, 45);
        assert_eq!(sizes(&g), vec![40, 0]);
        // Within the limit nothing is cut.
        let mut g = vec![got(&[20, 20]), got(&[12])];
        trim_to(&mut g, 1_000);
        assert_eq!(sizes(&g), vec![40, 12]);
    }

    #[test]
    fn a_malformed_length_stops_the_cut_without_panicking() {
        let mut g = got(&[20]);
        let mut v = g.records.to_vec();
        v.extend_from_slice(&[0u8; 8]); // a truncated second batch
        v.extend_from_slice(&(-5i32).to_be_bytes());
        g.records = Bytes::from(v);
        assert_eq!(whole_batches_within(&g.records, 1_000, true), 20);
        assert_eq!(whole_batches_within(&[1, 2, 3], 1_000, true), 0);
    }
}
