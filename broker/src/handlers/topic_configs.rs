//! Changing a topic's settings, shared by AlterConfigs (replace the whole set) and
//! IncrementalAlterConfigs (set, delete, append, subtract): the new set is computed against the
//! latest image on the controller, every value checked against the settings table, and all
//! topics of one request committed in one metadata change. Broker settings are static in
//! corebus, so altering them is refused with a message saying how to change them.
//!
//! Never: stores a value the settings table refuses; half-applies one resource's changes.

use std::collections::BTreeMap;
use std::rc::Rc;

use corebus_wire::error_code::ResponseError;

use super::common::{ItemError, RESOURCE_BROKER, RESOURCE_TOPIC, metadata_failure, on_controller};
use crate::config::settings::{Scope, lookup};
use crate::config::{check_topic_setting, value::ConfigType};
use crate::metadata::MetadataCommand;
use crate::shard::Shard;

/// One change to one setting.
#[derive(Debug, Clone)]
pub enum ConfigOp {
    Set(String, String),
    Delete(String),
    /// Adds list elements not present yet (list settings only).
    Append(String, String),
    /// Removes list elements (list settings only).
    Subtract(String, String),
}

/// The changes asked for one resource.
#[derive(Debug, Clone)]
pub struct ResourceChange {
    pub resource_type: i8,
    pub name: String,
    /// `true`: the ops replace the whole set (AlterConfigs); `false`: they edit it.
    pub replace: bool,
    pub ops: Vec<ConfigOp>,
}

/// Applies `changes` (or only checks them with `validate_only`); one result per resource.
pub async fn alter(
    shard: &Rc<Shard>,
    changes: Vec<ResourceChange>,
    validate_only: bool,
) -> Vec<Result<(), ItemError>> {
    let count = changes.len();
    let config = shard.config.clone();
    let decided = on_controller(shard, move |image| {
        let mut cmds = Vec::new();
        let results = changes
            .into_iter()
            .map(|c| {
                match c.resource_type {
                    RESOURCE_TOPIC => {}
                    RESOURCE_BROKER => {
                        return Err(ItemError::new(
                            ResponseError::InvalidRequest,
                            "broker settings are static in corebus: set them with --override or the --config file and restart",
                        ));
                    }
                    other => {
                        return Err(ItemError::new(
                            ResponseError::InvalidRequest,
                            format!("resource type {other} is not supported"),
                        ));
                    }
                }
                let topic = image.topic(&c.name).ok_or_else(|| {
                    ItemError::new(ResponseError::UnknownTopicOrPartition, format!("Topic {} does not exist", c.name))
                })?;
                let base = if c.replace { BTreeMap::new() } else { topic.configs.clone() };
                // APPEND and SUBTRACT start from the value in force, as Kafka's do (for a
                // setting the topic does not override: its broker default).
                let effective = |k: &str| {
                    lookup(Scope::Topic, k)
                        .and_then(|s| config.settings.resolve_topic(s, &topic.configs).value)
                        .map(|v| v.to_string())
                };
                let next = edit(base, c.ops, &effective)?;
                if !validate_only && next != topic.configs {
                    tracing::info!(topic = %topic.name, ?next, "topic settings changed");
                    cmds.push(MetadataCommand::SetTopicConfigs { id: topic.id, configs: next });
                }
                Ok(())
            })
            .collect::<Vec<_>>();
        (cmds, results)
    })
    .await;
    match decided {
        Ok(r) => r,
        Err(e) => (0..count).map(|_| Err(metadata_failure(&e))).collect(),
    }
}

/// Applies `ops` to `configs`, checking every resulting value.
fn edit(
    mut configs: BTreeMap<String, String>,
    ops: Vec<ConfigOp>,
    effective: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, ItemError> {
    let invalid = |m: String| ItemError::new(ResponseError::InvalidConfig, m);
    for op in ops {
        match op {
            ConfigOp::Set(k, v) => {
                check_topic_setting(&k, &v).map_err(invalid)?;
                configs.insert(k, v);
            }
            ConfigOp::Delete(k) => {
                lookup(Scope::Topic, &k)
                    .ok_or_else(|| invalid(format!("unknown topic config name: {k}")))?;
                configs.remove(&k);
            }
            ConfigOp::Append(k, v) | ConfigOp::Subtract(k, v) if !is_list(&k) => {
                let _ = v;
                return Err(invalid(format!(
                    "Config value append/subtract is not allowed for config {k}: it is not a list"
                )));
            }
            ConfigOp::Append(k, v) => {
                let mut items = current_list(&configs, &k, effective);
                for x in split(&v) {
                    if !items.contains(&x) {
                        items.push(x);
                    }
                }
                let joined = items.join(",");
                check_topic_setting(&k, &joined).map_err(invalid)?;
                configs.insert(k, joined);
            }
            ConfigOp::Subtract(k, v) => {
                let remove = split(&v);
                let items: Vec<String> = current_list(&configs, &k, effective)
                    .into_iter()
                    .filter(|x| !remove.contains(x))
                    .collect();
                if items.is_empty() {
                    configs.remove(&k);
                } else {
                    let joined = items.join(",");
                    check_topic_setting(&k, &joined).map_err(invalid)?;
                    configs.insert(k, joined);
                }
            }
        }
    }
    Ok(configs)
}

fn is_list(name: &str) -> bool {
    lookup(Scope::Topic, name).is_some_and(|s| s.ty == ConfigType::List)
}

fn current_list(
    configs: &BTreeMap<String, String>,
    k: &str,
    effective: &dyn Fn(&str) -> Option<String>,
) -> Vec<String> {
    configs
        .get(k)
        .cloned()
        .or_else(|| effective(k))
        .map(|v| split(&v))
        .unwrap_or_default()
}

fn split(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_check_every_value() {
        let none = |_: &str| None;
        let set = |k: &str, v: &str| ConfigOp::Set(k.into(), v.into());
        let append = |k: &str, v: &str| ConfigOp::Append(k.into(), v.into());
        let c = edit(BTreeMap::new(), vec![set("retention.ms", "1000")], &none).unwrap();
        assert_eq!(c.get("retention.ms").map(String::as_str), Some("1000"));
        let c = edit(c, vec![append("cleanup.policy", "compact")], &none).unwrap();
        let c = edit(c, vec![append("cleanup.policy", "delete,compact")], &none).unwrap();
        assert_eq!(
            c.get("cleanup.policy").map(String::as_str),
            Some("compact,delete")
        );
        let subtract = ConfigOp::Subtract("cleanup.policy".into(), "compact".into());
        let c = edit(c, vec![subtract], &none).unwrap();
        assert_eq!(c.get("cleanup.policy").map(String::as_str), Some("delete"));
        let c = edit(c, vec![ConfigOp::Delete("retention.ms".into())], &none).unwrap();
        assert!(!c.contains_key("retention.ms"));
        assert!(edit(c.clone(), vec![set("retention.ms", "x")], &none).is_err());
        assert!(edit(c.clone(), vec![append("retention.ms", "1")], &none).is_err());
        assert!(edit(c, vec![set("no.such", "1")], &none).is_err());
        // Appending to a setting the topic does not override starts from the value in force.
        let delete = |_: &str| Some("delete".to_string());
        let c = edit(
            BTreeMap::new(),
            vec![append("cleanup.policy", "compact")],
            &delete,
        )
        .unwrap();
        assert_eq!(
            c.get("cleanup.policy").map(String::as_str),
            Some("delete,compact")
        );
    }
}
