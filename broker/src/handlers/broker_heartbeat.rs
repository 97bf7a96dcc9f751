//! BrokerHeartbeat (key 63, v0-v1), as a KRaft broker sends it to the controller; corebus
//! brokers send it for one purpose: a controlled shutdown (`want_shut_down`). The controller
//! notes the broker as shutting down (never made a leader or in-sync member again while it
//! stays registered), moves its leaderships to other live in-sync replicas and takes it out of
//! the in-sync sets (`metadata::elect::hand_over`), and answers `should_shut_down` once it leads
//! nothing that could move. A broker that is not the controller answers NOT_CONTROLLER.
//!
//! Liveness itself is the broker's consensus session, not this heartbeat: a plain heartbeat is
//! answered and changes nothing.
//!
//! Never: moves a leadership to a replica outside the in-sync set, or to a broker that is not
//! live or is shutting down itself.

use std::rc::Rc;

use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::messages::{BrokerHeartbeatRequest, BrokerHeartbeatResponse};
use tracing::info;

use crate::metadata::elect::hand_over;
use crate::shard::{Shard, ShardId};

pub async fn handle(
    shard: &Rc<Shard>,
    request: BrokerHeartbeatRequest,
    _version: i16,
) -> BrokerHeartbeatResponse {
    let me = shard.node.node_id;
    if shard.cluster().controller_id != Some(me) {
        return BrokerHeartbeatResponse::default()
            .with_error_code(ResponseError::NotController.code());
    }
    if !request.want_shut_down {
        return BrokerHeartbeatResponse::default().with_is_caught_up(true);
    }
    let leaving = request.broker_id.0;
    let outcome = shard
        .on_shard(ShardId::CONTROLLER, move |s0: Rc<Shard>| async move {
            let Some(controller) = s0.controller() else {
                return Err(ResponseError::NotController);
            };
            let live = s0.cluster().live_ids();
            controller.shutting_down(leaving);
            let barred = controller.barred(&live);
            let eligible: Vec<i32> = live.into_iter().filter(|b| !barred.contains(b)).collect();
            controller
                .transact(move |image| hand_over(image, leaving, &eligible))
                .await
                .map_err(|e| crate::handlers::common::metadata_failure(&e).code)
        })
        .await
        .unwrap_or(Err(ResponseError::NotController));
    match outcome {
        Ok(remaining) => {
            info!(
                broker = leaving,
                remaining, "controlled shutdown: leaderships handed over"
            );
            BrokerHeartbeatResponse::default()
                .with_is_caught_up(true)
                .with_should_shut_down(remaining == 0)
        }
        Err(code) => BrokerHeartbeatResponse::default().with_error_code(code.code()),
    }
}
