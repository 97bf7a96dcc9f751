//! `consensus ls|get|stat|watch`: the metadata tree and the group's members through the
//! consensus crate's own client, on a glommio executor of one thread that lives for one
//! command.
//!
//! Reads start with a `sync`, so they see every write the group acknowledged before the
//! command started, whichever member answers. Never writes to the tree.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::{Args, Subcommand};
use corebus_consensus::client::{Client, ClientConfig, Error as ConsensusError};
use corebus_consensus::proto::client::NodeStatus;
use corebus_consensus::txn::{Stat, TreeError};
use corebus_consensus::watch::WatchEvent;
use glommio::{LocalExecutorBuilder, Placement};
use serde_json::{Value, json};

use crate::output::{Format, Section, Table, print_reports, print_sections, print_table};
use crate::{Failure, Outcome};

/// Default consensus address: the broker's embedded node on its default port.
const DEFAULT_CONSENSUS: &str = "127.0.0.1:9093";
/// Time one request may take, retries on other members included.
const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Nodes `ls -r` lists at most; a bigger subtree is cut with a message.
const MAX_LIST_NODES: usize = 100_000;
/// While watching with nothing happening, ask the node this often, so that a dead
/// connection is found (and the client moves, re-registering the watch) rather than
/// waiting forever.
const WATCH_PROBE_MS: u64 = 2_000;

#[derive(Args)]
pub struct ConsensusArgs {
    /// Consensus nodes, HOST:PORT[,HOST:PORT...]; any member answers reads and forwards
    #[arg(long, global = true, env = "COREBUS_CONSENSUS", default_value = DEFAULT_CONSENSUS,
          value_delimiter = ',', value_parser = parse_addr)]
    consensus: Vec<SocketAddr>,
    /// Time one request may take, retries on other members included (ms)
    #[arg(long, global = true, default_value_t = DEFAULT_REQUEST_TIMEOUT_MS)]
    timeout_ms: u64,
    #[command(subcommand)]
    command: ConsensusCommand,
}

#[derive(Subcommand)]
pub enum ConsensusCommand {
    /// The children of PATH with their stat (-r: the whole subtree)
    Ls {
        path: String,
        #[arg(short, long)]
        recursive: bool,
    },
    /// The data of PATH and its stat (version, zxids, ephemeral owner)
    Get { path: String },
    /// Each node's role, epoch and zxids; on the leader, each follower's lag
    Stat,
    /// Print changes at PATH (its children too, or with -r everything below it) until
    /// interrupted or COUNT events
    Watch {
        path: String,
        #[arg(short, long)]
        recursive: bool,
        /// Stop after this many events
        #[arg(short = 'n', long)]
        count: Option<usize>,
    },
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("{s}: {e}"))?
        .next()
        .ok_or_else(|| format!("{s}: no address"))
}

/// A client error as the command's failure: unreachable group (exit 3), else refused.
fn failure(context: &str, e: ConsensusError) -> Failure {
    match e {
        ConsensusError::Unavailable { .. }
        | ConsensusError::Timeout { .. }
        | ConsensusError::ConnectionLoss { .. }
        | ConsensusError::NoServers => Failure::Unreachable(format!("{context}: {e}")),
        ConsensusError::Tree {
            error: TreeError::NoNode,
            ..
        } => Failure::Refused(format!("{context}: no such node")),
        e => Failure::Refused(format!("{context}: {e}")),
    }
}

fn client(servers: Vec<SocketAddr>, timeout_ms: u64) -> Result<Client, Failure> {
    let mut cfg = ClientConfig::new(servers);
    cfg.request_timeout_ms = timeout_ms;
    Client::new(cfg).map_err(|e| failure("consensus client", e))
}

pub fn run(args: ConsensusArgs, format: Format) -> Outcome {
    LocalExecutorBuilder::new(Placement::Unbound)
        .name("corebus-ctl")
        .spawn(move || async move {
            let servers = args.consensus;
            let timeout_ms = args.timeout_ms;
            match args.command {
                ConsensusCommand::Ls { path, recursive } => {
                    ls(client(servers, timeout_ms)?, &path, recursive, format).await
                }
                ConsensusCommand::Get { path } => {
                    get(client(servers, timeout_ms)?, &path, format).await
                }
                ConsensusCommand::Stat => stat(servers, timeout_ms, format).await,
                ConsensusCommand::Watch {
                    path,
                    recursive,
                    count,
                } => {
                    watch(
                        client(servers, timeout_ms)?,
                        &path,
                        recursive,
                        count,
                        format,
                    )
                    .await
                }
            }
        })
        .map_err(|e| Failure::Refused(format!("cannot start an executor: {e}")))?
        .join()
        .map_err(|e| Failure::Refused(format!("executor: {e}")))?
}

fn join(parent: &str, child: &str) -> String {
    if parent == "/" {
        format!("/{child}")
    } else {
        format!("{parent}/{child}")
    }
}

fn stat_row(path: &str, s: &Stat) -> Vec<Value> {
    vec![
        json!(path),
        json!(s.version),
        json!(s.data_length),
        json!(s.num_children),
        json!(s.ephemeral_owner.map(|o| format!("0x{:x}", o.0))),
    ]
}

/// The rows of `ls` in path order, so that a subtree reads as a tree.
fn print_rows(format: Format, rows: BTreeMap<String, Vec<Value>>) {
    let mut table = Table::new(&[
        "path",
        "version",
        "data_bytes",
        "children",
        "ephemeral_owner",
    ]);
    for row in rows.into_values() {
        table.row(row);
    }
    print_table(format, &table);
}

