//! A client workload against a consensus group, printing JSON: what the black-box test and
//! the benchmark drive. Not the admin CLI (that is `corebus-ctl consensus`).
//!
//! - `status --server A`: the node's view of itself.
//! - `load --servers A,B,C --duration-ms N`: creates unique nodes under a prefix from a few
//!   concurrent clients for N ms; reports every acknowledged path, every path whose outcome is
//!   unknown, and the longest time with no write acknowledged (the failover window).
//! - `dump --server A --prefix P`: sync, then every child of P with its data length.
//! - `bench --servers A,B,C --clients K --ops N [--rate W]`: each client creates then sets
//!   100-byte nodes; committed writes per second and commit latency percentiles. Closed loop
//!   by default; with `--rate` the clients together offer W writes/s, each write has an
//!   intended send time and its latency counts from it (coordinated omission corrected).
//!   scripts/zk-bench.c does the same against ZooKeeper, for scripts/consensus-bench. A write
//!   whose outcome is unknown (connection or leader lost before the reply) is asked again and
//!   resolved (each client writes only its own paths, so NodeExists or BadVersion on the
//!   retry proves the first one happened); `unknown_outcomes_resolved` counts them, and any
//!   other failure ends the bench with its error.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use corebus_consensus::client::{Client, ClientConfig, CreateMode, Error};
use corebus_consensus::txn::TreeError;
use glommio::{LocalExecutorBuilder, Placement};
use serde_json::json;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Status {
        #[arg(long)]
        server: SocketAddr,
    },
    Load {
        #[arg(long, value_delimiter = ',')]
        servers: Vec<SocketAddr>,
        #[arg(long, default_value_t = 10_000)]
        duration_ms: u64,
        #[arg(long, default_value_t = 4)]
        clients: usize,
        #[arg(long, default_value = "/load")]
        prefix: String,
        /// Time one write may take, retries included.
        #[arg(long, default_value_t = 3_000)]
        request_timeout_ms: u64,
    },
    Dump {
        #[arg(long)]
        server: SocketAddr,
        #[arg(long, default_value = "/load")]
        prefix: String,
    },
    Bench {
        #[arg(long, value_delimiter = ',')]
        servers: Vec<SocketAddr>,
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// create+set pairs per client.
        #[arg(long, default_value_t = 1_000)]
        ops: usize,
        #[arg(long, default_value_t = 100)]
        data_bytes: usize,
        /// Writes per second offered by all clients together; absent: closed loop.
        #[arg(long)]
        rate: Option<f64>,
    },
}

fn client(servers: Vec<SocketAddr>, request_timeout_ms: u64) -> Result<Client> {
    let mut cfg = ClientConfig::new(servers);
    cfg.request_timeout_ms = request_timeout_ms;
    Ok(Client::new(cfg)?)
}

async fn ensure(c: &Client, path: &str) -> Result<()> {
    match c.create(path, b"", CreateMode::Persistent).await {
        Ok(_)
        | Err(Error::Tree {
            error: TreeError::NodeExists,
            ..
        }) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {path}")),
    }
}

async fn status(server: SocketAddr) -> Result<serde_json::Value> {
    let s = client(vec![server], 2_000)?.status().await?;
    Ok(json!({
        "id": s.id.0, "role": format!("{:?}", s.role), "serving": s.serving,
        "epoch": s.current_epoch, "committed": s.committed.as_u64(),
        "last_zxid": s.last_zxid.as_u64(), "tree_nodes": s.tree_nodes, "tree_digest": s.tree_digest,
    }))
}

#[derive(Default)]
struct LoadLog {
    acked: Vec<String>,
    unknown: Vec<String>,
    ack_ms: Vec<u64>,
    errors: Vec<String>,
}

