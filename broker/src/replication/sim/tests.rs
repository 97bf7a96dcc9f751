//! The simulator's tests: seeds of both crash kinds, one directed case, the proof that the
//! checkers catch broken variants, and the long sweep (`scripts/replication-sim`).

use super::*;

fn seeds(opts: &SimOptions, seeds: std::ops::Range<u64>) -> (u64, usize, u32) {
    let (mut produced, mut acked, mut changes, mut checkpointed) = (0, 0, 0, 0);
    for seed in seeds.clone() {
        let r = run(seed, opts);
        assert!(
            r.violations.is_empty(),
            "seed {seed} ({opts:?}): {:#?}",
            r.violations
        );
        produced += r.produced;
        acked += r.acknowledged;
        changes += r.leader_changes;
        checkpointed += r.checkpointed_starts;
    }
    // Restarts took their high watermark from a checkpoint, not only from the log start.
    assert!(
        checkpointed > (seeds.end - seeds.start) as u32,
        "{checkpointed} restarts from a checkpoint"
    );
    (produced, acked, changes)
}

// A thousand seeds of each crash kind, in two tests each so they run in parallel.
#[test]
fn kills_lose_nothing_acknowledged_or_seen() {
    let (produced, acked, changes) = seeds(&SimOptions::default(), 0..500);
    // The runs did something: records were acknowledged across leader changes.
    assert!(
        acked > 10_000 && changes > 300,
        "{produced} produced, {acked} acknowledged, {changes} leader changes"
    );
}

#[test]
fn kills_lose_nothing_acknowledged_or_seen_more_seeds() {
    seeds(&SimOptions::default(), 500..1_000);
}

fn power_loss() -> SimOptions {
    SimOptions {
        power_loss: true,
        ..SimOptions::default()
    }
}

#[test]
fn power_losses_lose_nothing_acknowledged() {
    let (_, acked, _) = seeds(&power_loss(), 1_000..1_500);
    assert!(acked > 10_000, "{acked} acknowledged");
}

#[test]
fn power_losses_lose_nothing_acknowledged_more_seeds() {
    seeds(&power_loss(), 1_500..2_000);
}

/// Broker 1 leading partition 0 of a topic on brokers 1-3 with in-sync set `isr`
/// (partition epoch 1), over a simulated disk, in a test executor: `f` gets the image, the
/// log and the leader state.
fn with_leader<T>(
    isr: &[BrokerId],
    f: impl AsyncFnOnce(MetadataImage, Log, Leaders<SimDisk>) -> T,
) -> T {
    let topic = TopicId(uuid::Uuid::from_u128(9));
    let mut image = MetadataImage::new_cluster();
    let mut meta = PartitionMeta::replicated(BROKERS.to_vec());
    meta.isr = isr.to_vec();
    meta.partition_epoch = 1;
    image
        .apply(MetadataCommand::CreateTopic(TopicMeta {
            name: "t".into(),
            id: topic,
            partitions: vec![meta],
            configs: Default::default(),
        }))
        .unwrap();
    image.epoch = 1;
    LocalExecutorBuilder::new(Placement::Unbound)
        .make()
        .unwrap()
        .run(async move {
            let storage = StorageShard::new(SimDisk::new(), shard_options());
            let log = storage.open_log(log_dir(), config()).await.unwrap();
            let leaders: Leaders<SimDisk> = Leaders::default();
            sync(&leaders, &image, &log, 0);
            f(image, log, leaders).await
        })
}

fn sync(leaders: &Leaders<SimDisk>, image: &MetadataImage, log: &Log, now: i64) {
    let here = Here {
        node_id: 1,
        shard_count: 1,
    };
    leaders.sync_with(image, ShardId(0), here, |_| Some(log.clone()), now);
}

async fn append(log: &Log, batches: std::ops::Range<i64>) {
    for n in batches {
        let info = log
            .append_nowait(&[testing::batch(1, 100, n, 0)], 0, 0)
            .unwrap();
        log.wait_written(info.last_offset + 1).await.unwrap();
    }
}

