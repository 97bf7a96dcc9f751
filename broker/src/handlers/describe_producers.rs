//! DescribeProducers (key 61): the idempotent producers a partition knows, with their epoch,
//! last sequence and last timestamp, from the partition's producer state on its owning shard.
//! No transactions exist yet, so no producer has an open transaction.
//!
//! Never: lists producers of another partition.

use std::rc::Rc;

use corebus_wire::kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use corebus_wire::kafka_protocol::messages::{
    DescribeProducersRequest, DescribeProducersResponse, ProducerId,
};

use super::common::{Route, on_partition_logs};
use crate::shard::Shard;
use crate::shard::producer_state::ActiveProducer;

pub async fn handle(
    shard: &Rc<Shard>,
    request: DescribeProducersRequest,
    _version: i16,
) -> DescribeProducersResponse {
    let items = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partition_indexes
                .iter()
                .map(|p| (t.name.0.to_string(), *p, ()))
        })
        .collect();
    let mut results = on_partition_logs(
        shard,
        Route::Leader,
        items,
        |s: Rc<Shard>, key, _log, ()| async move {
            Ok::<Vec<ActiveProducer>, i16>(s.logs.with_producers(key, |states| states.describe()))
        },
    )
    .await
    .into_iter();
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partition_indexes
                .iter()
                .map(|p| {
                    let r = PartitionResponse::default().with_partition_index(*p);
                    match results.next().unwrap_or(Err(-1)) {
                        Ok(producers) => r.with_active_producers(
                            producers
                                .into_iter()
                                .map(|a| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(a.producer_id))
                                        .with_producer_epoch(i32::from(a.epoch))
                                        .with_last_sequence(a.last_sequence)
                                        .with_last_timestamp(a.last_timestamp)
                                        .with_coordinator_epoch(-1)
                                        .with_current_txn_start_offset(-1)
                                })
                                .collect(),
                        ),
                        Err(code) => r.with_error_code(code),
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
