//! `consume TOPIC`: reads records from each partition's leader from an offset, an offset
//! spec (earliest, latest) or a timestamp, and prints them through a template (kcat's `-f`
//! placeholders) or as JSON lines.

use std::collections::BTreeMap;
use std::io::Write;

use clap::Args;
use corebus_wire::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use corebus_wire::kafka_protocol::messages::{BrokerId, FetchRequest, RequestKind, ResponseKind};
use corebus_wire::kafka_protocol::protocol::StrBytes;
use corebus_wire::record::{Record, RecordBatches, TimestampType};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::client::{Cluster, error_text};
use crate::offsets::{EARLIEST, LATEST, list_offsets};
use crate::output::Format;
use crate::{Failure, Outcome};

/// How long one fetch waits for data at the broker (`fetch.max.wait.ms`).
const FETCH_MAX_WAIT_MS: i32 = 500;
/// Bytes one fetch asks for per partition and in all.
const FETCH_PARTITION_MAX_BYTES: i32 = 1 << 20;
const FETCH_MAX_BYTES: i32 = 16 << 20;
/// Decompressed bytes one batch may expand to.
const MAX_DECOMPRESSED_BATCH_BYTES: usize = 64 << 20;

#[derive(Args)]
pub struct ConsumeArgs {
    topic: String,
    /// Partitions to read; repeatable [default: all]
    #[arg(short, long = "partition")]
    partitions: Vec<i32>,
    /// Where to start: earliest, latest, an offset, or @TIMESTAMP_MS
    #[arg(short, long, default_value = "earliest")]
    offset: String,
    /// Stop after this many records
    #[arg(short = 'n', long)]
    num: Option<usize>,
    /// Stop once every partition is read to its high watermark
    #[arg(short = 'e', long)]
    exit_at_end: bool,
    /// Text format per record: %t topic, %p partition, %o offset, %T timestamp, %k key,
    /// %v value, %h headers, %% a percent sign; \n and \t as escapes
    #[arg(short = 'f', long, default_value = "%v\\n")]
    template: String,
}

/// Where a partition's reading starts.
enum Start {
    Offset(i64),
    /// A ListOffsets timestamp (LATEST, EARLIEST or a time in ms).
    Lookup(i64),
}

fn start_of(spec: &str) -> Result<Start, Failure> {
    let bad = || Failure::Refused(format!("--offset {spec}: use earliest, latest, N or @MS"));
    match spec {
        "earliest" | "beginning" => Ok(Start::Lookup(EARLIEST)),
        "latest" | "end" => Ok(Start::Lookup(LATEST)),
        s if s.starts_with('@') => s[1..].parse().map(Start::Lookup).map_err(|_| bad()),
        s => s
            .parse::<i64>()
            .ok()
            .filter(|o| *o >= 0)
            .map(Start::Offset)
            .ok_or_else(bad),
    }
}

struct Position {
    leader: i32,
    next: i64,
    high_watermark: i64,
}

fn lossy(b: &Option<bytes::Bytes>) -> String {
    b.as_ref()
        .map_or_else(String::new, |b| String::from_utf8_lossy(b).into_owned())
}

fn render(template: &str, topic: &str, partition: i32, offset: i64, ts: i64, r: &Record) -> String {
    let mut out = String::new();
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => match chars.next() {
                Some('t') => out.push_str(topic),
                Some('p') => out.push_str(&partition.to_string()),
                Some('o') => out.push_str(&offset.to_string()),
                Some('T') => out.push_str(&ts.to_string()),
                Some('k') => out.push_str(&lossy(&r.key)),
                Some('v') => out.push_str(&lossy(&r.value)),
                Some('h') => {
                    let hs: Vec<String> = r
                        .headers
                        .iter()
                        .map(|h| format!("{}={}", String::from_utf8_lossy(&h.key), lossy(&h.value)))
                        .collect();
                    out.push_str(&hs.join(","));
                }
                Some('%') => out.push('%'),
                Some(other) => {
                    out.push('%');
                    out.push(other);
                }
                None => out.push('%'),
            },
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

fn json_of(topic: &str, partition: i32, offset: i64, ts: i64, r: &Record) -> Value {
    let headers: Vec<Value> = r
        .headers
        .iter()
        .map(|h| json!({"key": String::from_utf8_lossy(&h.key), "value": h.value.as_ref().map(|v| String::from_utf8_lossy(v).into_owned())}))
        .collect();
    json!({
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "timestamp": ts,
        "key": r.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
        "value": r.value.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()),
        "headers": headers,
    })
}

