//! `topic create|delete|list|describe|alter-config|add-partitions`, over CreateTopics,
//! DeleteTopics, Metadata, DescribeConfigs, IncrementalAlterConfigs and CreatePartitions.
//! The writes go to the controller Metadata names (as Kafka's admin clients send them: a
//! broker that is not the controller answers NOT_CONTROLLER), reads to any broker.

use clap::{Args, Subcommand};
use corebus_wire::kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use corebus_wire::kafka_protocol::messages::create_topics_request::{
    CreatableTopic, CreatableTopicConfig,
};
use corebus_wire::kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use corebus_wire::kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use corebus_wire::kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use corebus_wire::kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, MetadataResponse, RequestKind, ResponseKind, TopicName,
};
use corebus_wire::kafka_protocol::protocol::StrBytes;
use serde_json::{Value, json};

use crate::client::{Cluster, error_text, kafka_error};
use crate::output::{Format, Section, Table, print_reports, print_table};
use crate::{Failure, Outcome};

/// How long the cluster may take to create, delete or grow topics.
const ADMIN_TIMEOUT_MS: i32 = 30_000;
/// ConfigResource type of a topic (Kafka's `ConfigResource.Type.TOPIC`).
const RESOURCE_TOPIC: i8 = 2;
/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
/// DescribeConfigs `config_source` values, by Kafka's numbering.
const CONFIG_SOURCES: [&str; 9] = [
    "unknown",
    "dynamic-topic",
    "dynamic-broker",
    "dynamic-default-broker",
    "static-broker",
    "default",
    "dynamic-broker-logger",
    "client-metrics",
    "group",
];

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create topics
    Create(CreateArgs),
    /// Delete topics
    Delete {
        #[arg(required = true)]
        topics: Vec<String>,
    },
    /// List topics
    List {
        /// Include internal topics (__consumer_offsets)
        #[arg(long)]
        internal: bool,
    },
    /// Partitions (leader, replicas, in-sync replicas) and configs of topics
    Describe {
        #[arg(required = true)]
        topics: Vec<String>,
    },
    /// Set or delete topic configs
    AlterConfig {
        topic: String,
        /// KEY=VALUE to set; repeatable
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// KEY to reset to the broker default; repeatable
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Raise a topic's partition count
    AddPartitions {
        topic: String,
        /// The new total number of partitions
        #[arg(long)]
        total: i32,
    },
}

#[derive(Args)]
pub struct CreateArgs {
    #[arg(required = true)]
    topics: Vec<String>,
    /// Partitions per topic (-1: the broker's num.partitions)
    #[arg(short, long, default_value_t = -1, allow_negative_numbers = true)]
    partitions: i32,
    /// Replication factor (-1: the broker's default.replication.factor)
    #[arg(short, long, default_value_t = -1, allow_negative_numbers = true)]
    replicas: i16,
    /// Topic config KEY=VALUE; repeatable
    #[arg(short = 'c', long = "config", value_name = "KEY=VALUE")]
    configs: Vec<String>,
    /// Ask the cluster to validate only
    #[arg(long)]
    dry_run: bool,
}

fn name(n: &str) -> TopicName {
    StrBytes::from_string(n.to_owned()).into()
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

fn key_value(kv: &str) -> Result<(&str, &str), Failure> {
    kv.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| Failure::Refused(format!("`{kv}` is not KEY=VALUE")))
}

fn unexpected(what: &str) -> Failure {
    Failure::Refused(format!(
        "the broker answered {what} with another response kind"
    ))
}

pub fn run(command: TopicCommand, brokers: &[String], format: Format) -> Outcome {
    let mut cluster = Cluster::connect(brokers)?;
    match command {
        TopicCommand::Create(args) => create(&mut cluster, args, format),
        TopicCommand::Delete { topics } => delete(&mut cluster, &topics, format),
        TopicCommand::List { internal } => list(&mut cluster, internal, format),
        TopicCommand::Describe { topics } => describe(&mut cluster, &topics, format),
        TopicCommand::AlterConfig { topic, set, delete } => {
            alter_config(&mut cluster, &topic, &set, &delete, format)
        }
        TopicCommand::AddPartitions { topic, total } => {
            add_partitions(&mut cluster, &topic, total, format)
        }
    }
}

/// Prints one result row per topic and fails when any topic failed.
fn report(format: Format, table: &Table, failed: usize, what: &str) -> Outcome {
    print_table(format, table);
    if failed > 0 {
        Err(Failure::Refused(format!("{failed} {what} failed")))
    } else {
        Ok(())
    }
}

