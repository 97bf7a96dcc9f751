//! Automatic leader balancing (`auto.leader.rebalance.enable`, Kafka's): every
//! `leader.imbalance.check.interval.seconds`, the controller gives each broker back the
//! partitions it is the preferred (first assigned) replica of, when it leads fewer of them
//! than it prefers by more than `leader.imbalance.per.broker.percentage` percent and the
//! preferred replica is live and in sync (`metadata::elect::rebalance`). After a failover or a
//! rolling restart, leadership so returns to where placement spread it.
//!
//! Never: runs on a broker that is not the controller, or without replication.

use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;
use tracing::{info, warn};

use crate::shard::{Shard, ShardId};

/// Runs on shard 0 until shutdown.
pub async fn balance_loop(shard: Rc<Shard>) {
    let settings = &shard.config.settings;
    if shard.id != ShardId::CONTROLLER || !settings.bool("auto.leader.rebalance.enable") {
        return;
    }
    let interval_ms = settings
        .i64("leader.imbalance.check.interval.seconds")
        .and_then(|s| u64::try_from(s).ok())
        .unwrap_or(300)
        .saturating_mul(1000)
        .max(1000);
    let percentage = settings
        .i64("leader.imbalance.per.broker.percentage")
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or(10);
    loop {
        let stopped = future::or(
            async {
                shard.shutdown.wait().await;
                true
            },
            async {
                glommio::timer::sleep(Duration::from_millis(interval_ms)).await;
                false
            },
        )
        .await;
        if stopped {
            return;
        }
        if shard.cluster().controller_id != Some(shard.node.node_id) {
            continue;
        }
        let Some(controller) = shard.controller() else {
            continue;
        };
        let view = shard.cluster();
        let live = view.live_ids();
        let barred = controller.barred(&view);
        let outcome = controller
            .transact(move |image| {
                let cmds = crate::metadata::elect::rebalance(image, &live, &barred, percentage);
                let n = cmds.len();
                (cmds, n)
            })
            .await;
        match outcome {
            Ok(0) => {}
            Ok(topics) => info!(topics, "leaders moved back to their preferred replicas"),
            Err(e) => warn!(error = %e, "leader balancing failed; tried again at the next check"),
        }
    }
}