pub fn run(args: ConsumeArgs, brokers: &[String], format: Format) -> Outcome {
    let start = start_of(&args.offset)?;
    let mut cluster = Cluster::connect(brokers)?;
    let meta = cluster.metadata(Some(std::slice::from_ref(&args.topic)))?;
    let Some(topic) = meta.topics.first() else {
        return Err(Failure::Refused(format!("no metadata for {}", args.topic)));
    };
    if topic.error_code != 0 {
        return Err(Failure::Refused(format!(
            "topic {}: {}",
            args.topic,
            error_text(topic.error_code, None)
        )));
    }
    let topic_id = topic.topic_id;
    let mut positions: BTreeMap<i32, Position> = BTreeMap::new();
    for p in &topic.partitions {
        if args.partitions.is_empty() || args.partitions.contains(&p.partition_index) {
            positions.insert(
                p.partition_index,
                Position {
                    leader: p.leader_id.0,
                    next: 0,
                    high_watermark: -1,
                },
            );
        }
    }
    for p in &args.partitions {
        if !positions.contains_key(p) {
            return Err(Failure::Refused(format!(
                "{}/{p} does not exist",
                args.topic
            )));
        }
    }
    resolve_starts(&mut cluster, &args.topic, &start, &mut positions)?;

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0usize;
    let limit = args.num.unwrap_or(usize::MAX);
    loop {
        let leaders: Vec<i32> = {
            let mut l: Vec<i32> = positions.values().map(|p| p.leader).collect();
            l.sort_unstable();
            l.dedup();
            l
        };
        for leader in leaders {
            let parts: Vec<FetchPartition> = positions
                .iter()
                .filter(|(_, p)| p.leader == leader)
                .map(|(i, p)| {
                    FetchPartition::default()
                        .with_partition(*i)
                        .with_fetch_offset(p.next)
                        .with_current_leader_epoch(-1)
                        .with_last_fetched_epoch(-1)
                        .with_log_start_offset(-1)
                        .with_partition_max_bytes(FETCH_PARTITION_MAX_BYTES)
                })
                .collect();
            let request = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(FETCH_MAX_WAIT_MS)
                .with_min_bytes(1)
                .with_max_bytes(FETCH_MAX_BYTES)
                .with_session_id(0)
                .with_session_epoch(-1)
                .with_topics(vec![
                    FetchTopic::default()
                        .with_topic(StrBytes::from_string(args.topic.clone()).into())
                        .with_topic_id(topic_id)
                        .with_partitions(parts),
                ]);
            let ResponseKind::Fetch(r) =
                cluster.broker(leader)?.call(RequestKind::Fetch(request))?
            else {
                return Err(Failure::Refused("Fetch got another response kind".into()));
            };
            if r.error_code != 0 {
                return Err(Failure::Refused(format!(
                    "fetch: {}",
                    error_text(r.error_code, None)
                )));
            }
            for t in &r.responses {
                if t.topic_id != Uuid::nil() && t.topic_id != topic_id {
                    continue;
                }
                for pd in &t.partitions {
                    let Some(pos) = positions.get_mut(&pd.partition_index) else {
                        continue;
                    };
                    if pd.error_code != 0 {
                        return Err(Failure::Refused(format!(
                            "{}/{}: {}",
                            args.topic,
                            pd.partition_index,
                            error_text(pd.error_code, None)
                        )));
                    }
                    pos.high_watermark = pd.high_watermark;
                    let Some(records) = &pd.records else { continue };
                    for batch in RecordBatches::new(records.clone()) {
                        // A partial batch at the end of a fetch is normal: fetch it again.
                        let Ok(batch) = batch else { break };
                        let next = batch.next_offset();
                        if batch.is_control() {
                            pos.next = pos.next.max(next);
                            continue;
                        }
                        let recs = batch
                            .records_with_limit(MAX_DECOMPRESSED_BATCH_BYTES)
                            .map_err(|e| Failure::Refused(format!("corrupt batch: {e}")))?;
                        let log_append = batch.timestamp_type() == TimestampType::LogAppendTime;
                        for rec in recs {
                            let rec =
                                rec.map_err(|e| Failure::Refused(format!("corrupt record: {e}")))?;
                            let offset = batch.base_offset() + i64::from(rec.offset_delta);
                            if offset < pos.next {
                                continue; // a fetch may start inside a batch
                            }
                            let ts = if log_append {
                                batch.max_timestamp()
                            } else {
                                batch.base_timestamp() + rec.timestamp_delta
                            };
                            match format {
                                Format::Json => writeln!(
                                    out,
                                    "{}",
                                    json_of(&args.topic, pd.partition_index, offset, ts, &rec)
                                )?,
                                Format::Text => write!(
                                    out,
                                    "{}",
                                    render(
                                        &args.template,
                                        &args.topic,
                                        pd.partition_index,
                                        offset,
                                        ts,
                                        &rec
                                    )
                                )?,
                            }
                            pos.next = offset + 1;
                            printed += 1;
                            if printed >= limit {
                                out.flush()?;
                                return Ok(());
                            }
                        }
                        pos.next = pos.next.max(next);
                    }
                }
            }
        }
        out.flush()?;
        if args.exit_at_end
            && positions
                .values()
                .all(|p| p.high_watermark >= 0 && p.next >= p.high_watermark)
        {
            return Ok(());
        }
    }
}

