//! `group list|describe|delete|seek`: consumer groups over ListGroups, FindCoordinator,
//! DescribeGroups, OffsetFetch, ListOffsets, DeleteGroups and OffsetCommit, as
//! `kafka-consumer-groups` and `rpk group` do.
//!
//! `seek` commits new offsets as a client that only stores offsets (generation -1, no member
//! id), which a coordinator accepts for an empty group only; like Kafka's tool it refuses
//! before asking when the group has members, since their next commit would undo the reset.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Buf;
use clap::{Args, Subcommand};
use corebus_wire::kafka_protocol::messages::consumer_protocol_assignment::ConsumerProtocolAssignment;
use corebus_wire::kafka_protocol::messages::describe_groups_response::DescribedGroup;
use corebus_wire::kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use corebus_wire::kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use corebus_wire::kafka_protocol::messages::{
    ApiKey, DeleteGroupsRequest, DescribeGroupsRequest, GroupId, ListGroupsRequest,
    OffsetCommitRequest, OffsetFetchRequest, RequestKind, ResponseKind,
};
use corebus_wire::kafka_protocol::protocol::{Decodable, Message, StrBytes};
use serde_json::{Value, json};

use crate::client::{Cluster, error_text, kafka_error};
use crate::offsets::{EARLIEST, LATEST, TopicPartition, leaders, offsets_at};
use crate::output::{Format, Section, Table, print_reports, print_table};
use crate::{Failure, Outcome};

/// The group states in which a group has no members, so its offsets may be reset.
const INACTIVE_STATES: [&str; 2] = ["Empty", "Dead"];
/// The protocol type of consumer groups, whose assignments this tool can read.
const CONSUMER_PROTOCOL: &str = "consumer";
/// OffsetFetch's "no committed offset" value.
const NO_OFFSET: i64 = -1;
/// The first OffsetFetch version that asks for groups as an array.
const OFFSET_FETCH_GROUPS_VERSION: i16 = 8;

#[derive(Subcommand)]
pub enum GroupCommand {
    /// Groups on every broker, with their protocol type and state
    List,
    /// Members with their assignments, and per partition the committed offset, the log end
    /// offset and the lag
    Describe {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Delete groups and their committed offsets (only groups without members)
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Reset a group's committed offsets; refused while the group has members
    Seek(SeekArgs),
}

#[derive(Args)]
pub struct SeekArgs {
    group: String,
    /// earliest, latest, or an offset (clamped to the partition's log start and end)
    #[arg(
        long,
        required_unless_present = "to_timestamp",
        conflicts_with = "to_timestamp"
    )]
    to: Option<String>,
    /// The first offset whose record is at or after this time (ms since the epoch); the log
    /// end where no record is that recent
    #[arg(long, value_name = "MS")]
    to_timestamp: Option<i64>,
    /// Reset this topic's partitions only; repeatable [default: every topic the group has
    /// committed offsets for]
    #[arg(long = "topic")]
    topics: Vec<String>,
    /// Show the new offsets without committing them
    #[arg(long)]
    dry_run: bool,
}

/// Where `seek` moves each partition.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Earliest,
    Latest,
    Offset(i64),
    Timestamp(i64),
}

fn target_of(args: &SeekArgs) -> Result<Target, Failure> {
    if let Some(ts) = args.to_timestamp {
        return if ts >= 0 {
            Ok(Target::Timestamp(ts))
        } else {
            Err(Failure::Refused(format!(
                "--to-timestamp {ts}: give milliseconds since the epoch"
            )))
        };
    }
    let spec = args.to.as_deref().unwrap_or_default();
    match spec {
        "earliest" | "beginning" => Ok(Target::Earliest),
        "latest" | "end" => Ok(Target::Latest),
        s => s
            .parse::<i64>()
            .ok()
            .filter(|o| *o >= 0)
            .map(Target::Offset)
            .ok_or_else(|| {
                Failure::Refused(format!("--to {spec}: use earliest, latest or an offset"))
            }),
    }
}

fn unexpected(what: &str) -> Failure {
    Failure::Refused(format!(
        "the broker answered {what} with another response kind"
    ))
}

fn group_id(g: &str) -> GroupId {
    StrBytes::from_string(g.to_owned()).into()
}

