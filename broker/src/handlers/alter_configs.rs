//! AlterConfigs (key 33): replaces a topic's whole set of settings (the legacy API; a setting
//! not named goes back to its broker default).
//!
//! Never: alters broker settings (static in corebus).

use std::rc::Rc;

use corebus_wire::kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use corebus_wire::kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};

use super::topic_configs::{ConfigOp, ResourceChange, alter};
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    request: AlterConfigsRequest,
    _version: i16,
) -> AlterConfigsResponse {
    let keys: Vec<_> = request
        .resources
        .iter()
        .map(|r| (r.resource_type, r.resource_name.clone()))
        .collect();
    let changes = request
        .resources
        .into_iter()
        .map(|r| ResourceChange {
            resource_type: r.resource_type,
            name: r.resource_name.to_string(),
            replace: true,
            ops: r
                .configs
                .into_iter()
                .filter_map(|c| {
                    c.value
                        .map(|v| ConfigOp::Set(c.name.to_string(), v.to_string()))
                })
                .collect(),
        })
        .collect();
    let results = alter(shard, changes, request.validate_only).await;
    AlterConfigsResponse::default().with_responses(
        keys.into_iter()
            .zip(results)
            .map(|((ty, name), r)| {
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
