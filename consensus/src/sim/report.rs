//! What one simulated run reports: its figures, the paths it exercised, what the checkers
//! found, and the command that replays it.
//!
//! Owns the report shapes only; never runs anything.

use super::SimOptions;
use crate::zab::Fault;

/// The result of one run.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub events: u64,
    pub committed: usize,
    pub crashes: u32,
    pub partitions: u32,
    pub acknowledged_writes: usize,
    pub unknown_writes: usize,
    pub checker_gave_up: usize,
    /// Coverage: how often the interesting paths ran.
    pub coverage: Coverage,
    pub violations: Vec<String>,
}

/// Counts of protocol paths a run exercised, so a sweep can show it is not vacuous.
#[derive(Debug, Default, Clone, Copy)]
pub struct Coverage {
    pub power_losses: u32,
    pub pauses: u32,
    pub torn_tails_cut: u32,
    pub snap_syncs: u32,
    pub truncations: u32,
    pub snapshots_written: u32,
    pub connection_breaks: u32,
    pub leaders_established: u32,
    pub sessions_opened: u32,
    /// Sessions re-attached on another node.
    pub session_moves: u32,
    /// Dead clients whose session was checked gone within the bound.
    pub dead_sessions_checked: u32,
    /// Sessions expired while the faults ran (a client cut off too long).
    pub expired_under_faults: u32,
    /// Watch events the watchers received, and their moves between nodes.
    pub watch_events: u32,
    pub watcher_moves: u32,
}

impl Coverage {
    pub fn add(&mut self, o: &Coverage) {
        self.power_losses += o.power_losses;
        self.pauses += o.pauses;
        self.torn_tails_cut += o.torn_tails_cut;
        self.snap_syncs += o.snap_syncs;
        self.truncations += o.truncations;
        self.snapshots_written += o.snapshots_written;
        self.connection_breaks += o.connection_breaks;
        self.leaders_established += o.leaders_established;
        self.sessions_opened += o.sessions_opened;
        self.session_moves += o.session_moves;
        self.dead_sessions_checked += o.dead_sessions_checked;
        self.expired_under_faults += o.expired_under_faults;
        self.watch_events += o.watch_events;
        self.watcher_moves += o.watcher_moves;
    }
}

/// The command that reruns one seed.
pub fn repro_command(seed: u64, opts: &SimOptions) -> String {
    let fault = match opts.fault {
        Fault::None => String::new(),
        Fault::AckBeforeFsync => " --fault ack-before-fsync".into(),
        Fault::CommitWithoutQuorum => " --fault commit-without-quorum".into(),
        Fault::DropSessionTouches => " --fault drop-session-touches".into(),
        Fault::NoSessionExpiry => " --fault no-session-expiry".into(),
        Fault::NoMissedEvents => " --fault no-missed-events".into(),
    };
    let default = SimOptions::default();
    let mut shape = String::new();
    if opts.nodes != default.nodes {
        shape += &format!(" --nodes {}", opts.nodes);
    }
    if opts.clients != default.clients {
        shape += &format!(" --clients {}", opts.clients);
    }
    if opts.watchers != default.watchers {
        shape += &format!(" --watchers {}", opts.watchers);
    }
    if opts.session_clients != default.session_clients {
        shape += &format!(" --session-clients {}", opts.session_clients);
    }
    if opts.ops_per_client != default.ops_per_client {
        shape += &format!(" --ops {}", opts.ops_per_client);
    }
    format!(
        "cargo run -p corebus-consensus --features sim --bin consensus-sim -- --seed {seed}{shape}{fault}"
    )
}