pub fn run(command: GroupCommand, brokers: &[String], format: Format) -> Outcome {
    let mut cluster = Cluster::connect(brokers)?;
    match command {
        GroupCommand::List => list(&mut cluster, format),
        GroupCommand::Describe { groups } => describe(&mut cluster, &groups, format),
        GroupCommand::Delete { groups } => delete(&mut cluster, &groups, format),
        GroupCommand::Seek(args) => seek(&mut cluster, &args, format),
    }
}

fn list(cluster: &mut Cluster, format: Format) -> Outcome {
    let meta = cluster.metadata(None)?;
    let mut ids: Vec<i32> = meta.brokers.iter().map(|b| b.node_id.0).collect();
    ids.sort_unstable();
    // Each broker lists the groups it coordinates (as Kafka's admin client asks every one).
    let mut rows = BTreeMap::new();
    for id in ids {
        let ResponseKind::ListGroups(r) = cluster
            .broker(id)?
            .call(RequestKind::ListGroups(ListGroupsRequest::default()))?
        else {
            return Err(unexpected("ListGroups"));
        };
        if r.error_code != 0 {
            return Err(
                kafka_error(r.error_code, &format!("ListGroups at broker {id}"), None).into(),
            );
        }
        for g in r.groups {
            let state = (!g.group_state.is_empty()).then(|| g.group_state.to_string());
            let row = vec![
                json!(g.group_id.as_str()),
                json!(g.protocol_type.as_str()),
                json!(state),
                json!(id),
            ];
            rows.insert(g.group_id.to_string(), row);
        }
    }
    let mut table = Table::new(&["group", "protocol_type", "state", "coordinator"]);
    for row in rows.into_values() {
        table.row(row);
    }
    print_table(format, &table);
    Ok(())
}

/// DescribeGroups of one group at its coordinator; `None` when the group does not exist.
fn describe_one(
    cluster: &mut Cluster,
    coordinator: i32,
    group: &str,
) -> Result<Option<DescribedGroup>, Failure> {
    let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
    let ResponseKind::DescribeGroups(r) = cluster
        .broker(coordinator)?
        .call(RequestKind::DescribeGroups(request))?
    else {
        return Err(unexpected("DescribeGroups"));
    };
    let Some(d) = r.groups.into_iter().find(|d| d.group_id.as_str() == group) else {
        return Err(Failure::Refused(format!(
            "DescribeGroups did not answer for group {group}"
        )));
    };
    let not_found = corebus_wire::error_code::ResponseError::GroupIdNotFound.code();
    if d.error_code == not_found || (d.error_code == 0 && d.group_state.as_str() == "Dead") {
        return Ok(None);
    }
    if d.error_code != 0 {
        return Err(kafka_error(
            d.error_code,
            &format!("describe group {group}"),
            d.error_message.as_ref(),
        )
        .into());
    }
    Ok(Some(d))
}

/// The group's committed offsets (every topic), from OffsetFetch in the shape of either side
/// of v8.
fn committed_offsets(
    cluster: &mut Cluster,
    coordinator: i32,
    group: &str,
) -> Result<BTreeMap<TopicPartition, i64>, Failure> {
    let conn = cluster.broker(coordinator)?;
    // The encoder refuses a field the chosen version does not have: v8 moved to `groups`.
    let request = if conn.version(ApiKey::OffsetFetch)? >= OFFSET_FETCH_GROUPS_VERSION {
        OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(group_id(group))
                .with_topics(None),
        ])
    } else {
        OffsetFetchRequest::default()
            .with_group_id(group_id(group))
            .with_topics(None)
    };
    let ResponseKind::OffsetFetch(r) = conn.call(RequestKind::OffsetFetch(request))? else {
        return Err(unexpected("OffsetFetch"));
    };
    // The two shapes are different generated types with the same fields.
    macro_rules! rows_of {
        ($topics:expr) => {
            $topics
                .into_iter()
                .flat_map(|t| {
                    let name = t.name.to_string();
                    t.partitions.into_iter().map(move |p| {
                        let at = (name.clone(), p.partition_index);
                        (at, p.committed_offset, p.error_code)
                    })
                })
                .collect::<Vec<_>>()
        };
    }
    let (rows, code) = match r.groups.into_iter().find(|g| g.group_id.as_str() == group) {
        Some(g) => (rows_of!(g.topics), g.error_code),
        None => (rows_of!(r.topics), r.error_code),
    };
    if code != 0 {
        return Err(kafka_error(code, &format!("offsets of group {group}"), None).into());
    }
    let mut out = BTreeMap::new();
    for (at, offset, error) in rows {
        if error != 0 {
            let context = format!("offset of group {group} at {}/{}", at.0, at.1);
            return Err(kafka_error(error, &context, None).into());
        }
        if offset != NO_OFFSET {
            out.insert(at, offset);
        }
    }
    Ok(out)
}

