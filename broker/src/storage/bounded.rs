//! Running many per-log operations of one shard at once, a bounded number at a time: opening
//! and closing thousands of logs one after another costs one fsync round trip each (10,000
//! empty partitions took 98 s to open and 55 s to close here); through io_uring the same
//! syncs overlap.
//!
//! Never: runs more than `limit` operations at once, or leaves the shard's executor.

use std::future::Future;

/// Runs `f` on every item, at most `limit` at a time, on the current glommio executor, and
/// returns the results in the items' order.
pub async fn run_bounded<I, T, F, Fut>(items: Vec<I>, limit: usize, f: F) -> Vec<T>
where
    I: 'static,
    T: 'static,
    F: Fn(I) -> Fut,
    Fut: Future<Output = T> + 'static,
{
    let mut out = Vec::with_capacity(items.len());
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let tasks: Vec<_> = items
            .by_ref()
            .take(limit.max(1))
            .map(|item| glommio::spawn_local(f(item)))
            .collect();
        for t in tasks {
            out.push(t.await);
        }
    }
    out
}
