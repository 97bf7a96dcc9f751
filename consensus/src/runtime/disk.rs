//! The disk thread: executes the node's [`DiskOp`]s against the store in order, off the
//! executor, so an fdatasync never delays a ping, a vote or an ACK.
//!
//! Owns the [`LogStore`] and its files. Group commit falls out of the protocol: the node keeps
//! one `Sync` in flight, so every append queued while an fdatasync runs is covered by the next
//! one. `Truncate`, `ResetToSnapshot` and `SetEpochs` are acknowledged to the driver once
//! durable (it waits: later outputs must not run before them). `Snapshot` is not waited for:
//! it covers committed state the log already holds durably, and the store purges the log only
//! after the snapshot file is durable, so nothing later depends on it.
//!
//! The command queue is bounded ([`DISK_QUEUE_OPS`]): a driver that gets that far ahead of the
//! disk waits for it.
//!
//! Never: reorders operations; survives a failed write or fsync (after an fsync error the page
//! cache cannot be trusted, so the node stops and reports it, as ZooKeeper does).

use std::thread::JoinHandle;

use crate::limits::DISK_QUEUE_OPS;
use crate::store::LogStore;
use crate::types::Zxid;
use crate::zab::DiskOp;

use super::files::DirFiles;

pub(crate) enum DiskCmd {
    /// Run in order; `Sync` answers with [`DiskEvent::Synced`].
    Op(DiskOp),
    /// Run in order, then answer on `done` once durable.
    Durable(DiskOp, flume::Sender<()>),
    Stop,
}

pub(crate) enum DiskEvent {
    Synced { generation: u64, through: Zxid },
    Failed(String),
}

pub(crate) struct Disk {
    pub tx: flume::Sender<DiskCmd>,
    pub thread: JoinHandle<()>,
}

pub(crate) fn spawn(
    store: LogStore<DirFiles>,
    events: flume::Sender<DiskEvent>,
) -> std::io::Result<Disk> {
    let (tx, rx) = flume::bounded::<DiskCmd>(DISK_QUEUE_OPS);
    let thread = std::thread::Builder::new()
        .name("consensus-disk".into())
        .spawn(move || run(store, rx, events))?;
    Ok(Disk { tx, thread })
}

fn run(
    mut store: LogStore<DirFiles>,
    rx: flume::Receiver<DiskCmd>,
    events: flume::Sender<DiskEvent>,
) {
    while let Ok(cmd) = rx.recv() {
        let (op, done) = match cmd {
            DiskCmd::Op(op) => (op, None),
            DiskCmd::Durable(op, done) => (op, Some(done)),
            DiskCmd::Stop => return,
        };
        let result = match &op {
            DiskOp::Append(entry) => store.append(entry),
            DiskOp::Sync {
                generation,
                through,
            } => store.sync().map(|()| {
                let _ = events.send(DiskEvent::Synced {
                    generation: *generation,
                    through: *through,
                });
            }),
            DiskOp::Truncate { after } => store.truncate_after(*after),
            DiskOp::Snapshot(tree) => store.write_snapshot(tree),
            DiskOp::ResetToSnapshot(tree) => store.reset_to_snapshot(tree),
            DiskOp::SetEpochs(epochs) => store.set_epochs(*epochs),
        };
        match result {
            Ok(()) => {
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "consensus disk write failed; stopping the node");
                let _ = events.send(DiskEvent::Failed(e.to_string()));
                return;
            }
        }
    }
}