/// A consumer member's assigned partitions, from the consumer protocol's assignment bytes
/// (a version, then ConsumerProtocolAssignment); empty while the group rebalances.
fn assignment(bytes: &bytes::Bytes) -> Result<Vec<TopicPartition>, String> {
    let mut buf = bytes.clone();
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    if buf.remaining() < 2 {
        return Err("assignment shorter than its version".into());
    }
    // Newer versions only add fields: read them as the newest this build knows.
    let version = buf
        .get_i16()
        .clamp(0, <ConsumerProtocolAssignment as Message>::VERSIONS.max);
    let a = ConsumerProtocolAssignment::decode(&mut buf, version).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for t in a.assigned_partitions {
        for p in t.partitions {
            out.push((t.topic.to_string(), p));
        }
    }
    out.sort();
    Ok(out)
}

/// `topic:0,1 other:3` for a member's partitions.
fn assignment_text(parts: &[TopicPartition]) -> Vec<String> {
    let mut by_topic: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (t, p) in parts {
        by_topic.entry(t).or_default().push(p.to_string());
    }
    by_topic
        .into_iter()
        .map(|(t, ps)| format!("{t}:{}", ps.join(",")))
        .collect()
}

/// The leaders of `topics`' partitions (topics the cluster no longer knows are left out).
fn partition_leaders(
    cluster: &mut Cluster,
    topics: &BTreeSet<String>,
) -> Result<BTreeMap<TopicPartition, i32>, Failure> {
    if topics.is_empty() {
        return Ok(BTreeMap::new());
    }
    let names: Vec<String> = topics.iter().cloned().collect();
    let meta = cluster.metadata(Some(&names))?;
    Ok(leaders(&meta))
}

struct Described {
    group: String,
    state: String,
    protocol_type: String,
    protocol: String,
    members: Table,
    offsets: Table,
    total_lag: i64,
}

fn describe_group(cluster: &mut Cluster, group: &str) -> Result<Described, Failure> {
    let coordinator = cluster.coordinator(group)?;
    let Some(d) = describe_one(cluster, coordinator, group)? else {
        return Err(Failure::Refused(format!("group {group} does not exist")));
    };
    let committed = committed_offsets(cluster, coordinator, group)?;

    let mut members = Table::new(&[
        "member_id",
        "instance_id",
        "client_id",
        "host",
        "assignment",
    ]);
    let mut owner: BTreeMap<TopicPartition, (String, String, String)> = BTreeMap::new();
    for m in &d.members {
        let parts = if d.protocol_type.as_str() == CONSUMER_PROTOCOL {
            assignment(&m.member_assignment).map_err(|e| {
                Failure::Refused(format!(
                    "member {} of {group} has an unreadable assignment: {e}",
                    m.member_id.as_str()
                ))
            })?
        } else {
            Vec::new()
        };
        for tp in &parts {
            owner.insert(
                tp.clone(),
                (
                    m.member_id.to_string(),
                    m.client_id.to_string(),
                    m.client_host.to_string(),
                ),
            );
        }
        members.row(vec![
            json!(m.member_id.as_str()),
            json!(m.group_instance_id.as_ref().map(|i| i.as_str())),
            json!(m.client_id.as_str()),
            json!(m.client_host.as_str()),
            json!(assignment_text(&parts)),
        ]);
    }

    let partitions: BTreeSet<TopicPartition> =
        committed.keys().chain(owner.keys()).cloned().collect();
    let topics: BTreeSet<String> = partitions.iter().map(|(t, _)| t.clone()).collect();
    let leaders = partition_leaders(cluster, &topics)?;
    let known: Vec<TopicPartition> = partitions
        .iter()
        .filter(|tp| leaders.get(*tp).is_some_and(|l| *l >= 0))
        .cloned()
        .collect();
    let ends = offsets_at(cluster, &leaders, &known, LATEST)?;

    let mut offsets = Table::new(&[
        "topic",
        "partition",
        "committed",
        "log_end",
        "lag",
        "member_id",
        "client_id",
        "host",
    ]);
    let mut total_lag = 0i64;
    for tp in &partitions {
        let current = committed.get(tp).copied();
        let end = ends.get(tp).copied().filter(|o| *o >= 0);
        // A committed offset past the end (after records were deleted) is no lag, not negative.
        let lag = current.zip(end).map(|(c, e)| (e - c).max(0));
        total_lag += lag.unwrap_or(0);
        let (member, client, host) = match owner.get(tp) {
            Some((m, c, h)) => (json!(m), json!(c), json!(h)),
            None => (Value::Null, Value::Null, Value::Null),
        };
        offsets.row(vec![
            json!(tp.0),
            json!(tp.1),
            json!(current),
            json!(end),
            json!(lag),
            member,
            client,
            host,
        ]);
    }
    Ok(Described {
        group: group.to_owned(),
        state: d.group_state.to_string(),
        protocol_type: d.protocol_type.to_string(),
        protocol: d.protocol_data.to_string(),
        members,
        offsets,
        total_lag,
    })
}

