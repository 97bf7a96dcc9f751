//! The simulation as part of the normal test run: 1,000 seeds with a correct protocol (split
//! in four tests so they run in parallel), and proof that the checkers catch broken variants.

use super::*;

fn clean_seeds(range: std::ops::Range<u64>, opts: &SimOptions) {
    let mut committed = 0;
    let mut gave_up = 0;
    let mut coverage = Coverage::default();
    for seed in range.clone() {
        let r = run(seed, opts);
        assert!(
            r.violations.is_empty(),
            "seed {seed} failed: {:#?}\nreproduce: {}",
            r.violations,
            repro_command(seed, opts)
        );
        committed += r.committed;
        gave_up += r.checker_gave_up;
        coverage.add(&r.coverage);
    }
    // The sweep is not vacuous: every hard path ran (a group of one has no peers to sync).
    let c = coverage;
    assert!(
        c.power_losses > 0
            && c.pauses > 0
            && c.torn_tails_cut > 0
            && c.snapshots_written > 0
            && c.leaders_established > 0,
        "{c:?}"
    );
    if opts.nodes > 1 {
        assert!(
            c.snap_syncs > 0 && c.truncations > 0 && c.connection_breaks > 0,
            "{c:?}"
        );
    }
    // Sessions ran: opened, moved between nodes, dead ones checked against the bound.
    assert!(
        c.sessions_opened > 0 && c.dead_sessions_checked > 0,
        "{c:?}"
    );
    // Watchers heard events.
    assert!(c.watch_events > 0, "{c:?}");
    if opts.nodes > 1 {
        assert!(c.session_moves > 0 && c.watcher_moves > 0, "{c:?}");
    }
    // Faults must not stop all progress: the seeds commit writes.
    assert!(committed > range.count() * 5, "only {committed} commits");
    assert_eq!(
        gave_up, 0,
        "the linearizability checker gave up on some history"
    );
}

#[test]
fn seeds_0_to_250() {
    clean_seeds(0..250, &SimOptions::default());
}

#[test]
fn seeds_250_to_500() {
    clean_seeds(250..500, &SimOptions::default());
}

#[test]
fn seeds_500_to_750() {
    clean_seeds(500..750, &SimOptions::default());
}

#[test]
fn seeds_750_to_1000_five_nodes() {
    clean_seeds(
        750..1000,
        &SimOptions {
            nodes: 5,
            clients: 4,
            ops_per_client: 15,
            ..SimOptions::default()
        },
    );
}

#[test]
fn single_node_group() {
    clean_seeds(
        2_000..2_050,
        &SimOptions {
            nodes: 1,
            clients: 2,
            ..SimOptions::default()
        },
    );
}

#[test]
fn same_seed_same_run() {
    let a = run(42, &SimOptions::default());
    let b = run(42, &SimOptions::default());
    assert_eq!(
        (a.events, a.committed, a.crashes),
        (b.events, b.committed, b.crashes)
    );
}

/// Runs seeds of a broken variant until the checkers object; returns the first failing seed.
fn first_caught(fault: Fault, seeds: u64) -> Option<(u64, Vec<String>)> {
    let opts = SimOptions {
        fault,
        ..SimOptions::default()
    };
    (0..seeds)
        .map(|s| (s, run(s, &opts)))
        .find(|(_, r)| !r.violations.is_empty())
        .map(|(s, r)| (s, r.violations))
}

#[test]
fn checkers_catch_ack_before_fsync() {
    let caught = first_caught(Fault::AckBeforeFsync, 1_000);
    assert!(
        caught.is_some(),
        "acknowledging before fsync went unnoticed in 1,000 seeds"
    );
}

#[test]
fn checkers_catch_commit_without_quorum() {
    let caught = first_caught(Fault::CommitWithoutQuorum, 200);
    assert!(
        caught.is_some(),
        "committing without a quorum went unnoticed in 200 seeds"
    );
}

#[test]
fn checkers_catch_broken_sessions_and_watches() {
    for (fault, what) in [
        (
            Fault::DropSessionTouches,
            "followers dropping session touches",
        ),
        (
            Fault::NoSessionExpiry,
            "a leader that never expires sessions",
        ),
    ] {
        assert!(
            first_caught(fault, 200).is_some(),
            "{what} went unnoticed in 200 seeds"
        );
    }
}