async fn ls(c: Client, path: &str, recursive: bool, format: Format) -> Outcome {
    c.sync().await.map_err(|e| failure("sync", e))?;
    let mut rows = BTreeMap::new();
    let mut queue = VecDeque::from([path.to_owned()]);
    while let Some(parent) = queue.pop_front() {
        let names = match c.children(&parent).await {
            Ok(n) => n,
            // Deleted since its parent was listed: nothing below it any more.
            Err(ConsensusError::Tree {
                error: TreeError::NoNode,
                ..
            }) if parent != path => continue,
            Err(e) => return Err(failure(&parent, e)),
        };
        for name in names {
            let child = join(&parent, &name);
            let Some(s) = c.exists(&child).await.map_err(|e| failure(&child, e))? else {
                continue;
            };
            if rows.len() == MAX_LIST_NODES {
                print_rows(format, rows);
                return Err(Failure::Refused(format!(
                    "listing stopped after {MAX_LIST_NODES} nodes"
                )));
            }
            if recursive && s.num_children > 0 {
                queue.push_back(child.clone());
            }
            let row = stat_row(&child, &s);
            rows.insert(child, row);
        }
    }
    print_rows(format, rows);
    Ok(())
}

async fn get(c: Client, path: &str, format: Format) -> Outcome {
    c.sync().await.map_err(|e| failure("sync", e))?;
    let (data, s) = c.get(path).await.map_err(|e| failure(path, e))?;
    let (encoding, text) = match String::from_utf8(data) {
        Ok(t) => ("utf-8", t),
        Err(e) => (
            "hex",
            e.into_bytes().iter().map(|b| format!("{b:02x}")).collect(),
        ),
    };
    let owner = s.ephemeral_owner.map(|o| format!("0x{:x}", o.0));
    print_sections(
        format,
        &[
            ("path", Section::Value(json!(path))),
            ("data", Section::Value(json!(text))),
            ("encoding", Section::Value(json!(encoding))),
            ("version", Section::Value(json!(s.version))),
            ("cversion", Section::Value(json!(s.cversion))),
            ("czxid", Section::Value(json!(s.czxid.to_string()))),
            ("mzxid", Section::Value(json!(s.mzxid.to_string()))),
            ("pzxid", Section::Value(json!(s.pzxid.to_string()))),
            ("ephemeral_owner", Section::Value(json!(owner))),
            ("data_bytes", Section::Value(json!(s.data_length))),
            ("children", Section::Value(json!(s.num_children))),
        ],
    );
    Ok(())
}

fn role_name(s: &NodeStatus) -> String {
    format!("{:?}", s.role).to_lowercase()
}

fn status_sections(server: SocketAddr, s: &NodeStatus) -> Vec<(&'static str, Section)> {
    let mut followers = Table::new(&["id", "state", "acked_zxid", "lag", "last_heard_ms"]);
    for f in &s.followers {
        followers.row(vec![
            json!(f.id.0),
            json!(if f.synced { "synced" } else { "syncing" }),
            json!(f.acked.to_string()),
            json!(f.lag),
            json!(f.silent_ticks.saturating_mul(s.tick_ms)),
        ]);
    }
    vec![
        ("server", Section::Value(json!(server.to_string()))),
        ("id", Section::Value(json!(s.id.0))),
        ("role", Section::Value(json!(role_name(s)))),
        ("serving", Section::Value(json!(s.serving))),
        ("epoch", Section::Value(json!(s.current_epoch))),
        ("last_zxid", Section::Value(json!(s.last_zxid.to_string()))),
        (
            "committed_zxid",
            Section::Value(json!(s.committed.to_string())),
        ),
        ("tree_nodes", Section::Value(json!(s.tree_nodes))),
        ("followers", Section::Table(followers)),
    ]
}

/// Asks every listed node for its own status (not any member's: each one's role matters).
async fn stat(servers: Vec<SocketAddr>, timeout_ms: u64, format: Format) -> Outcome {
    let mut unreachable = Vec::new();
    let mut reports = Vec::new();
    for server in &servers {
        match client(vec![*server], timeout_ms)?.status().await {
            Ok(s) => reports.push(status_sections(*server, &s)),
            Err(e) => {
                unreachable.push(format!("{server}: {e}"));
                reports.push(vec![
                    ("server", Section::Value(json!(server.to_string()))),
                    ("error", Section::Value(json!(e.to_string()))),
                ]);
            }
        }
    }
    print_reports(format, &reports);
    if unreachable.is_empty() {
        Ok(())
    } else {
        Err(Failure::Unreachable(format!(
            "no status from {}",
            unreachable.join("; ")
        )))
    }
}

fn print_event(format: Format, e: &WatchEvent) -> std::io::Result<()> {
    let kind = format!("{:?}", e.kind);
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => writeln!(
            out,
            "{}",
            json!({"type": kind, "path": e.path, "zxid": e.zxid.to_string()})
        )?,
        Format::Text => writeln!(out, "{kind} {} {}", e.path, e.zxid)?,
    }
    out.flush()
}

async fn watch(
    c: Client,
    path: &str,
    recursive: bool,
    count: Option<usize>,
    format: Format,
) -> Outcome {
    c.add_watch(path, recursive)
        .await
        .map_err(|e| failure(path, e))?;
    // On stderr, so a script can wait for it before it makes the change it watches for.
    eprintln!("watching {path}");
    let events = c.events();
    let mut seen = 0usize;
    while count.is_none_or(|n| seen < n) {
        let next = futures_lite::future::or(async { events.recv_async().await.ok() }, async {
            glommio::timer::sleep(Duration::from_millis(WATCH_PROBE_MS)).await;
            None
        })
        .await;
        match next {
            Some(e) => {
                print_event(format, &e)?;
                seen += 1;
            }
            None => {
                c.sync().await.map_err(|e| failure("watch", e))?;
            }
        }
    }
    Ok(())
}