fn error_cell(code: i16, message: Option<&StrBytes>) -> Value {
    if code == 0 {
        Value::Null
    } else {
        json!(error_text(code, message))
    }
}

fn create(cluster: &mut Cluster, args: CreateArgs, format: Format) -> Outcome {
    let mut configs = Vec::new();
    for kv in &args.configs {
        let (k, v) = key_value(kv)?;
        configs.push(
            CreatableTopicConfig::default()
                .with_name(str_bytes(k))
                .with_value(Some(str_bytes(v))),
        );
    }
    let topics = args
        .topics
        .iter()
        .map(|t| {
            CreatableTopic::default()
                .with_name(name(t))
                .with_num_partitions(args.partitions)
                .with_replication_factor(args.replicas)
                .with_configs(configs.clone())
        })
        .collect();
    let request = CreateTopicsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_validate_only(args.dry_run);
    let ResponseKind::CreateTopics(r) = cluster
        .controller()?
        .call(RequestKind::CreateTopics(request))?
    else {
        return Err(unexpected("CreateTopics"));
    };
    let mut table = Table::new(&["topic", "id", "partitions", "replicas", "error"]);
    let mut failed = 0;
    for t in &r.topics {
        failed += usize::from(t.error_code != 0);
        table.row(vec![
            json!(t.name.as_str()),
            json!(t.topic_id.to_string()),
            json!(t.num_partitions),
            json!(t.replication_factor),
            error_cell(t.error_code, t.error_message.as_ref()),
        ]);
    }
    report(format, &table, failed, "topic creations")
}

fn delete(cluster: &mut Cluster, topics: &[String], format: Format) -> Outcome {
    let request = DeleteTopicsRequest::default()
        .with_topic_names(topics.iter().map(|t| name(t)).collect())
        .with_topics(
            topics
                .iter()
                .map(|t| DeleteTopicState::default().with_name(Some(name(t))))
                .collect(),
        )
        .with_timeout_ms(ADMIN_TIMEOUT_MS);
    let ResponseKind::DeleteTopics(r) = cluster
        .controller()?
        .call(RequestKind::DeleteTopics(request))?
    else {
        return Err(unexpected("DeleteTopics"));
    };
    let mut table = Table::new(&["topic", "error"]);
    let mut failed = 0;
    for t in &r.responses {
        failed += usize::from(t.error_code != 0);
        table.row(vec![
            t.name.as_ref().map_or(Value::Null, |n| json!(n.as_str())),
            error_cell(t.error_code, t.error_message.as_ref()),
        ]);
    }
    report(format, &table, failed, "topic deletions")
}

fn list(cluster: &mut Cluster, internal: bool, format: Format) -> Outcome {
    let meta = cluster.metadata(None)?;
    let mut table = Table::new(&["name", "partitions", "replicas", "internal"]);
    let mut topics: Vec<_> = meta
        .topics
        .iter()
        .filter(|t| internal || !t.is_internal)
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    for t in topics {
        let replicas = t.partitions.first().map_or(0, |p| p.replica_nodes.len());
        table.row(vec![
            t.name.as_ref().map_or(Value::Null, |n| json!(n.as_str())),
            json!(t.partitions.len()),
            json!(replicas),
            json!(t.is_internal),
        ]);
    }
    print_table(format, &table);
    Ok(())
}

/// The topics of `meta`, failing on the first that the cluster does not know.
fn check_topics(meta: &MetadataResponse) -> Result<(), Failure> {
    for t in &meta.topics {
        if t.error_code != 0 {
            let n = t.name.as_ref().map_or("?", |n| n.as_str());
            return Err(kafka_error(t.error_code, &format!("topic {n}"), None).into());
        }
    }
    Ok(())
}