fn describe(cluster: &mut Cluster, groups: &[String], format: Format) -> Outcome {
    let mut reports = Vec::new();
    for g in groups {
        let d = describe_group(cluster, g)?;
        reports.push(vec![
            ("group", Section::Value(json!(d.group))),
            ("state", Section::Value(json!(d.state))),
            ("protocol_type", Section::Value(json!(d.protocol_type))),
            ("protocol", Section::Value(json!(d.protocol))),
            ("total_lag", Section::Value(json!(d.total_lag))),
            ("members", Section::Table(d.members)),
            ("offsets", Section::Table(d.offsets)),
        ]);
    }
    print_reports(format, &reports);
    Ok(())
}

fn delete(cluster: &mut Cluster, groups: &[String], format: Format) -> Outcome {
    let mut table = Table::new(&["group", "error"]);
    let mut failed = 0;
    for g in groups {
        let coordinator = cluster.coordinator(g)?;
        let request = DeleteGroupsRequest::default().with_groups_names(vec![group_id(g)]);
        let ResponseKind::DeleteGroups(r) = cluster
            .broker(coordinator)?
            .call(RequestKind::DeleteGroups(request))?
        else {
            return Err(unexpected("DeleteGroups"));
        };
        for x in r.results {
            failed += usize::from(x.error_code != 0);
            let error = (x.error_code != 0).then(|| error_text(x.error_code, None));
            table.row(vec![json!(x.group_id.as_str()), json!(error)]);
        }
    }
    print_table(format, &table);
    if failed > 0 {
        Err(Failure::Refused(format!("{failed} group deletions failed")))
    } else {
        Ok(())
    }
}

