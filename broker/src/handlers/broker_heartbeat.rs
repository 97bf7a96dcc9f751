//! BrokerHeartbeat (key 63, v0-v1), as a KRaft broker sends it to the controller; corebus
//! brokers send it for one purpose: a controlled shutdown (`want_shut_down`). The controller
//! notes the broker as shutting down (never made a leader or in-sync member again while it
//! stays registered), moves its leaderships to other live in-sync replicas and takes it out of
//! the in-sync sets (`metadata::elect::hand_over`), and answers `should_shut_down` once nothing
//! more can move: what it still leads has no other live in-sync replica that is not shutting
//! down too. A broker that is not the controller answers NOT_CONTROLLER.
//!
//! Liveness itself is the broker's consensus session, not this heartbeat: a plain heartbeat is
//! answered and changes nothing.
//!
//! Never: moves a leadership to a replica outside the in-sync set, or to a broker that is not
//! live or is shutting down itself; acts for a broker without its current registration's zxid
//! as `broker_epoch` (STALE_BROKER_EPOCH).

use std::rc::Rc;

use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::messages::{BrokerHeartbeatRequest, BrokerHeartbeatResponse};
use tracing::info;

use crate::handlers::common::on_controller_with_brokers;
use crate::metadata::elect::hand_over;
use crate::shard::Shard;

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
    // Only the broker's current life may stop it (a late request of an earlier one, or any
    // other sender without its registration's zxid, is refused: Kafka's broker epoch).
    let current = shard
        .cluster()
        .brokers
        .iter()
        .find(|b| b.node_id == leaving)
        .map(|b| i64::try_from(b.registered).unwrap_or(-1));
    if current != Some(request.broker_epoch) {
        return BrokerHeartbeatResponse::default()
            .with_error_code(ResponseError::StaleBrokerEpoch.code());
    }
    let outcome = on_controller_with_brokers(shard, Some(leaving), move |image, live, barred| {
        let eligible: Vec<i32> = live
            .iter()
            .copied()
            .filter(|b| !barred.contains(b))
            .collect();
        let (cmds, remaining) = hand_over(image, leaving, &eligible);
        let moved = !cmds.is_empty();
        (cmds, (remaining, moved))
    })
    .await;
    match outcome {
        Ok((remaining, moved)) => {
            info!(
                broker = leaving,
                remaining, "controlled shutdown: leaderships handed over"
            );
            BrokerHeartbeatResponse::default()
                .with_is_caught_up(true)
                // Nothing left, or nothing more could move (asked again, it would not either).
                .with_should_shut_down(remaining == 0 || !moved)
        }
        Err(code) => BrokerHeartbeatResponse::default().with_error_code(code.code()),
    }
}
