//! Session and watch drivers for the black-box tests: real clients of a real group, each a
//! process of its own so a test can kill one with SIGKILL. Every line on stdout is one JSON
//! object, flushed at once, so the test can follow along.
//!
//! - `hold --servers A,B,C --path P --timeout-ms T`: opens a session (trying the servers in
//!   the order given), creates the ephemeral node P, prints `ready`, then prints `server`
//!   whenever the connection moves and `expired` (exit 3) if the group expires the session.
//!   Runs until killed.
//! - `watch --server A --path P --linger-ms N --max-ms M`: `exists` with a watch on P
//!   (which must exist), prints `watching`, then every event as it arrives; N ms after the
//!   first event (or after M ms at most) prints `done` with the number of events.
//! - `get --server A --path P`: sync, then one line with the node's data (as UTF-8 text),
//!   data version and ephemeral owner, or `"exists": false`; and its children.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
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
    Hold {
        #[arg(long, value_delimiter = ',')]
        servers: Vec<SocketAddr>,
        #[arg(long)]
        path: String,
        #[arg(long, default_value_t = 2_000)]
        timeout_ms: u64,
    },
    Watch {
        #[arg(long)]
        server: SocketAddr,
        #[arg(long)]
        path: String,
        #[arg(long, default_value_t = 2_000)]
        linger_ms: u64,
        #[arg(long, default_value_t = 60_000)]
        max_ms: u64,
    },
    Get {
        #[arg(long)]
        server: SocketAddr,
        #[arg(long)]
        path: String,
    },
    /// Replaces a node's data (any version); says the node's new version.
    Set {
        #[arg(long)]
        server: SocketAddr,
        #[arg(long)]
        path: String,
        #[arg(long)]
        data: String,
    },
}

fn say(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    // A closed stdout means the test is gone; nothing left to tell.
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

async fn hold(servers: Vec<SocketAddr>, path: String, timeout_ms: u64) -> Result<()> {
    let mut cfg = ClientConfig::new(servers);
    cfg.session_timeout_ms = Some(timeout_ms);
    cfg.request_timeout_ms = 30_000;
    let c = Client::new(cfg)?;
    c.create(&path, b"held", CreateMode::Ephemeral).await?;
    let Some(session) = c.session() else {
        bail!("no session after an ephemeral create");
    };
    let mut server = c.server();
    say(json!({
        "event": "ready", "session": session.id.0, "timeout_ms": session.timeout_ms,
        "server": server.map(|s| s.to_string()),
    }));
    loop {
        glommio::timer::sleep(Duration::from_millis(20)).await;
        match c.session() {
            Some(s) if s.id == session.id => {}
            _ => {
                say(json!({"event": "expired", "session": session.id.0}));
                std::process::exit(3);
            }
        }
        let now = c.server();
        if now.is_some() && now != server {
            server = now;
            say(json!({
                "event": "server", "session": session.id.0,
                "server": server.map(|s| s.to_string()),
            }));
        }
    }
}

async fn watch(server: SocketAddr, path: String, linger_ms: u64, max_ms: u64) -> Result<()> {
    let mut cfg = ClientConfig::new(vec![server]);
    cfg.request_timeout_ms = 30_000;
    let c = Client::new(cfg)?;
    let events = c.events();
    if c.exists_watch(&path).await?.is_none() {
        bail!("{path} does not exist");
    }
    say(json!({"event": "watching", "path": path, "server": server.to_string()}));
    let start = Instant::now();
    let mut end = start + Duration::from_millis(max_ms);
    let mut count = 0u64;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let got = futures_lite::future::or(async { events.recv_async().await.ok() }, async {
            glommio::timer::sleep(left).await;
            None
        })
        .await;
        let Some(e) = got else { break };
        if count == 0 {
            end = end.min(Instant::now() + Duration::from_millis(linger_ms));
        }
        count += 1;
        say(json!({
            "event": "watch", "kind": format!("{:?}", e.kind), "path": e.path,
            "zxid": e.zxid.as_u64(), "at_ms": start.elapsed().as_millis() as u64,
        }));
    }
    say(json!({"event": "done", "count": count}));
    Ok(())
}

async fn get(server: SocketAddr, path: String) -> Result<()> {
    let mut cfg = ClientConfig::new(vec![server]);
    cfg.request_timeout_ms = 30_000;
    let c = Client::new(cfg)?;
    c.sync().await?;
    match c.get(&path).await {
        Ok((data, stat)) => {
            let mut children = c.children(&path).await?;
            children.sort();
            say(json!({
                "event": "node", "path": path, "exists": true,
                "data": String::from_utf8_lossy(&data), "version": stat.version,
                "ephemeral_owner": stat.ephemeral_owner.map(|s| s.0), "children": children,
            }));
        }
        Err(Error::Tree {
            error: TreeError::NoNode,
            ..
        }) => say(json!({"event": "node", "path": path, "exists": false})),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

async fn set(server: SocketAddr, path: String, data: String) -> Result<()> {
    let mut cfg = ClientConfig::new(vec![server]);
    cfg.request_timeout_ms = 30_000;
    let c = Client::new(cfg)?;
    let stat = c.set(&path, data.as_bytes(), None).await?;
    say(json!({"event": "set", "path": path, "version": stat.version}));
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            match cli.cmd {
                Cmd::Hold {
                    servers,
                    path,
                    timeout_ms,
                } => {
                    if servers.is_empty() {
                        bail!("--servers must not be empty");
                    }
                    hold(servers, path, timeout_ms).await
                }
                Cmd::Watch {
                    server,
                    path,
                    linger_ms,
                    max_ms,
                } => watch(server, path, linger_ms, max_ms).await,
                Cmd::Get { server, path } => get(server, path).await,
                Cmd::Set { server, path, data } => set(server, path, data).await,
            }
        })
        .map_err(|e| anyhow::anyhow!("executor: {e}"))?
        .join()
        .map_err(|e| anyhow::anyhow!("executor: {e}"))?
}