fn seek(cluster: &mut Cluster, args: &SeekArgs, format: Format) -> Outcome {
    let target = target_of(args)?;
    let group = args.group.as_str();
    let coordinator = cluster.coordinator(group)?;
    if let Some(d) = describe_one(cluster, coordinator, group)?
        && (!INACTIVE_STATES.contains(&d.group_state.as_str()) || !d.members.is_empty())
    {
        return Err(Failure::Refused(format!(
            "group {group} is {} with {} active members: offsets can only be reset while the \
             group is inactive; stop its consumers first",
            d.group_state.as_str(),
            d.members.len()
        )));
    }
    let committed = committed_offsets(cluster, coordinator, group)?;

    let partitions: Vec<TopicPartition> = if args.topics.is_empty() {
        if committed.is_empty() {
            return Err(Failure::Refused(format!(
                "group {group} has no committed offsets: name the topics with --topic"
            )));
        }
        committed.keys().cloned().collect()
    } else {
        let meta = cluster.metadata(Some(&args.topics))?;
        for t in &meta.topics {
            if t.error_code != 0 {
                let n = t.name.as_ref().map_or("?", |n| n.as_str());
                return Err(kafka_error(t.error_code, &format!("topic {n}"), None).into());
            }
        }
        leaders(&meta).into_keys().collect()
    };
    let topics: BTreeSet<String> = partitions.iter().map(|(t, _)| t.clone()).collect();
    let leaders = partition_leaders(cluster, &topics)?;
    let new = match target {
        Target::Earliest => offsets_at(cluster, &leaders, &partitions, EARLIEST)?,
        Target::Latest => offsets_at(cluster, &leaders, &partitions, LATEST)?,
        Target::Offset(o) => {
            let starts = offsets_at(cluster, &leaders, &partitions, EARLIEST)?;
            let ends = offsets_at(cluster, &leaders, &partitions, LATEST)?;
            partitions
                .iter()
                .map(|tp| {
                    let lo = starts.get(tp).copied().unwrap_or(0);
                    let hi = ends.get(tp).copied().unwrap_or(lo).max(lo);
                    (tp.clone(), o.clamp(lo, hi))
                })
                .collect()
        }
        Target::Timestamp(ts) => {
            let found = offsets_at(cluster, &leaders, &partitions, ts)?;
            let ends = offsets_at(cluster, &leaders, &partitions, LATEST)?;
            found
                .into_iter()
                .map(|(tp, o)| {
                    let o = if o < 0 {
                        ends.get(&tp).copied().unwrap_or(0)
                    } else {
                        o
                    };
                    (tp, o)
                })
                .collect()
        }
    };

    let mut errors: BTreeMap<TopicPartition, i16> = BTreeMap::new();
    if !args.dry_run {
        let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for ((t, p), o) in &new {
            by_topic.entry(t).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*p)
                    .with_committed_offset(*o),
            );
        }
        let request = OffsetCommitRequest::default()
            .with_group_id(group_id(group))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::from_static_str(""))
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(StrBytes::from_string(t.to_owned()).into())
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let ResponseKind::OffsetCommit(r) = cluster
            .broker(coordinator)?
            .call(RequestKind::OffsetCommit(request))?
        else {
            return Err(unexpected("OffsetCommit"));
        };
        for t in r.topics {
            for p in t.partitions {
                if p.error_code != 0 {
                    errors.insert((t.name.to_string(), p.partition_index), p.error_code);
                }
            }
        }
    }

    let mut table = Table::new(&["topic", "partition", "old", "new", "error"]);
    for (tp, o) in &new {
        table.row(vec![
            json!(tp.0),
            json!(tp.1),
            json!(committed.get(tp)),
            json!(o),
            json!(errors.get(tp).map(|c| error_text(*c, None))),
        ]);
    }
    print_table(format, &table);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Failure::Refused(format!(
            "{} partitions of group {group} were not reset",
            errors.len()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use corebus_wire::kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
    use corebus_wire::kafka_protocol::protocol::Encodable;

    fn seek_args(to: Option<&str>, ts: Option<i64>) -> SeekArgs {
        SeekArgs {
            group: "g".into(),
            to: to.map(str::to_owned),
            to_timestamp: ts,
            topics: vec![],
            dry_run: false,
        }
    }

    #[test]
    fn seek_targets() {
        assert_eq!(
            target_of(&seek_args(Some("earliest"), None)).ok(),
            Some(Target::Earliest)
        );
        assert_eq!(
            target_of(&seek_args(Some("latest"), None)).ok(),
            Some(Target::Latest)
        );
        assert_eq!(
            target_of(&seek_args(Some("42"), None)).ok(),
            Some(Target::Offset(42))
        );
        assert_eq!(
            target_of(&seek_args(None, Some(7))).ok(),
            Some(Target::Timestamp(7))
        );
        assert!(target_of(&seek_args(Some("-1"), None)).is_err());
        assert!(target_of(&seek_args(Some("soon"), None)).is_err());
        assert!(target_of(&seek_args(None, Some(-5))).is_err());
    }

    #[test]
    fn assignments_decode_as_the_consumer_protocol_writes_them() {
        let a = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            AssignedTopic::default()
                .with_topic(StrBytes::from_static_str("b").into())
                .with_partitions(vec![2, 0]),
            AssignedTopic::default()
                .with_topic(StrBytes::from_static_str("a").into())
                .with_partitions(vec![1]),
        ]);
        let mut buf = BytesMut::new();
        buf.put_i16(1);
        a.encode(&mut buf, 1).expect("encodes");
        let parts = assignment(&buf.freeze()).expect("decodes");
        assert_eq!(
            parts,
            vec![("a".into(), 1), ("b".into(), 0), ("b".into(), 2)]
        );
        assert_eq!(assignment_text(&parts), vec!["a:1", "b:0,2"]);
        assert_eq!(assignment(&bytes::Bytes::new()), Ok(vec![]));
        assert!(assignment(&bytes::Bytes::from_static(&[0])).is_err());
        assert!(assignment(&bytes::Bytes::from_static(&[0, 1, 0, 0, 0, 9])).is_err());
    }
}
