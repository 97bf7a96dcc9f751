//! Helpers shared by several handlers: error codes, topic-name rules, string conversion, the
//! config resource types, and running a metadata change on the controller shard.
//!
//! Never: decides an API's semantics (each handler file does).

use std::rc::Rc;

use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::protocol::StrBytes;

use crate::limits::MAX_TOPIC_NAME_BYTES;
use crate::metadata::controller::Controller;
use crate::metadata::image::BrokerId;
use crate::metadata::{MetadataCommand, MetadataError, MetadataImage};
use crate::shard::mesh::ShardGone;
use crate::shard::{Shard, ShardId, router};

/// Kafka's config resource types (`ConfigResource.Type`).
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// An error for one item of a request (a topic, a resource): its code and message.
#[derive(Debug, Clone)]
pub struct ItemError {
    pub code: ResponseError,
    pub message: String,
}

impl ItemError {
    pub fn new(code: ResponseError, message: impl Into<String>) -> ItemError {
        ItemError {
            code,
            message: message.into(),
        }
    }

    pub fn wire_code(&self) -> i16 {
        self.code.code()
    }

    pub fn wire_message(&self) -> Option<StrBytes> {
        Some(str_bytes(self.message.clone()))
    }
}

/// The error code of a per-item result: 0 or the error's code.
pub fn result_code<T>(r: &Result<T, ItemError>) -> i16 {
    r.as_ref().err().map_or(0, ItemError::wire_code)
}

