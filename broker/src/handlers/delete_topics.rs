//! DeleteTopics (key 20): removes topics named by name or (v6+) by id in one metadata change.
//! A topic created again later gets a new id, so clients holding the old id see
//! UNKNOWN_TOPIC_ID. Refused with TOPIC_DELETION_DISABLED when `delete.topic.enable` is false.
//!
//! Never: deletes a topic that was not named; answers before the change is durable.

use std::rc::Rc;

use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use corebus_wire::kafka_protocol::messages::{
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use uuid::Uuid;

use super::common::{ItemError, metadata_failure, on_controller, str_bytes};
use crate::metadata::{MetadataCommand, TopicId};
use crate::shard::Shard;

/// A topic as the request names it.
#[derive(Debug, Clone)]
enum Target {
    Name(String),
    Id(Uuid),
}

pub async fn handle(
    shard: &Rc<Shard>,
    request: DeleteTopicsRequest,
    _version: i16,
) -> DeleteTopicsResponse {
    // Before v6 topics come as `topic_names`; from v6 as `topics` (name or id).
    let mut targets: Vec<Target> = request
        .topic_names
        .into_iter()
        .map(|n| Target::Name(n.0.to_string()))
        .collect();
    targets.extend(request.topics.into_iter().map(|t| match t.name {
        Some(n) => Target::Name(n.0.to_string()),
        None => Target::Id(t.topic_id),
    }));
    let allowed = shard.config.settings.bool("delete.topic.enable");
    let count = targets.len();
    let decided = on_controller(shard, move |image| {
        let mut cmds = Vec::new();
        let mut results = Vec::with_capacity(targets.len());
        for target in targets {
            let found = match &target {
                Target::Name(n) => image.topic(n),
                Target::Id(id) => image.topic_by_id(TopicId(*id)),
            };
            let result = match (found, allowed) {
                (_, false) => Err(ItemError::new(
                    ResponseError::TopicDeletionDisabled,
                    "Topic deletion is disabled.",
                )),
                (None, _) => Err(match target {
                    Target::Name(_) => {
                        ItemError::new(ResponseError::UnknownTopicOrPartition, "unknown topic")
                    }
                    Target::Id(_) => {
                        ItemError::new(ResponseError::UnknownTopicId, "unknown topic id")
                    }
                }),
                (Some(meta), true) => {
                    let cmd = MetadataCommand::DeleteTopic { id: meta.id };
                    // The same topic named twice (by name and id) is deleted once.
                    if !cmds.contains(&cmd) {
                        cmds.push(cmd);
                    }
                    Ok((meta.name.clone(), meta.id.0))
                }
            };
            results.push((target, result));
        }
        (cmds, results)
    })
    .await;
    let results = match decided {
        Ok(r) => r,
        Err(e) => {
            let err = metadata_failure(&e);
            return DeleteTopicsResponse::default().with_responses(
                (0..count)
                    .map(|_| {
                        DeletableTopicResult::default()
                            .with_error_code(err.wire_code())
                            .with_error_message(err.wire_message())
                    })
                    .collect(),
            );
        }
    };
    let responses = results
        .into_iter()
        .map(|(target, result)| {
            let (name, id) = match &target {
                Target::Name(n) => (Some(n.clone()), Uuid::nil()),
                Target::Id(id) => (None, *id),
            };
            match result {
                Ok((name, id)) => {
                    tracing::info!(topic = %name, "topic deleted");
                    DeletableTopicResult::default()
                        .with_name(Some(TopicName(str_bytes(name))))
                        .with_topic_id(id)
                }
                Err(e) => DeletableTopicResult::default()
                    .with_name(name.map(|n| TopicName(str_bytes(n))))
                    .with_topic_id(id)
                    .with_error_code(e.wire_code())
                    .with_error_message(e.wire_message()),
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}
