//! `cluster info` and `cluster health`, from Metadata (any Kafka broker answers it).

use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::{Cluster, kafka_error};
use crate::output::{Format, Section, Table, print_sections};
use crate::{Failure, Outcome};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Brokers, controller and cluster id
    Info,
    /// Partitions without a leader or with fewer in-sync replicas than replicas; exit 1 when
    /// any partition is unhealthy
    Health,
}

pub fn run(command: ClusterCommand, brokers: &[String], format: Format) -> Outcome {
    let mut cluster = Cluster::connect(brokers)?;
    let meta = cluster.metadata(None)?;
    match command {
        ClusterCommand::Info => {
            let mut table = Table::new(&["id", "host", "port", "rack", "controller"]);
            for b in &meta.brokers {
                table.row(vec![
                    json!(b.node_id.0),
                    json!(b.host.as_str()),
                    json!(b.port),
                    b.rack.as_ref().map_or(Value::Null, |r| json!(r.as_str())),
                    json!(b.node_id == meta.controller_id),
                ]);
            }
            let cluster_id = meta
                .cluster_id
                .as_ref()
                .map_or(Value::Null, |c| json!(c.as_str()));
            print_sections(
                format,
                &[
                    ("cluster_id", Section::Value(cluster_id)),
                    ("controller", Section::Value(json!(meta.controller_id.0))),
                    ("topics", Section::Value(json!(meta.topics.len()))),
                    ("brokers", Section::Table(table)),
                ],
            );
            Ok(())
        }
        ClusterCommand::Health => {
            let mut problems = Table::new(&["topic", "partition", "problem"]);
            let mut partitions = 0usize;
            for t in &meta.topics {
                let name = t.name.as_ref().map_or("", |n| n.as_str());
                if t.error_code != 0 {
                    let e = kafka_error(t.error_code, "topic metadata", None);
                    problems.row(vec![json!(name), Value::Null, json!(e.to_string())]);
                    continue;
                }
                for p in &t.partitions {
                    partitions += 1;
                    let problem = if p.leader_id.0 < 0 {
                        Some("no leader".to_owned())
                    } else if p.isr_nodes.len() < p.replica_nodes.len() {
                        Some(format!(
                            "under-replicated: {} of {} replicas in sync",
                            p.isr_nodes.len(),
                            p.replica_nodes.len()
                        ))
                    } else if !p.offline_replicas.is_empty() {
                        Some(format!("{} offline replicas", p.offline_replicas.len()))
                    } else {
                        None
                    };
                    if let Some(problem) = problem {
                        problems.row(vec![json!(name), json!(p.partition_index), json!(problem)]);
                    }
                }
            }
            let healthy = problems.is_empty();
            print_sections(
                format,
                &[
                    ("healthy", Section::Value(json!(healthy))),
                    ("brokers", Section::Value(json!(meta.brokers.len()))),
                    ("partitions", Section::Value(json!(partitions))),
                    ("problems", Section::Table(problems)),
                ],
            );
            if healthy {
                Ok(())
            } else {
                Err(Failure::Refused("the cluster is not healthy".into()))
            }
        }
    }
}
