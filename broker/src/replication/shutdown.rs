//! Controlled shutdown (`controlled.shutdown.enable`): on the first SIGTERM, before any shard
//! stops, shard 0 asks the controller to move this broker's leaderships to other in-sync
//! replicas and to take it out of the in-sync sets (`cluster::forward::controlled_shutdown`,
//! answered by `handlers::broker_heartbeat`) until the controller says nothing more can move
//! (`should_shut_down`: what it still leads has no other live in-sync replica that is not
//! shutting down too, as when a whole cluster stops), and waits for its own metadata to show
//! the moves, at most `corebus.controlled.shutdown.timeout.ms` in all. The
//! broker keeps serving meanwhile: clients writing to it get NOT_LEADER_OR_FOLLOWER once a
//! leadership moved, and find the new leader through Metadata, as with Kafka.
//!
//! Gives up early when the controller stays unreachable for longer than two sessions with no
//! other taking its place (the consensus group has lost its quorum, as when a whole cluster
//! is stopped node by node: the last ones would otherwise wait out the timeout).
//!
//! Never: delays the stop past its timeout; runs without a consensus group
//! (nothing could take a partition over).

use std::rc::Rc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::shard::Shard;

/// Pause between asks when the controller could not move everything yet (or could not be
/// reached), and the longest wait for an accepted hand-over to reach this broker's image.
const RETRY_MS: u64 = 500;
/// How often the image is looked at while waiting.
const POLL_MS: u64 = 20;
/// Beyond two session timeouts, how long an unreachable controller is waited for.
const UNREACHABLE_SLACK_MS: u64 = 2_000;

/// Hands this broker's leaderships over, within the configured time; returns when done,
/// when there is nothing to hand over, or at the deadline.
pub async fn hand_over_leaderships(shard: &Rc<Shard>) {
    let settings = &shard.config.settings;
    if !settings.bool("controlled.shutdown.enable")
        || !crate::metadata::open::uses_consensus(&shard.config)
    {
        return;
    }
    let timeout_ms = settings
        .i64("corebus.controlled.shutdown.timeout.ms")
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(30_000);
    let started = Instant::now();
    let deadline = started + Duration::from_millis(timeout_ms);
    let before = movable(shard);
    if before == 0 {
        return;
    }
    info!(
        partitions = before,
        "controlled shutdown: handing leaderships over"
    );
    // A dead controller is replaced once its session expires (an ephemeral node may outlive
    // its owner by a session, a consensus election and the claim: `consensus::session`); one
    // named by this broker's view and unreachable for twice a session and more, with no other
    // taking its place, means the group cannot elect one (no quorum, or this broker is cut
    // off): nothing can take over then.
    let give_up_after = Duration::from_millis(
        2 * crate::cluster::session_timeout_ms(&shard.config) + UNREACHABLE_SLACK_MS,
    );
    let mut unreachable: Option<(Option<i32>, Instant)> = None;
    loop {
        let asked_with = movable(shard);
        let done = match crate::cluster::forward::controlled_shutdown(shard).await {
            Ok(done) => {
                unreachable = None;
                done
            }
            Err(e) => {
                let controller = shard.cluster().controller_id;
                let since = match unreachable {
                    Some((c, since)) if c == controller => since,
                    _ => Instant::now(),
                };
                unreachable = Some((controller, since));
                if since.elapsed() >= give_up_after {
                    warn!(
                        partitions = movable(shard),
                        error = %e,
                        unreachable_ms = since.elapsed().as_millis() as u64,
                        "controlled shutdown: the controller stayed unreachable for longer than \
                         a session and none took its place; stopping without handing over \
                         (the partitions fail over when this broker's session expires)"
                    );
                    return;
                }
                warn!(error = %e, "controlled shutdown: cannot reach the controller yet");
                false
            }
        };
        // Until the hand-over reaches this broker's image (or it is time to ask again).
        let ask_again = Instant::now() + Duration::from_millis(RETRY_MS);
        while movable(shard) >= asked_with
            && movable(shard) > 0
            && Instant::now() < ask_again.min(deadline)
        {
            glommio::timer::sleep(Duration::from_millis(POLL_MS)).await;
        }
        let left = movable(shard);
        if done && left > 0 {
            info!(
                partitions = left,
                "controlled shutdown: no other live in-sync replica can take the rest"
            );
            return;
        }
        if left == 0 {
            info!(
                partitions = before,
                took_ms = started.elapsed().as_millis() as u64,
                "controlled shutdown: leaderships handed over"
            );
            return;
        }
        if Instant::now() >= deadline {
            warn!(
                partitions = left,
                timeout_ms,
                "controlled shutdown: still leading when its time ran out; stopping anyway \
                 (they fail over when this broker's session expires)"
            );
            return;
        }
    }
}

/// Partitions this broker leads that another in-sync replica could take.
fn movable(shard: &Shard) -> usize {
    let me = shard.node.node_id;
    let image = shard.metadata();
    image
        .topics
        .values()
        .flat_map(|t| t.partitions.iter())
        .filter(|p| p.leader == me && p.replicas.len() > 1 && p.isr.iter().any(|b| *b != me))
        .count()
}
