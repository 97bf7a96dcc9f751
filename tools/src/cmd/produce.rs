//! `produce TOPIC`: one record per line of standard input, sent in batches to each
//! partition's leader. A line may carry headers and a key before the value, split by the
//! separators given; keyed records go where the Java client's default partitioner puts them.

use std::collections::BTreeMap;
use std::io::BufRead;

use bytes::Bytes;
use clap::Args;
use corebus_wire::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use corebus_wire::kafka_protocol::messages::{ProduceRequest, RequestKind, ResponseKind};
use corebus_wire::kafka_protocol::protocol::StrBytes;
use corebus_wire::record::{Compression, RecordBatchBuilder};
use serde_json::json;

use crate::client::{Cluster, error_text};
use crate::output::{Format, Table, print_table};
use crate::partitioner::partition_of;
use crate::{Failure, Outcome};

/// Records per batch before it is sent.
const MAX_BATCH_RECORDS: usize = 10_000;
/// Bytes of keys and values per batch before it is sent (below Kafka's default
/// `message.max.bytes` with room for record overhead).
const MAX_BATCH_BYTES: usize = 512 << 10;
/// How long the broker may take to make a batch durable (`request.timeout.ms`).
const PRODUCE_TIMEOUT_MS: i32 = 30_000;

#[derive(Args)]
pub struct ProduceArgs {
    topic: String,
    /// Partition to write to [default: by key, round-robin per batch without keys]
    #[arg(short, long)]
    partition: Option<i32>,
    /// Splits each line into KEY, SEP, VALUE at the first SEP
    #[arg(short = 'k', long, value_name = "SEP")]
    key_sep: Option<String>,
    /// Splits each line into HEADERS, SEP, rest at the first SEP; HEADERS is
    /// `name=value` pairs joined by `,`
    #[arg(long, value_name = "SEP")]
    header_sep: Option<String>,
    /// A header added to every record, NAME=VALUE; repeatable
    #[arg(short = 'H', long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// all (-1), 1, or 0
    #[arg(long, default_value = "all")]
    acks: String,
    /// none, gzip, snappy, lz4 or zstd
    #[arg(short = 'z', long, default_value = "none")]
    compression: String,
}

/// A record header: name and value.
type Header = (Vec<u8>, Vec<u8>);

/// One record read from a line.
struct Line {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Vec<Header>,
}

fn split_headers(text: &str) -> Result<Vec<Header>, Failure> {
    text.split(',')
        .filter(|h| !h.is_empty())
        .map(|h| {
            h.split_once('=')
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .ok_or_else(|| Failure::Refused(format!("header `{h}` is not NAME=VALUE")))
        })
        .collect()
}

fn parse_line(
    args: &ProduceArgs,
    fixed: &[(Vec<u8>, Vec<u8>)],
    line: &str,
) -> Result<Line, Failure> {
    let mut rest = line;
    let mut headers = fixed.to_vec();
    if let Some(sep) = &args.header_sep {
        let (h, r) = rest.split_once(sep.as_str()).ok_or_else(|| {
            Failure::Refused(format!("line without the header separator: {line}"))
        })?;
        headers.extend(split_headers(h)?);
        rest = r;
    }
    let (key, value) = match &args.key_sep {
        Some(sep) => {
            let (k, v) = rest.split_once(sep.as_str()).ok_or_else(|| {
                Failure::Refused(format!("line without the key separator: {line}"))
            })?;
            (Some(k.as_bytes().to_vec()), v)
        }
        None => (None, rest),
    };
    Ok(Line {
        key,
        value: value.as_bytes().to_vec(),
        headers,
    })
}

fn acks_of(s: &str) -> Result<i16, Failure> {
    match s {
        "all" | "-1" => Ok(-1),
        "1" => Ok(1),
        "0" => Ok(0),
        other => Err(Failure::Refused(format!("--acks {other}: use all, 1 or 0"))),
    }
}

fn compression_of(s: &str) -> Result<Compression, Failure> {
    Ok(match s {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => return Err(Failure::Refused(format!("unknown compression `{other}`"))),
    })
}

/// Totals per partition: records written and the first offset assigned.
#[derive(Default)]
struct Written {
    records: usize,
    first_offset: Option<i64>,
}

struct Producer {
    topic: String,
    topic_id: uuid::Uuid,
    leaders: BTreeMap<i32, i32>,
    acks: i16,
    compression: Compression,
    written: BTreeMap<i32, Written>,
    errors: Vec<String>,
}

