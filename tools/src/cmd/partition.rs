//! `partition move|cancel|reassignments|balance`, over AlterPartitionReassignments,
//! ListPartitionReassignments (both answered by the controller Metadata names) and Metadata.
//!
//! `balance` proposes a plan (like `kafka-reassign-partitions --generate`, but one that moves
//! as little as it can): every replica on a broker outside the chosen set moves into it, then
//! replicas move from the most to the least loaded broker until no two differ by more than
//! one, then preferred leaders (first replicas) are reordered the same way without moving
//! data. It prints the plan; `--execute` starts it (the cluster copies in the background,
//! `partition reassignments` shows the moves under way, the controller gives leadership to
//! the preferred replicas at its next balance check).

use std::collections::BTreeMap;

use clap::Subcommand;
use corebus_wire::kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use corebus_wire::kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ListPartitionReassignmentsRequest, RequestKind,
    ResponseKind, TopicName,
};
use corebus_wire::kafka_protocol::protocol::StrBytes;
use serde_json::json;

use crate::client::{Cluster, error_text, kafka_error};
use crate::output::{Format, Table, print_table};
use crate::{Failure, Outcome};

/// How long the controller may take (it answers once its write commits).
const ADMIN_TIMEOUT_MS: i32 = 30_000;

#[derive(Subcommand)]
pub enum PartitionCommand {
    /// Move a partition to other brokers (its replicas become exactly these, in this order)
    Move {
        topic: String,
        partition: i32,
        /// The new replicas, preferred leader first: ID[,ID...]
        #[arg(long, value_delimiter = ',', required = true)]
        replicas: Vec<i32>,
    },
    /// Cancel a partition's move: back to the replicas it had
    Cancel { topic: String, partition: i32 },
    /// Partitions being moved, with the replicas being added and removed
    Reassignments,
    /// Propose moves that spread replicas and preferred leaders evenly over the brokers;
    /// `--execute` starts them
    Balance {
        /// Only this topic; repeatable (default: every topic but internal ones)
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// Spread over these broker ids (default: every broker Metadata lists)
        #[arg(long, value_delimiter = ',')]
        broker_ids: Vec<i32>,
        /// Start the moves (default: only print the plan)
        #[arg(long)]
        execute: bool,
    },
}

pub fn run(command: PartitionCommand, brokers: &[String], format: Format) -> Outcome {
    let mut cluster = Cluster::connect(brokers)?;
    match command {
        PartitionCommand::Move {
            topic,
            partition,
            replicas,
        } => {
            let moves = vec![(topic, partition, Some(replicas))];
            alter(&mut cluster, &moves, format)
        }
        PartitionCommand::Cancel { topic, partition } => {
            alter(&mut cluster, &[(topic, partition, None)], format)
        }
        PartitionCommand::Reassignments => list(&mut cluster, format),
        PartitionCommand::Balance {
            topics,
            broker_ids,
            execute,
        } => balance(&mut cluster, &topics, &broker_ids, execute, format),
    }
}

/// One partition's current replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
}

/// The balancing plan for `current` over `brokers`: (index into `current`, new replicas) for
/// every partition that changes, in `current`'s order. Refused when a partition has more
/// replicas than there are brokers.
pub fn plan(current: &[Current], brokers: &[i32]) -> Result<Vec<(usize, Vec<i32>)>, String> {
    let mut set: Vec<i32> = brokers.to_vec();
    set.sort_unstable();
    set.dedup();
    if set.is_empty() {
        return Err("no brokers to spread the replicas over".into());
    }
    if let Some(c) = current.iter().find(|c| c.replicas.len() > set.len()) {
        return Err(format!(
            "{}-{} has {} replicas, more than the {} brokers",
            c.topic,
            c.partition,
            c.replicas.len(),
            set.len()
        ));
    }
    let mut next: Vec<Vec<i32>> = current.iter().map(|c| c.replicas.clone()).collect();
    let mut load: BTreeMap<i32, usize> = set.iter().map(|b| (*b, 0)).collect();
    for r in next.iter().flatten() {
        if let Some(n) = load.get_mut(r) {
            *n += 1;
        }
    }
    // Replicas outside the set move to the least loaded broker of it they are not on yet.
    for replicas in &mut next {
        for i in 0..replicas.len() {
            if load.contains_key(&replicas[i]) {
                continue;
            }
            let to = least(&load, |b| !replicas.contains(&b)).expect("more brokers than replicas");
            replicas[i] = to;
            *load.get_mut(&to).expect("a broker of the set") += 1;
        }
    }
    // Then from the most to the least loaded broker, one replica at a time.
    spread(&mut load, &mut next, |replicas, from, to| {
        let i = replicas.iter().position(|b| *b == from)?;
        (!replicas.contains(&to)).then(|| replicas[i] = to)
    });
    // Then preferred leaders, by reordering replicas only.
    let mut leads: BTreeMap<i32, usize> = set.iter().map(|b| (*b, 0)).collect();
    for replicas in &next {
        if let Some(n) = replicas.first().and_then(|b| leads.get_mut(b)) {
            *n += 1;
        }
    }
    spread(&mut leads, &mut next, |replicas, from, to| {
        let j = replicas.iter().position(|b| *b == to)?;
        (replicas.first() == Some(&from)).then(|| replicas.swap(0, j))
    });
    Ok(next
        .into_iter()
        .enumerate()
        .filter(|(i, r)| *r != current[*i].replicas)
        .collect())
}

