//! DescribeConfigs (key 32): topic settings as they apply to a topic (its own value, else its
//! broker synonym, else the default) with `config_source` and, when asked, synonyms in Kafka's
//! order; broker settings with their source. Both come from the one settings table, so every
//! setting corebus honours is listed and nothing else.
//!
//! Never: reports a setting corebus does not have; reports broker settings as alterable (they
//! are static: change them with `--override` and a restart).

use std::collections::BTreeMap;

use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use corebus_wire::kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use corebus_wire::kafka_protocol::protocol::StrBytes;

use super::common::{ItemError, RESOURCE_BROKER, RESOURCE_TOPIC, str_bytes};
use crate::config::ConfigSource;
use crate::config::settings::{Scope, Setting, Support, in_scope};
use crate::shard::Shard;

pub fn handle(
    shard: &Shard,
    mut request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let resources = std::mem::take(&mut request.resources);
    let results = resources
        .into_iter()
        .map(|r| {
            let keys: Option<Vec<String>> = r
                .configuration_keys
                .map(|k| k.iter().map(|s| s.to_string()).collect());
            let wanted = |s: &Setting| keys.as_ref().is_none_or(|k| k.iter().any(|n| n == s.name));
            let described = match r.resource_type {
                RESOURCE_TOPIC => {
                    describe_topic(shard, &r.resource_name, &wanted, &request, version)
                }
                RESOURCE_BROKER => {
                    describe_broker(shard, &r.resource_name, &wanted, &request, version)
                }
                other => Err(ItemError::new(
                    ResponseError::InvalidRequest,
                    format!("resource type {other} is not supported"),
                )),
            };
            let out = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name);
            match described {
                Ok(configs) => out.with_configs(configs),
                Err(e) => out
                    .with_error_code(e.wire_code())
                    .with_error_message(e.wire_message()),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn describe_topic(
    shard: &Shard,
    name: &StrBytes,
    wanted: &dyn Fn(&Setting) -> bool,
    request: &DescribeConfigsRequest,
    version: i16,
) -> Result<Vec<DescribeConfigsResourceResult>, ItemError> {
    let image = shard.metadata();
    let topic = image.topic(name).ok_or_else(|| {
        ItemError::new(
            ResponseError::UnknownTopicOrPartition,
            format!("Topic {name} does not exist"),
        )
    })?;
    Ok(in_scope(Scope::Topic)
        .filter(|s| wanted(s))
        .map(|s| {
            let r = shard.config.settings.resolve_topic(s, &topic.configs);
            let synonyms = r
                .synonyms
                .iter()
                .map(|syn| (syn.name, Some(syn.value.to_string()), syn.source))
                .collect();
            entry(
                s,
                r.value.map(|v| v.to_string()),
                r.source,
                false,
                synonyms,
                request,
                version,
            )
        })
        .collect())
}

fn describe_broker(
    shard: &Shard,
    name: &StrBytes,
    wanted: &dyn Fn(&Setting) -> bool,
    request: &DescribeConfigsRequest,
    version: i16,
) -> Result<Vec<DescribeConfigsResourceResult>, ItemError> {
    // "" is the cluster-wide default resource; otherwise it must be this node's id.
    if !name.is_empty() && name.as_str() != shard.node.node_id.to_string() {
        return Err(ItemError::new(
            ResponseError::InvalidRequest,
            format!(
                "Unexpected broker id, expected {} but received {name}",
                shard.node.node_id
            ),
        ));
    }
    let settings = &shard.config.settings;
    let mut seen = BTreeMap::new();
    Ok(in_scope(Scope::Broker)
        .filter(|s| s.support == Support::Honoured && wanted(s))
        .filter(|s| seen.insert(s.name, ()).is_none())
        .map(|s| {
            let (value, source) = match settings.get(s.name) {
                Some((v, src)) => (Some(v.to_string()), src),
                None => (None, ConfigSource::Default),
            };
            let synonyms = match &value {
                Some(v) => vec![(s.name, Some(v.clone()), source)],
                None => vec![],
            };
            entry(s, value, source, true, synonyms, request, version)
        })
        .collect())
}

fn entry(
    s: &Setting,
    value: Option<String>,
    source: ConfigSource,
    read_only: bool,
    synonyms: Vec<(&'static str, Option<String>, ConfigSource)>,
    request: &DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResourceResult {
    let mut e = DescribeConfigsResourceResult::default()
        .with_name(str_bytes(s.name))
        .with_value(value.map(str_bytes))
        .with_read_only(read_only)
        .with_config_source(source.wire_code());
    if request.include_synonyms && version >= 1 {
        e.synonyms = synonyms
            .into_iter()
            .map(|(name, value, source)| {
                DescribeConfigsSynonym::default()
                    .with_name(str_bytes(name))
                    .with_value(value.map(str_bytes))
                    .with_source(source.wire_code())
            })
            .collect();
    }
    if version >= 3 {
        e.config_type = s.ty.wire_code();
        if request.include_documentation {
            e.documentation = Some(str_bytes(s.doc));
        }
    }
    e
}