async fn load(
    servers: Vec<SocketAddr>,
    duration_ms: u64,
    clients: usize,
    prefix: String,
    timeout_ms: u64,
) -> Result<serde_json::Value> {
    ensure(&client(servers.clone(), 30_000)?, &prefix).await?;
    let start = Instant::now();
    let end = start + Duration::from_millis(duration_ms);
    let log = Rc::new(RefCell::new(LoadLog::default()));
    let mut tasks = Vec::new();
    for k in 0..clients {
        // Each worker starts at a different node, so some writes are forwarded.
        let mut mine = servers.clone();
        mine.rotate_left(k % servers.len());
        let c = client(mine, timeout_ms)?;
        let (log, prefix) = (log.clone(), prefix.clone());
        tasks.push(glommio::spawn_local(async move {
            let mut i = 0u64;
            while Instant::now() < end {
                let path = format!("{prefix}/c{k}-{i:08}");
                i += 1;
                match c.create(&path, &[b'x'; 100], CreateMode::Persistent).await {
                    Ok(_) => {
                        let mut l = log.borrow_mut();
                        l.acked.push(path);
                        l.ack_ms.push(start.elapsed().as_millis() as u64);
                    }
                    Err(e @ Error::Tree { .. }) => {
                        log.borrow_mut().errors.push(format!("{path}: {e}"))
                    }
                    // Outcome unknown: it may be there or not; the check allows both.
                    Err(_) => log.borrow_mut().unknown.push(path),
                }
            }
        }));
    }
    for t in tasks {
        t.await;
    }
    let mut l = log.take();
    l.ack_ms.sort_unstable();
    let (mut gap, mut gap_at) = (0u64, 0u64);
    for w in l.ack_ms.windows(2) {
        if w[1] - w[0] > gap {
            gap = w[1] - w[0];
            gap_at = w[0];
        }
    }
    Ok(json!({
        "acked": l.acked, "unknown": l.unknown, "errors": l.errors,
        "max_gap_ms": gap, "max_gap_at_ms": gap_at,
        "first_ack_ms": l.ack_ms.first(), "last_ack_ms": l.ack_ms.last(),
        "duration_ms": duration_ms,
    }))
}

async fn dump(server: SocketAddr, prefix: String) -> Result<serde_json::Value> {
    let c = client(vec![server], 10_000)?;
    let through = c.sync().await?;
    let mut names = c.children(&prefix).await?;
    names.sort();
    let mut sizes = Vec::with_capacity(names.len());
    for n in &names {
        let path = format!("{}/{n}", prefix.trim_end_matches('/'));
        sizes.push(c.get(&path).await?.0.len());
    }
    Ok(json!({ "synced_through": through.as_u64(), "children": names, "data_bytes": sizes }))
}