/// The least loaded broker that `ok` accepts (lowest id on ties).
fn least(load: &BTreeMap<i32, usize>, ok: impl Fn(i32) -> bool) -> Option<i32> {
    load.iter()
        .filter(|(b, _)| ok(**b))
        .min_by_key(|(b, n)| (**n, **b))
        .map(|(b, _)| *b)
}

/// Moves one unit of `counts` at a time from the highest count to the lowest (through `shift`
/// on the first partition it accepts) until they differ by at most one or nothing can move.
fn spread(
    counts: &mut BTreeMap<i32, usize>,
    next: &mut [Vec<i32>],
    shift: impl Fn(&mut Vec<i32>, i32, i32) -> Option<()>,
) {
    // Each step lowers the spread; this bounds a bug, not the work.
    for _ in 0..=next.iter().map(Vec::len).sum::<usize>() {
        let Some((&from, &high)) = counts.iter().max_by_key(|(b, n)| (**n, -**b)) else {
            return;
        };
        let Some((&to, &low)) = counts.iter().min_by_key(|(b, n)| (**n, **b)) else {
            return;
        };
        if high <= low + 1 {
            return;
        }
        if !next.iter_mut().any(|r| shift(r, from, to).is_some()) {
            return;
        }
        *counts.get_mut(&from).expect("present") -= 1;
        *counts.get_mut(&to).expect("present") += 1;
    }
}

fn balance(
    cluster: &mut Cluster,
    topics: &[String],
    broker_ids: &[i32],
    execute: bool,
    format: Format,
) -> Outcome {
    let asked = (!topics.is_empty()).then_some(topics);
    let meta = cluster.metadata(asked)?;
    let mut current = Vec::new();
    for t in &meta.topics {
        let name = t.name.as_ref().map_or("", |n| n.as_str()).to_owned();
        if t.error_code != 0 {
            return Err(kafka_error(t.error_code, &format!("topic {name}"), None).into());
        }
        if asked.is_none() && t.is_internal {
            continue;
        }
        for p in &t.partitions {
            current.push(Current {
                topic: name.clone(),
                partition: p.partition_index,
                replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
            });
        }
    }
    current.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let brokers: Vec<i32> = if broker_ids.is_empty() {
        meta.brokers.iter().map(|b| b.node_id.0).collect()
    } else {
        broker_ids.to_vec()
    };
    let moves = plan(&current, &brokers).map_err(Failure::Refused)?;
    let mut table = Table::new(&["topic", "partition", "from", "to"]);
    for (i, to) in &moves {
        let c = &current[*i];
        table.row(vec![
            json!(c.topic),
            json!(c.partition),
            json!(c.replicas),
            json!(to),
        ]);
    }
    if !execute {
        print_table(format, &table);
        return Ok(());
    }
    let asked: Vec<(String, i32, Option<Vec<i32>>)> = moves
        .iter()
        .map(|(i, to)| {
            let c = &current[*i];
            (c.topic.clone(), c.partition, Some(to.clone()))
        })
        .collect();
    if asked.is_empty() {
        print_table(format, &table);
        return Ok(());
    }
    alter(cluster, &asked, format)
}

/// Sends one AlterPartitionReassignments for `asked` (new replicas, or `None` to cancel) to
/// the controller; prints each partition's outcome; refused when any partition was.
fn alter(
    cluster: &mut Cluster,
    asked: &[(String, i32, Option<Vec<i32>>)],
    format: Format,
) -> Outcome {
    let mut topics: Vec<ReassignableTopic> = Vec::new();
    for (topic, partition, replicas) in asked {
        let p = ReassignablePartition::default()
            .with_partition_index(*partition)
            .with_replicas(
                replicas
                    .as_ref()
                    .map(|r| r.iter().map(|b| BrokerId(*b)).collect()),
            );
        match topics.iter_mut().find(|t| *t.name.0 == **topic) {
            Some(t) => t.partitions.push(p),
            None => topics.push(
                ReassignableTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partitions(vec![p]),
            ),
        }
    }
    let request = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_allow_replication_factor_change(true)
        .with_topics(topics);
    let ResponseKind::AlterPartitionReassignments(r) = cluster
        .controller()?
        .call(RequestKind::AlterPartitionReassignments(request))?
    else {
        return Err(Failure::Refused(
            "not an AlterPartitionReassignments answer".into(),
        ));
    };
    if r.error_code != 0 {
        return Err(kafka_error(
            r.error_code,
            "partition reassignment",
            r.error_message.as_ref(),
        )
        .into());
    }
    let mut table = Table::new(&["topic", "partition", "replicas", "result"]);
    let mut failed = 0usize;
    for t in &r.responses {
        for p in &t.partitions {
            let wanted = asked
                .iter()
                .find(|(n, q, _)| *n == *t.name.0 && *q == p.partition_index)
                .and_then(|(_, _, r)| r.clone());
            let result = if p.error_code == 0 {
                if wanted.is_some() {
                    "started"
                } else {
                    "cancelled"
                }
                .to_owned()
            } else {
                failed += 1;
                error_text(p.error_code, p.error_message.as_ref())
            };
            table.row(vec![
                json!(t.name.0.as_str()),
                json!(p.partition_index),
                json!(wanted),
                json!(result),
            ]);
        }
    }
    print_table(format, &table);
    if failed > 0 {
        return Err(Failure::Refused(format!(
            "{failed} partition(s) were not reassigned"
        )));
    }
    Ok(())
}

