//! IncrementalAlterConfigs (key 44): edits a topic's settings: SET (0), DELETE (1), APPEND (2)
//! and SUBTRACT (3), the last two for list settings such as `cleanup.policy`.
//!
//! Never: alters broker settings (static in corebus); accepts an unknown operation.

use std::rc::Rc;

use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use corebus_wire::kafka_protocol::messages::{
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};

use super::common::ItemError;
use super::topic_configs::{ConfigOp, ResourceChange, alter};
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    request: IncrementalAlterConfigsRequest,
    _version: i16,
) -> IncrementalAlterConfigsResponse {
    let keys: Vec<_> = request
        .resources
        .iter()
        .map(|r| (r.resource_type, r.resource_name.clone()))
        .collect();
    // Resources whose ops do not even parse get their answer here; the rest go to `alter`.
    let mut early: Vec<Option<ItemError>> = Vec::new();
    let mut changes = Vec::new();
    for r in request.resources {
        let ops: Result<Vec<ConfigOp>, ItemError> = r
            .configs
            .into_iter()
            .map(|c| {
                let (k, v) = (
                    c.name.to_string(),
                    c.value.map(|v| v.to_string()).unwrap_or_default(),
                );
                match c.config_operation {
                    0 => Ok(ConfigOp::Set(k, v)),
                    1 => Ok(ConfigOp::Delete(k)),
                    2 => Ok(ConfigOp::Append(k, v)),
                    3 => Ok(ConfigOp::Subtract(k, v)),
                    op => Err(ItemError::new(
                        ResponseError::InvalidRequest,
                        format!("unknown config operation {op}"),
                    )),
                }
            })
            .collect();
        match ops {
            Ok(ops) => {
                changes.push(ResourceChange {
                    resource_type: r.resource_type,
                    name: r.resource_name.to_string(),
                    replace: false,
                    ops,
                });
                early.push(None);
            }
            Err(e) => early.push(Some(e)),
        }
    }
    let mut results = alter(shard, changes, request.validate_only)
        .await
        .into_iter();
    IncrementalAlterConfigsResponse::default().with_responses(
        keys.into_iter()
            .zip(early)
            .map(|((ty, name), early)| {
                let r = match early {
                    Some(e) => Err(e),
                    None => results.next().unwrap_or(Ok(())),
                };
                let mut out = AlterConfigsResourceResponse::default()
                    .with_resource_type(ty)
                    .with_resource_name(name);
                if let Err(e) = r {
                    out.error_code = e.wire_code();
                    out.error_message = e.wire_message();
                }
                out
            })
            .collect(),
    )
}