async fn bench(
    servers: Vec<SocketAddr>,
    clients: usize,
    ops: usize,
    data_bytes: usize,
    rate: Option<f64>,
) -> Result<serde_json::Value> {
    let prefix = format!("/bench-{}", std::process::id());
    ensure(&client(servers.clone(), 30_000)?, &prefix).await?;
    // Every client has its connection up before the clock starts, as zk-bench's sessions do.
    let mut conns = Vec::with_capacity(clients);
    for k in 0..clients {
        let mut mine = servers.clone();
        mine.rotate_left(k % servers.len());
        conns.push(client(mine, 10_000)?);
    }
    for c in &conns {
        c.exists(&prefix).await?;
    }
    let hist = Rc::new(RefCell::new(Vec::<u64>::with_capacity(clients * ops * 2)));
    let data = vec![b'b'; data_bytes];
    // Writes whose first outcome was unknown and that were resolved by asking again.
    let unknown = Rc::new(std::cell::Cell::new(0u64));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (k, c) in conns.into_iter().enumerate() {
        let (hist, prefix, data, unknown) =
            (hist.clone(), prefix.clone(), data.clone(), unknown.clone());
        tasks.push(glommio::spawn_local(async move {
            for i in 0..ops {
                let path = format!("{prefix}/c{k}-{i}");
                for step in 0..2 {
                    // This client's j-th write is the (j * clients + k)-th of the whole run.
                    let t0 = match rate {
                        Some(r) => {
                            let j = (2 * i + step) * clients + k;
                            let due = start + Duration::from_secs_f64(j as f64 / r);
                            let now = Instant::now();
                            if due > now {
                                glommio::timer::sleep(due - now).await;
                            }
                            due
                        }
                        None => Instant::now(),
                    };
                    let resolved = if step == 0 {
                        create_resolving(&c, &path, &data).await?
                    } else {
                        set_resolving(&c, &path, &data).await?
                    };
                    unknown.set(unknown.get() + resolved);
                    hist.borrow_mut().push(t0.elapsed().as_micros() as u64);
                }
            }
            Ok::<(), Error>(())
        }));
    }
    for t in tasks {
        t.await?;
    }
    let secs = start.elapsed().as_secs_f64();
    let mut h = hist.take();
    h.sort_unstable();
    let at = |q: f64| {
        h.get(((h.len() as f64 * q) as usize).min(h.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let writes = (clients * ops * 2) as f64;
    Ok(json!({
        "clients": clients, "writes": writes, "seconds": secs, "writes_per_second": writes / secs,
        "offered_writes_per_second": rate.unwrap_or(0.0),
        "p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": at(1.0),
        "unknown_outcomes_resolved": unknown.get(),
    }))
}

/// A write whose outcome is unknown (the connection or the node's leader was lost before the
/// reply, or no reply came in time), as ZooKeeper's ConnectionLoss: it may have happened.
fn outcome_unknown(e: &Error) -> bool {
    matches!(e, Error::ConnectionLoss { .. } | Error::Timeout { .. })
}

/// Creates `path`, which only this bench client ever writes. After an unknown outcome it asks
/// again: a create refused with NodeExists then proves the first one happened (nobody else
/// makes this path), so the write is done exactly once either way. Returns how many unknown
/// outcomes it resolved; any other failure is returned as it is.
async fn create_resolving(c: &Client, path: &str, data: &[u8]) -> Result<u64, Error> {
    let mut unknown = 0u64;
    loop {
        match c.create(path, data, CreateMode::Persistent).await {
            Ok(_) => return Ok(unknown),
            Err(Error::Tree {
                error: TreeError::NodeExists,
                ..
            }) if unknown > 0 => return Ok(unknown),
            Err(e) if outcome_unknown(&e) && unknown < MAX_UNKNOWN_OUTCOMES_PER_WRITE => {
                unknown += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Sets the data of this client's `path` from version 0 to 1 (a CAS). After an unknown
/// outcome it asks again: BadVersion then means the node moved on, which only this client's
/// first set can have done; that is checked by reading version 1 with our data back.
async fn set_resolving(c: &Client, path: &str, data: &[u8]) -> Result<u64, Error> {
    let mut unknown = 0u64;
    loop {
        match c.set(path, data, Some(0)).await {
            Ok(_) => return Ok(unknown),
            Err(
                e @ Error::Tree {
                    error: TreeError::BadVersion,
                    ..
                },
            ) if unknown > 0 => {
                // The read may land on another node than the refusal: sync it first.
                c.sync().await?;
                let (now, stat) = c.get(path).await?;
                return if stat.version == 1 && now == data {
                    Ok(unknown)
                } else {
                    Err(e)
                };
            }
            Err(e) if outcome_unknown(&e) && unknown < MAX_UNKNOWN_OUTCOMES_PER_WRITE => {
                unknown += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Unknown outcomes one bench write may resolve by asking again before the bench gives up.
const MAX_UNKNOWN_OUTCOMES_PER_WRITE: u64 = 5;

fn main() -> Result<()> {
    let cli = Cli::parse();
    let out = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            match cli.cmd {
                Cmd::Status { server } => status(server).await,
                Cmd::Load {
                    servers,
                    duration_ms,
                    clients,
                    prefix,
                    request_timeout_ms,
                } => {
                    if servers.is_empty() || clients == 0 {
                        bail!("--servers and --clients must not be empty");
                    }
                    load(servers, duration_ms, clients, prefix, request_timeout_ms).await
                }
                Cmd::Dump { server, prefix } => dump(server, prefix).await,
                Cmd::Bench {
                    servers,
                    clients,
                    ops,
                    data_bytes,
                    rate,
                } => {
                    if servers.is_empty() || clients == 0 {
                        bail!("--servers and --clients must not be empty");
                    }
                    if rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
                        bail!("--rate must be a positive number of writes per second");
                    }
                    bench(servers, clients, ops, data_bytes, rate).await
                }
            }
        })
        .map_err(|e| anyhow::anyhow!("executor: {e}"))?
        .join()
        .map_err(|e| anyhow::anyhow!("executor: {e}"))??;
    println!("{out}");
    Ok(())
}