fn key(image: &MetadataImage) -> (TopicId, i32) {
    (image.topics["t"].id, 0)
}

/// The controller's answer to `change` against `image` with `live` brokers, committing it
/// there as `alter_here` does.
fn controller(
    image: &mut MetadataImage,
    live: &[BrokerId],
    change: &IsrChange,
) -> Result<PartitionMeta, ResponseError> {
    let id = key(image).0;
    match isr::decide(image, live, 1, change)? {
        Some(meta) => {
            image
                .apply(MetadataCommand::AssignPartitions {
                    id,
                    assignments: vec![(0, meta.clone())],
                })
                .unwrap();
            image.epoch += 1;
            Ok(meta)
        }
        None => Ok(Sim::meta(image).clone()),
    }
}

/// A leader whose proposal to add a member timed out while the controller committed it:
/// the member keeps counting for the high watermark until the image says, so nothing it
/// lacks becomes visible (or acknowledged) while it may be elected.
#[test]
fn an_addition_of_unknown_outcome_holds_the_high_watermark() {
    let hw = with_leader(&[1, 3], async |mut image, log, leaders| {
        let key = key(&image);
        append(&log, 0..10).await;
        for follower in [2, 3] {
            leaders.on_fetch(key, &log, follower, 10, 0, 1, 10).unwrap();
        }
        assert_eq!(log.high_watermark(), 10);
        let change = leaders.proposals(20, LAG_MS, 1, &BROKERS).pop().unwrap();
        assert_eq!(change.isr, vec![1, 2, 3]);
        // The controller commits it; the answer is lost.
        controller(&mut image, &BROKERS, &change).unwrap();
        leaders.altered(&change, Err(ResponseError::RequestTimedOut), 1, 30);
        append(&log, 10..15).await;
        // Broker 3 has everything, broker 2 (in the committed set) does not.
        leaders.on_fetch(key, &log, 3, 15, 0, 1, 40).unwrap();
        let before_image = log.high_watermark();
        sync(&leaders, &image, &log, 50);
        leaders.on_fetch(key, &log, 3, 15, 0, 1, 60).unwrap();
        let after_image = log.high_watermark();
        leaders.on_fetch(key, &log, 2, 15, 0, 1, 70).unwrap();
        (before_image, after_image, log.high_watermark())
    });
    assert_eq!(hw, (10, 10, 15));
}

/// The same addition lost before the controller saw it, and then its member dies: the change
/// is sent again, refused for good (the member is not live), and the high watermark moves on
/// with the members that are in sync; it is never held for ever by a member never committed.
#[test]
fn a_lost_addition_whose_member_dies_does_not_hold_the_high_watermark() {
    let (refused, hw) = with_leader(&[1, 3], async |mut image, log, leaders| {
        let key = key(&image);
        append(&log, 0..10).await;
        for follower in [2, 3] {
            leaders.on_fetch(key, &log, follower, 10, 0, 1, 10).unwrap();
        }
        let change = leaders.proposals(20, LAG_MS, 1, &BROKERS).pop().unwrap();
        leaders.altered(&change, Err(ResponseError::RequestTimedOut), 1, 30);
        // Broker 2 dies; broker 3 keeps up.
        append(&log, 10..15).await;
        leaders.on_fetch(key, &log, 3, 15, 0, 1, 40).unwrap();
        assert_eq!(
            log.high_watermark(),
            10,
            "held while the outcome is unknown"
        );
        let retry_at = 30 + isr::RETRY_AFTER_MS;
        assert!(
            leaders
                .proposals(retry_at - 1, LAG_MS, 1, &[1, 3])
                .is_empty()
        );
        let again = leaders
            .proposals(retry_at, LAG_MS, 1, &[1, 3])
            .pop()
            .unwrap();
        assert_eq!(again, change, "the same change, sent again");
        let answer = controller(&mut image, &[1, 3], &again);
        leaders.altered(&again, answer.clone(), 1, retry_at + 10);
        leaders
            .on_fetch(key, &log, 3, 15, 0, 1, retry_at + 20)
            .unwrap();
        (answer, log.high_watermark())
    });
    assert_eq!(refused, Err(ResponseError::IneligibleReplica));
    assert_eq!(hw, 15);
}