/// Turns earliest / latest / timestamp specs into offsets with ListOffsets at each leader. A
/// timestamp after every record starts at the end, as Kafka's clients do.
fn resolve_starts(
    cluster: &mut Cluster,
    topic: &str,
    start: &Start,
    positions: &mut BTreeMap<i32, Position>,
) -> Result<(), Failure> {
    let timestamp = match start {
        Start::Offset(o) => {
            for p in positions.values_mut() {
                p.next = *o;
            }
            return Ok(());
        }
        Start::Lookup(ts) => *ts,
    };
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for (i, p) in positions.iter() {
        by_leader.entry(p.leader).or_default().push(*i);
    }
    for (leader, parts) in by_leader {
        let found = list_offsets(cluster, topic, leader, &parts, timestamp)?;
        let past_end: Vec<i32> = found
            .iter()
            .filter(|(_, o)| **o < 0)
            .map(|(i, _)| *i)
            .collect();
        let ends = if past_end.is_empty() {
            BTreeMap::new()
        } else {
            list_offsets(cluster, topic, leader, &past_end, LATEST)?
        };
        for (i, o) in found.into_iter().chain(ends).filter(|(_, o)| *o >= 0) {
            if let Some(pos) = positions.get_mut(&i) {
                pos.next = o;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use corebus_wire::record::RecordHeader;

    #[test]
    fn templates_expand_like_kcat() {
        let r = Record {
            length: 0,
            attributes: 0,
            timestamp_delta: 0,
            offset_delta: 0,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![RecordHeader {
                key: Bytes::from_static(b"h"),
                value: Some(Bytes::from_static(b"1")),
            }],
        };
        assert_eq!(
            render("%t/%p@%o %k=%v [%h] %T 100%%\\n", "t", 3, 42, 7, &r),
            "t/3@42 k=v [h=1] 7 100%\n"
        );
    }

    #[test]
    fn offset_specs() {
        assert!(matches!(start_of("earliest"), Ok(Start::Lookup(EARLIEST))));
        assert!(matches!(start_of("latest"), Ok(Start::Lookup(LATEST))));
        assert!(matches!(
            start_of("@1700000000000"),
            Ok(Start::Lookup(1_700_000_000_000))
        ));
        assert!(matches!(start_of("17"), Ok(Start::Offset(17))));
        assert!(start_of("-3").is_err());
        assert!(start_of("soon").is_err());
    }
}