fn describe(cluster: &mut Cluster, topics: &[String], format: Format) -> Outcome {
    let meta = cluster.metadata(Some(topics))?;
    check_topics(&meta)?;
    let resources = topics
        .iter()
        .map(|t| {
            DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(str_bytes(t))
                .with_configuration_keys(None)
        })
        .collect();
    let request = DescribeConfigsRequest::default().with_resources(resources);
    let ResponseKind::DescribeConfigs(configs) =
        cluster.any().call(RequestKind::DescribeConfigs(request))?
    else {
        return Err(unexpected("DescribeConfigs"));
    };
    let mut reports = Vec::new();
    for t in &meta.topics {
        let topic = t.name.as_ref().map_or("", |n| n.as_str()).to_owned();
        let mut parts = Table::new(&["partition", "leader", "epoch", "replicas", "isr"]);
        let mut ps: Vec<_> = t.partitions.iter().collect();
        ps.sort_by_key(|p| p.partition_index);
        for p in ps {
            parts.row(vec![
                json!(p.partition_index),
                json!(p.leader_id.0),
                json!(p.leader_epoch),
                json!(p.replica_nodes.iter().map(|b| b.0).collect::<Vec<_>>()),
                json!(p.isr_nodes.iter().map(|b| b.0).collect::<Vec<_>>()),
            ]);
        }
        let mut cfg = Table::new(&["name", "value", "source"]);
        if let Some(r) = configs
            .results
            .iter()
            .find(|r| r.resource_name.as_str() == topic)
        {
            if r.error_code != 0 {
                return Err(kafka_error(
                    r.error_code,
                    &format!("configs of {topic}"),
                    r.error_message.as_ref(),
                )
                .into());
            }
            for c in &r.configs {
                let source = usize::try_from(c.config_source)
                    .ok()
                    .and_then(|i| CONFIG_SOURCES.get(i))
                    .copied()
                    .unwrap_or("unknown");
                let value = if c.is_sensitive {
                    json!("(sensitive)")
                } else {
                    c.value.as_ref().map_or(Value::Null, |v| json!(v.as_str()))
                };
                cfg.row(vec![json!(c.name.as_str()), value, json!(source)]);
            }
        }
        reports.push(vec![
            ("name", Section::Value(json!(topic))),
            ("id", Section::Value(json!(t.topic_id.to_string()))),
            ("partitions", Section::Table(parts)),
            ("configs", Section::Table(cfg)),
        ]);
    }
    print_reports(format, &reports);
    Ok(())
}

fn alter_config(
    cluster: &mut Cluster,
    topic: &str,
    set: &[String],
    delete: &[String],
    format: Format,
) -> Outcome {
    if set.is_empty() && delete.is_empty() {
        return Err(Failure::Refused(
            "nothing to change: give --set or --delete".into(),
        ));
    }
    let mut configs = Vec::new();
    for kv in set {
        let (k, v) = key_value(kv)?;
        configs.push(
            AlterableConfig::default()
                .with_name(str_bytes(k))
                .with_config_operation(OP_SET)
                .with_value(Some(str_bytes(v))),
        );
    }
    for k in delete {
        configs.push(
            AlterableConfig::default()
                .with_name(str_bytes(k))
                .with_config_operation(OP_DELETE),
        );
    }
    let resource = AlterConfigsResource::default()
        .with_resource_type(RESOURCE_TOPIC)
        .with_resource_name(str_bytes(topic))
        .with_configs(configs);
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![resource]);
    let ResponseKind::IncrementalAlterConfigs(r) = cluster
        .controller()?
        .call(RequestKind::IncrementalAlterConfigs(request))?
    else {
        return Err(unexpected("IncrementalAlterConfigs"));
    };
    let mut table = Table::new(&["topic", "error"]);
    let mut failed = 0;
    for x in &r.responses {
        failed += usize::from(x.error_code != 0);
        table.row(vec![
            json!(x.resource_name.as_str()),
            error_cell(x.error_code, x.error_message.as_ref()),
        ]);
    }
    report(format, &table, failed, "config changes")
}

fn add_partitions(cluster: &mut Cluster, topic: &str, total: i32, format: Format) -> Outcome {
    let request = CreatePartitionsRequest::default()
        .with_topics(vec![
            CreatePartitionsTopic::default()
                .with_name(name(topic))
                .with_count(total)
                .with_assignments(None),
        ])
        .with_timeout_ms(ADMIN_TIMEOUT_MS);
    let ResponseKind::CreatePartitions(r) = cluster
        .controller()?
        .call(RequestKind::CreatePartitions(request))?
    else {
        return Err(unexpected("CreatePartitions"));
    };
    let mut table = Table::new(&["topic", "partitions", "error"]);
    let mut failed = 0;
    for x in &r.results {
        failed += usize::from(x.error_code != 0);
        table.row(vec![
            json!(x.name.as_str()),
            json!(total),
            error_cell(x.error_code, x.error_message.as_ref()),
        ]);
    }
    report(format, &table, failed, "partition additions")
}