#[test]
fn same_seed_same_run() {
    let a = run(7, &SimOptions::default());
    let b = run(7, &SimOptions::default());
    assert_eq!(
        (
            a.produced,
            a.acknowledged,
            a.crashes,
            a.messages,
            a.end_offset
        ),
        (
            b.produced,
            b.acknowledged,
            b.crashes,
            b.messages,
            b.end_offset
        )
    );
}

fn first_caught(fault: Fault, power_loss: bool, seeds: u64) -> Option<(u64, Vec<String>)> {
    let opts = SimOptions {
        fault,
        power_loss,
        ..SimOptions::default()
    };
    (0..seeds)
        .map(|s| (s, run(s, &opts)))
        .find(|(_, r)| !r.violations.is_empty())
        .map(|(s, r)| (s, r.violations))
}

#[test]
fn the_checkers_catch_a_high_watermark_from_the_leader_alone() {
    let caught = first_caught(Fault::HighWatermarkFromLeaderAlone, false, 200);
    eprintln!("caught: {caught:?}");
    assert!(
        caught.is_some(),
        "a leader counting only itself went unnoticed in 200 seeds"
    );
}

#[test]
fn the_checkers_catch_a_follower_taking_a_replaced_leaders_answers() {
    let caught = first_caught(Fault::StaleLeaderAnswers, false, 1_000);
    eprintln!("caught: {caught:?}");
    assert!(
        caught.is_some(),
        "a follower appending a replaced leader's answers went unnoticed in 1,000 seeds"
    );
}

#[test]
fn the_checkers_catch_a_follower_reporting_before_its_sync() {
    let caught = first_caught(Fault::FollowerReportsBeforeSync, true, 300);
    eprintln!("caught: {caught:?}");
    assert!(
        caught.is_some(),
        "a follower reporting unsynced appends went unnoticed in 300 seeds"
    );
}

#[test]
fn the_checkers_catch_a_checkpoint_of_the_log_end() {
    let caught = first_caught(Fault::CheckpointLogEnd, false, 1_000);
    eprintln!("caught: {caught:?}");
    assert!(
        caught.is_some(),
        "a checkpoint of the log end instead of the high watermark went unnoticed in 1,000 seeds"
    );
}

/// A longer sweep (`scripts/replication-sim`): `COREBUS_SIM_SEEDS` seeds from
/// `COREBUS_SIM_FIRST_SEED`, both kinds of crash, with a summary per kind.
#[test]
#[ignore = "long: run by scripts/replication-sim"]
fn sweep() {
    let count: u64 = std::env::var("COREBUS_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let first: u64 = std::env::var("COREBUS_SIM_FIRST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut failed = Vec::new();
    for power_loss in [false, true] {
        let opts = SimOptions {
            power_loss,
            ..SimOptions::default()
        };
        let mut total = Report::default();
        for seed in first..first + count {
            let r = run(seed, &opts);
            if !r.violations.is_empty() {
                eprintln!(
                    "seed {seed} power_loss={power_loss}: {:#?}\n  again: \
                     scripts/replication-sim --from {seed} --seeds 1",
                    r.violations
                );
                failed.push((seed, power_loss));
            }
            total.produced += r.produced;
            total.acknowledged += r.acknowledged;
            total.crashes += r.crashes;
            total.leader_changes += r.leader_changes;
            total.messages += r.messages;
        }
        println!(
            "power_loss={power_loss}: {count} seeds, {} batches produced, {} acknowledged, \
             {} crashes, {} leader changes, {} messages",
            total.produced, total.acknowledged, total.crashes, total.leader_changes, total.messages
        );
    }
    assert!(failed.is_empty(), "failing seeds: {failed:?}");
}
