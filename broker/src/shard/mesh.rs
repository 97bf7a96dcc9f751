//! The message mesh between shards: one bounded flume mailbox per shard carrying jobs (a
//! closure run on the target shard) and a one-shot reply. A request is split by owning shard
//! and each part crosses once, so a hop costs one message per shard per request, never one per
//! record. A flume channel is not lock-free: every send and receive takes the channel's own
//! short lock (a std mutex with the features corebus builds flume with), held for a queue push
//! or pop, never across an await, and contended only by the shards sending to that mailbox
//! and its owner; glommio wakes a sleeping executor through its eventfd.
//!
//! Never: runs a job on the wrong shard; blocks the sending reactor (sends are async, so a full
//! mailbox is backpressure, not a stall).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use thiserror::Error;

use super::{Shard, ShardId};
use crate::limits::SHARD_MAILBOX_DEPTH_MESSAGES;

/// Work sent to a shard: given that shard, produce the future to run there.
pub type Job = Box<dyn FnOnce(Rc<Shard>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// The target shard is gone (shutting down or crashed).
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("shard {0} is not running")]
pub struct ShardGone(pub ShardId);

/// Senders to every shard's mailbox; cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct Mesh {
    mailboxes: Arc<[flume::Sender<Job>]>,
}

impl Mesh {
    /// A mesh of `shard_count` mailboxes and their receivers, one per shard, in shard order.
    pub fn new(shard_count: usize) -> (Mesh, Vec<flume::Receiver<Job>>) {
        let (tx, rx): (Vec<_>, Vec<_>) = (0..shard_count)
            .map(|_| flume::bounded(SHARD_MAILBOX_DEPTH_MESSAGES))
            .unzip();
        (
            Mesh {
                mailboxes: tx.into(),
            },
            rx,
        )
    }

    pub fn shard_count(&self) -> usize {
        self.mailboxes.len()
    }

    /// Sends `job` to `target` without waiting for it to run (from any thread, blocking when
    /// the mailbox is full: for the signal thread, never for a reactor).
    pub fn post_blocking(&self, target: ShardId, job: Job) -> Result<(), ShardGone> {
        self.mailbox(target)?
            .send(job)
            .map_err(|_| ShardGone(target))
    }

    /// Sends `job` to `target` without waiting for it to run, from a plain thread, giving up
    /// after `timeout` when the mailbox stays full (the metrics thread: a scrape must not hang
    /// behind a saturated shard).
    pub fn post_timeout(
        &self,
        target: ShardId,
        job: Job,
        timeout: std::time::Duration,
    ) -> Result<(), ShardGone> {
        self.mailbox(target)?
            .send_timeout(job, timeout)
            .map_err(|_| ShardGone(target))
    }

    /// Runs `f` on `target` and returns its result.
    pub async fn call<T, F, Fut>(&self, target: ShardId, f: F) -> Result<T, ShardGone>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let (reply_tx, reply_rx) = flume::bounded(1);
        let job: Job = Box::new(move |shard| {
            Box::pin(async move {
                // The caller may have given up (connection closed): nothing to do then.
                let _ = reply_tx.send(f(shard).await);
            })
        });
        self.mailbox(target)?
            .send_async(job)
            .await
            .map_err(|_| ShardGone(target))?;
        reply_rx.recv_async().await.map_err(|_| ShardGone(target))
    }

    fn mailbox(&self, target: ShardId) -> Result<&flume::Sender<Job>, ShardGone> {
        self.mailboxes
            .get(usize::from(target.0))
            .ok_or(ShardGone(target))
    }
}

/// Runs every job that arrives in `mailbox` on `shard`, each as its own task, until every
/// sender is gone.
pub async fn serve_mailbox(shard: Rc<Shard>, mailbox: flume::Receiver<Job>) {
    while let Ok(job) = mailbox.recv_async().await {
        glommio::spawn_local(job(shard.clone())).detach();
    }
}