fn list(cluster: &mut Cluster, format: Format) -> Outcome {
    let request = ListPartitionReassignmentsRequest::default().with_timeout_ms(ADMIN_TIMEOUT_MS);
    let ResponseKind::ListPartitionReassignments(r) = cluster
        .controller()?
        .call(RequestKind::ListPartitionReassignments(request))?
    else {
        return Err(Failure::Refused(
            "not a ListPartitionReassignments answer".into(),
        ));
    };
    if r.error_code != 0 {
        return Err(kafka_error(
            r.error_code,
            "partition reassignments",
            r.error_message.as_ref(),
        )
        .into());
    }
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<_>>();
    let mut table = Table::new(&["topic", "partition", "replicas", "adding", "removing"]);
    for t in &r.topics {
        for p in &t.partitions {
            table.row(vec![
                json!(t.name.0.as_str()),
                json!(p.partition_index),
                json!(ids(&p.replicas)),
                json!(ids(&p.adding_replicas)),
                json!(ids(&p.removing_replicas)),
            ]);
        }
    }
    print_table(format, &table);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(replicas: &[&[i32]]) -> Vec<Current> {
        replicas
            .iter()
            .enumerate()
            .map(|(i, r)| Current {
                topic: "t".into(),
                partition: i as i32,
                replicas: r.to_vec(),
            })
            .collect()
    }

    fn apply(current: &[Current], moves: &[(usize, Vec<i32>)]) -> Vec<Vec<i32>> {
        let mut out: Vec<Vec<i32>> = current.iter().map(|c| c.replicas.clone()).collect();
        for (i, r) in moves {
            out[*i] = r.clone();
        }
        out
    }

    fn spread_of(after: &[Vec<i32>], brokers: &[i32], first_only: bool) -> usize {
        let counts: Vec<usize> = brokers
            .iter()
            .map(|b| {
                after
                    .iter()
                    .filter(|r| {
                        if first_only {
                            r.first() == Some(b)
                        } else {
                            r.contains(b)
                        }
                    })
                    .count()
            })
            .collect();
        counts.iter().max().unwrap() - counts.iter().min().unwrap()
    }

    #[test]
    fn a_new_broker_gets_its_share_and_leaders_spread() {
        // Six partitions of two replicas on brokers 1 and 2; broker 3 joins.
        let current = parts(&[&[1, 2], &[2, 1], &[1, 2], &[2, 1], &[1, 2], &[2, 1]]);
        let moves = plan(&current, &[1, 2, 3]).unwrap();
        let after = apply(&current, &moves);
        for r in &after {
            let mut s = r.clone();
            s.sort();
            s.dedup();
            assert_eq!(s.len(), 2, "distinct replicas: {r:?}");
        }
        assert_eq!(spread_of(&after, &[1, 2, 3], false), 0, "{after:?}");
        assert!(spread_of(&after, &[1, 2, 3], true) <= 1, "{after:?}");
        // Only what had to move did: 4 replicas onto broker 3.
        let moved: usize = after
            .iter()
            .zip(&current)
            .map(|(a, c)| a.iter().filter(|b| !c.replicas.contains(b)).count())
            .sum();
        assert_eq!(moved, 4, "{after:?}");
    }

    #[test]
    fn a_balanced_cluster_needs_no_moves_and_a_leaving_broker_is_emptied() {
        let current = parts(&[&[1, 2], &[2, 3], &[3, 1]]);
        assert_eq!(plan(&current, &[1, 2, 3]).unwrap(), vec![]);
        let moves = plan(&current, &[1, 2]).unwrap();
        let after = apply(&current, &moves);
        assert!(after.iter().all(|r| !r.contains(&3)), "{after:?}");
        assert!(
            after.iter().all(|r| r.len() == 2 && r[0] != r[1]),
            "{after:?}"
        );
        assert!(spread_of(&after, &[1, 2], true) <= 1, "{after:?}");
    }

    #[test]
    fn more_replicas_than_brokers_is_refused() {
        let current = parts(&[&[1, 2, 3]]);
        assert!(plan(&current, &[1, 2]).is_err());
        assert!(plan(&current, &[]).is_err());
    }
}