/// A protocol string from a Rust one.
pub fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Kafka's topic-name rules (`Topic.validate`): 1 to 249 characters from `[a-zA-Z0-9._-]`, not
/// `.` or `..`.
pub fn check_topic_name(name: &str) -> Result<(), ItemError> {
    let invalid = |why: String| ItemError::new(ResponseError::InvalidTopicException, why);
    if name.is_empty() {
        return Err(invalid("Topic name is illegal, it can't be empty".into()));
    }
    if name == "." || name == ".." {
        return Err(invalid("Topic name cannot be \".\" or \"..\"".into()));
    }
    if name.len() > MAX_TOPIC_NAME_BYTES {
        return Err(invalid(format!(
            "Topic name is illegal, it can't be longer than {MAX_TOPIC_NAME_BYTES} characters"
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(invalid(format!(
            "Topic name {name:?} is illegal, it contains a character other than ASCII \
             alphanumerics, '.', '_' and '-'"
        )));
    }
    Ok(())
}

/// Runs a metadata change on the controller shard: `decide` sees the latest image and returns
/// the commands to commit and its result. A storage failure of the metadata store fails every
/// item the same way (the caller maps it).
pub async fn on_controller<R, F>(shard: &Rc<Shard>, decide: F) -> Result<R, MetadataError>
where
    R: Send + 'static,
    F: FnOnce(&MetadataImage) -> (Vec<MetadataCommand>, R) + Send + 'static,
{
    shard
        .on_shard(ShardId::CONTROLLER, move |s0: Rc<Shard>| async move {
            let controller: &Rc<Controller> =
                s0.controller().ok_or(MetadataError::NotController)?;
            controller.transact(decide).await
        })
        .await
        .map_err(|gone| MetadataError::Invalid(gone.to_string()))?
}

/// Runs `decide` on the controller's latest image with the live brokers and those of them in a
/// controlled shutdown (`barred`, never made leaders), after noting `shutting_down` as one;
/// commits the commands it returns. NOT_CONTROLLER off the controller.
pub async fn on_controller_with_brokers<R, F>(
    shard: &Rc<Shard>,
    shutting_down: Option<BrokerId>,
    decide: F,
) -> Result<R, ResponseError>
where
    R: Send + 'static,
    F: FnOnce(&MetadataImage, &[BrokerId], &[BrokerId]) -> (Vec<MetadataCommand>, R)
        + Send
        + 'static,
{
    shard
        .on_shard(ShardId::CONTROLLER, move |s0: Rc<Shard>| async move {
            let controller: &Rc<Controller> =
                s0.controller().ok_or(ResponseError::NotController)?;
            let view = s0.cluster();
            if let Some(b) = shutting_down {
                controller.shutting_down(b, &view);
            }
            let live = view.live_ids();
            let barred = controller.barred(&view);
            controller
                .transact(move |image| decide(image, &live, &barred))
                .await
                .map_err(|e| metadata_failure(&e).code)
        })
        .await
        .unwrap_or(Err(ResponseError::NotController))
}

/// The per-item error when the metadata change itself failed: a consensus group that did not
/// answer in time is REQUEST_TIMED_OUT (retriable: the change may yet show up), a controller
/// without the store or overtaken by another writer is NOT_CONTROLLER (retriable).
pub fn metadata_failure(e: &MetadataError) -> ItemError {
    let code = match e {
        MetadataError::Unavailable(_) => ResponseError::RequestTimedOut,
        MetadataError::NotController | MetadataError::Conflict(_) => ResponseError::NotController,
        _ => ResponseError::UnknownServerError,
    };
    ItemError::new(code, format!("metadata store: {e}"))
}

/// Where a requested partition lives: its topic id and the shard of this node that serves it
/// (`shard::router::owner`: this node leads it); or the error Kafka gives for it (unknown
/// topic by name, unknown topic id, no such partition, NOT_LEADER_OR_FOLLOWER when another
/// broker leads it or none does).
pub fn locate_partition(
    image: &MetadataImage,
    here: router::Here,
    name: Option<&str>,
    topic_id: uuid::Uuid,
    partition: i32,
) -> Result<(crate::metadata::TopicId, ShardId), ResponseError> {
    let id = find_partition(image, name, topic_id, partition)?;
    match router::owner(image, id, partition, here) {
        Ok(owner) => Ok((id, owner)),
        Err(router::NotHere::NoSuchPartition) => Err(ResponseError::UnknownTopicOrPartition),
        Err(router::NotHere::NotLeader { .. }) => Err(ResponseError::NotLeaderOrFollower),
    }
}

/// The topic id of a requested partition that exists, wherever it is led; or the error Kafka
/// gives for it (unknown topic by name, unknown topic id, no such partition).
pub fn find_partition(
    image: &MetadataImage,
    name: Option<&str>,
    topic_id: uuid::Uuid,
    partition: i32,
) -> Result<crate::metadata::TopicId, ResponseError> {
    let topic = match name.filter(|n| !n.is_empty()) {
        Some(n) => image
            .topic(n)
            .ok_or(ResponseError::UnknownTopicOrPartition)?,
        None => image
            .topic_by_id(crate::metadata::TopicId(topic_id))
            .ok_or(ResponseError::UnknownTopicId)?,
    };
    let exists = usize::try_from(partition).is_ok_and(|p| p < topic.partitions.len());
    if !exists {
        return Err(ResponseError::UnknownTopicOrPartition);
    }
    Ok(topic.id)
}

/// An item whose owning shard was gone: Kafka's KAFKA_STORAGE_ERROR (retriable), once here.
pub fn unreached<R>(r: Result<Result<R, i16>, ShardGone>) -> Result<R, i16> {
    r.unwrap_or(Err(ResponseError::KafkaStorageError.code()))
}

/// Which log of a partition a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The leader's: clients' requests (another broker leading is NOT_LEADER_OR_FOLLOWER).
    Leader,
    /// This broker's replica, leader or follower (DescribeLogDirs).
    Replica,
}

/// Where `partition` of `topic` is on this node for `route`, or its Kafka error.
fn route_partition(
    image: &MetadataImage,
    here: router::Here,
    name: &str,
    partition: i32,
    route: Route,
) -> Result<(crate::metadata::TopicId, ShardId), ResponseError> {
    match route {
        Route::Leader => locate_partition(image, here, Some(name), uuid::Uuid::nil(), partition),
        Route::Replica => {
            let id = find_partition(image, Some(name), uuid::Uuid::nil(), partition)?;
            router::replica_shard(image, id, partition, here)
                .map(|owner| (id, owner))
                .ok_or(ResponseError::NotLeaderOrFollower)
        }
    }
}

/// Runs `op` on the log of each named partition, on its owning shard (`router::scatter`: one
/// message per shard, all at once); one result per item, in order. Unknown topics and
/// partitions, partitions this node does not lead (`Route::Leader`) or hold
/// (`Route::Replica`), partitions whose log is not open and shards that are gone get their
/// Kafka error code.
pub async fn on_partition_logs<A, R, F, Fut>(
    shard: &Rc<Shard>,
    route: Route,
    items: Vec<(String, i32, A)>,
    op: F,
) -> Vec<Result<R, i16>>
where
    A: Send + 'static,
    R: Send + 'static,
    F: Fn(
            Rc<Shard>,
            crate::shard::partitions::PartitionKey,
            crate::shard::partitions::Log,
            A,
        ) -> Fut
        + Send
        + Clone
        + 'static,
    Fut: std::future::Future<Output = Result<R, i16>>,
{
    let image = shard.metadata();
    let mut results: Vec<Result<R, i16>> = Vec::with_capacity(items.len());
    let mut positions = Vec::new();
    let mut work = Vec::new();
    for (pos, (name, partition, arg)) in items.into_iter().enumerate() {
        match route_partition(&image, shard.here(), &name, partition, route) {
            Ok((id, owner)) => {
                results.push(Err(ResponseError::UnknownServerError.code()));
                positions.push(pos);
                work.push((owner, (id, partition, arg)));
            }
            Err(e) => results.push(Err(e.code())),
        }
    }
    let done = router::scatter(shard, work, move |s: Rc<Shard>, group| {
        let op = op.clone();
        async move {
            let mut out = Vec::with_capacity(group.len());
            for (id, partition, arg) in group {
                out.push(match s.logs.log((id, partition)) {
                    Some(log) => op(s.clone(), (id, partition), log, arg).await,
                    None => Err(ResponseError::KafkaStorageError.code()),
                });
            }
            out
        }
    })
    .await;
    for (pos, r) in positions.into_iter().zip(done) {
        results[pos] = unreached(r);
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka() {
        assert!(check_topic_name("orders.v1_x-2").is_ok());
        for bad in ["", ".", "..", "a b", "ü", &"x".repeat(250)] {
            assert!(check_topic_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_topic_name(&"x".repeat(249)).is_ok());
    }
}