impl Producer {
    fn send(
        &mut self,
        cluster: &mut Cluster,
        partition: i32,
        lines: &[Line],
    ) -> Result<(), Failure> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut b = RecordBatchBuilder::new(self.compression);
        for l in lines {
            let headers: Vec<(&[u8], Option<&[u8]>)> = l
                .headers
                .iter()
                .map(|(k, v)| (k.as_slice(), Some(v.as_slice())))
                .collect();
            b.record_with_headers(now, l.key.as_deref(), Some(&l.value), &headers);
        }
        let batch = b
            .build()
            .map_err(|e| Failure::Refused(format!("cannot build a batch: {e}")))?;
        let leader = *self.leaders.get(&partition).ok_or_else(|| {
            Failure::Refused(format!("{}/{partition} does not exist", self.topic))
        })?;
        let data = TopicProduceData::default()
            .with_name(StrBytes::from_string(self.topic.clone()).into())
            .with_topic_id(self.topic_id)
            .with_partition_data(vec![
                PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(Bytes::clone(batch.as_bytes()))),
            ]);
        let request = ProduceRequest::default()
            .with_acks(self.acks)
            .with_timeout_ms(PRODUCE_TIMEOUT_MS)
            .with_topic_data(vec![data]);
        let conn = cluster.broker(leader)?;
        let w = self.written.entry(partition).or_default();
        if self.acks == 0 {
            conn.send_only(RequestKind::Produce(request))?;
            w.records += lines.len();
            return Ok(());
        }
        let ResponseKind::Produce(r) = conn.call(RequestKind::Produce(request))? else {
            return Err(Failure::Refused("Produce got another response kind".into()));
        };
        for p in r.responses.iter().flat_map(|t| &t.partition_responses) {
            if p.error_code != 0 {
                self.errors.push(format!(
                    "{}/{}: {}",
                    self.topic,
                    p.index,
                    error_text(p.error_code, p.error_message.as_ref())
                ));
            } else {
                w.records += lines.len();
                w.first_offset.get_or_insert(p.base_offset);
            }
        }
        Ok(())
    }
}

pub fn run(args: ProduceArgs, brokers: &[String], format: Format) -> Outcome {
    let acks = acks_of(&args.acks)?;
    let compression = compression_of(&args.compression)?;
    let mut fixed = Vec::new();
    for h in &args.headers {
        fixed.extend(split_headers(h)?);
    }
    let mut cluster = Cluster::connect(brokers)?;
    let meta = cluster.metadata_creating(std::slice::from_ref(&args.topic))?;
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
    let leaders: BTreeMap<i32, i32> = topic
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id.0))
        .collect();
    let count = i32::try_from(leaders.len()).unwrap_or(i32::MAX);
    if count == 0 {
        return Err(Failure::Refused(format!(
            "topic {} has no partitions",
            args.topic
        )));
    }
    let mut producer = Producer {
        topic: args.topic.clone(),
        topic_id: topic.topic_id,
        leaders,
        acks,
        compression,
        written: BTreeMap::new(),
        errors: Vec::new(),
    };
    let mut pending: BTreeMap<i32, (Vec<Line>, usize)> = BTreeMap::new();
    let mut round_robin = 0i32;
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line?;
        let rec = parse_line(&args, &fixed, &line)?;
        let partition = match (args.partition, &rec.key) {
            (Some(p), _) => p,
            (None, Some(k)) => partition_of(k, count),
            (None, None) => round_robin,
        };
        let (lines, bytes) = pending.entry(partition).or_default();
        *bytes += rec.value.len() + rec.key.as_ref().map_or(0, Vec::len);
        lines.push(rec);
        if lines.len() >= MAX_BATCH_RECORDS || *bytes >= MAX_BATCH_BYTES {
            let (lines, _) = pending.remove(&partition).unwrap_or_default();
            producer.send(&mut cluster, partition, &lines)?;
            round_robin = (round_robin + 1) % count;
        }
    }
    for (partition, (lines, _)) in std::mem::take(&mut pending) {
        producer.send(&mut cluster, partition, &lines)?;
    }
    let mut table = Table::new(&["partition", "records", "first_offset"]);
    for (p, w) in &producer.written {
        table.row(vec![json!(p), json!(w.records), json!(w.first_offset)]);
    }
    print_table(format, &table);
    if producer.errors.is_empty() {
        Ok(())
    } else {
        Err(Failure::Refused(producer.errors.join("; ")))
    }
}
