//! Runs the deterministic simulator over a range of seeds (the long run behind `scripts/sim`)
//! or one seed verbosely (to reproduce a failure).
//!
//! `consensus-sim --seeds 100000 [--from N] [--nodes 5] [--fault ack-before-fsync]`
//! `consensus-sim --seed N`

use std::process::ExitCode;
use std::time::Instant;

use corebus_consensus::sim::{Coverage, SimOptions, repro_command, run};
use corebus_consensus::zab::Fault;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = SimOptions::default();
    let mut from = 0u64;
    let mut count = 1_000u64;
    let mut single = None;
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        let number = || value.parse::<u64>().unwrap_or_else(|_| usage(&args[i]));
        match args[i].as_str() {
            "--seed" => single = Some(number()),
            "--trace" => {
                opts.trace = true;
                i += 1;
                continue;
            }
            "--seeds" => count = number(),
            "--from" => from = number(),
            "--nodes" => opts.nodes = number() as usize,
            "--clients" => opts.clients = number() as usize,
            "--ops" => opts.ops_per_client = number() as u32,
            "--session-clients" => opts.session_clients = number() as usize,
            "--watchers" => opts.watchers = number() as usize,
            "--fault" => {
                opts.fault = match value.as_str() {
                    "ack-before-fsync" => Fault::AckBeforeFsync,
                    "commit-without-quorum" => Fault::CommitWithoutQuorum,
                    "drop-session-touches" => Fault::DropSessionTouches,
                    "no-session-expiry" => Fault::NoSessionExpiry,
                    "no-missed-events" => Fault::NoMissedEvents,
                    "none" => Fault::None,
                    _ => usage(&args[i]),
                }
            }
            other => usage(other),
        }
        i += 2;
    }
    if let Some(seed) = single {
        let r = run(seed, &opts);
        println!("{r:#?}");
        return if r.violations.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let started = Instant::now();
    let (mut failed, mut committed, mut events) = (0u64, 0usize, 0u64);
    let mut coverage = Coverage::default();
    let mut gave_up = 0u64;
    for seed in from..from + count {
        let r = run(seed, &opts);
        committed += r.committed;
        events += r.events;
        coverage.add(&r.coverage);
        if r.checker_gave_up > 0 {
            gave_up += 1;
            println!("seed {seed}: the linearizability checker gave up on a history");
        }
        if !r.violations.is_empty() {
            failed += 1;
            println!("seed {seed} FAILED: {}", r.violations.join(" | "));
            println!("  reproduce: {}", repro_command(seed, &opts));
        }
        if (seed - from + 1).is_multiple_of(1000) {
            eprintln!(
                "{} seeds, {failed} failed, {:.0} s",
                seed - from + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "{count} seeds from {from}: {failed} failed; {committed} commits, {events} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("coverage: {coverage:?}; checker gave up on {gave_up} seeds");
    println!("{} passed, {failed} failed", count - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn usage(bad: &str) -> ! {
    eprintln!(
        "bad argument {bad}\nusage: consensus-sim [--seed N | --seeds COUNT --from N] [--nodes N] [--clients N] [--ops N] [--session-clients N] [--watchers N] [--fault ack-before-fsync|commit-without-quorum|drop-session-touches|no-session-expiry|no-missed-events]"
    );
    std::process::exit(2)
}
