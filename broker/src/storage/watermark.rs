//! An offset that only moves forward, and tasks of the same shard waiting for it.
//!
//! Owns: the "written" and "synced" marks of a log and their waiters. A waiter is released
//! with `Ok` when the mark reaches its target, or with an error when the log fails or gives
//! back the offsets the waiter was waiting for (disk full, truncation). A wait may start
//! after such a give-back already happened (glommio can run the write task before the
//! appending task first awaits its offsets; a produce request awaits its partitions in turn):
//! `wait_for_since` names the rejections the waiter's offsets were assigned after, and is
//! refused when a later one took them back, so offsets given back and assigned again to a
//! later append are never taken for the earlier append's. Never: shared across threads;
//! never moves backwards except through an explicit [`Watermark::reset`].

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::error::{Result, StorageError};

struct Waiter {
    target: i64,
    waker: Option<Waker>,
    outcome: Option<Result<()>>,
}

/// Rejections remembered for waits that start late; a wait older than all of them is
/// refused (its caller retries: conservative, and only after this many give-backs).
const REJECTIONS_KEPT: usize = 64;

/// A forward-only mark: "every offset below `get()` is written (or synced)".
pub(crate) struct Watermark {
    value: Cell<i64>,
    /// Set when the log failed for good: every later waiter above the mark gets it.
    failure: RefCell<Option<StorageError>>,
    waiters: RefCell<Vec<Rc<RefCell<Waiter>>>>,
    /// Rejections so far (`reject_above`, `reset`).
    rejection_count: Cell<u64>,
    /// The latest rejections: (count after it, the mark it rejected above, its error).
    rejections: RefCell<VecDeque<(u64, i64, StorageError)>>,
}

impl Watermark {
    pub(crate) fn new(value: i64) -> Watermark {
        Watermark {
            value: Cell::new(value),
            failure: RefCell::new(None),
            waiters: RefCell::new(Vec::new()),
            rejection_count: Cell::new(0),
            rejections: RefCell::new(VecDeque::new()),
        }
    }

    /// Rejections so far: an append's offsets are assigned after this many
    /// (`wait_for_since`).
    pub(crate) fn rejections(&self) -> u64 {
        self.rejection_count.get()
    }

    /// The error of a rejection after the first `since` that took back `target`, if any.
    fn rejected_since(&self, since: u64, target: i64) -> Option<StorageError> {
        let kept = self.rejections.borrow();
        if let Some((first, _, e)) = kept.front()
            && *first > since + 1
        {
            // Rejections the waiter would have to know of are forgotten.
            return Some(e.duplicate());
        }
        kept.iter()
            .find(|(n, from, _)| *n > since && *from < target)
            .map(|(_, _, e)| e.duplicate())
    }

    pub(crate) fn get(&self) -> i64 {
        self.value.get()
    }

    /// Moves the mark to `value` (never backwards) and releases the waiters it reached.
    pub(crate) fn advance(&self, value: i64) {
        if value <= self.value.get() {
            return;
        }
        self.value.set(value);
        self.release(|target| target <= value, || Ok(()));
    }

    /// Sets the mark to `value` after a truncation; waiters above it get `error`.
    pub(crate) fn reset(&self, value: i64, error: &StorageError) {
        self.value.set(value);
        self.reject_above(value, error);
    }

    /// Releases every waiter whose target is above `from` with `error` (their offsets were
    /// given back); the mark itself stays.
    pub(crate) fn reject_above(&self, from: i64, error: &StorageError) {
        let n = self.rejection_count.get() + 1;
        self.rejection_count.set(n);
        let mut kept = self.rejections.borrow_mut();
        if kept.len() == REJECTIONS_KEPT {
            kept.pop_front();
        }
        kept.push_back((n, from, error.duplicate()));
        drop(kept);
        self.release(|target| target > from, || Err(error.duplicate()));
    }

    /// The log failed: every present and future waiter above the mark gets `error`.
    pub(crate) fn fail(&self, error: &StorageError) {
        *self.failure.borrow_mut() = Some(error.duplicate());
        let value = self.value.get();
        self.reject_above(value, error);
    }

    fn release(&self, pick: impl Fn(i64) -> bool, outcome: impl Fn() -> Result<()>) {
        let mut wakers = Vec::new();
        self.waiters.borrow_mut().retain(|w| {
            let mut w = w.borrow_mut();
            if !pick(w.target) {
                return true;
            }
            w.outcome = Some(outcome());
            wakers.extend(w.waker.take());
            false
        });
        // Wake after the borrow ends: a woken task may register again right away.
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Waits until the mark is at least `target`.
    pub(crate) fn wait_for(&self, target: i64) -> WaitFor<'_> {
        WaitFor {
            mark: self,
            target,
            since: None,
            waiter: None,
        }
    }

    /// Waits until the mark is at least `target`, for offsets assigned after the first
    /// `since` rejections: refused at once when a later one took them back, even if the mark
    /// has passed `target` since (other appends then hold those offsets).
    pub(crate) fn wait_for_since(&self, target: i64, since: u64) -> WaitFor<'_> {
        WaitFor {
            mark: self,
            target,
            since: Some(since),
            waiter: None,
        }
    }
}

pub(crate) struct WaitFor<'a> {
    mark: &'a Watermark,
    target: i64,
    since: Option<u64>,
    waiter: Option<Rc<RefCell<Waiter>>>,
}

impl Future for WaitFor<'_> {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if let Some(w) = &self.waiter {
            let mut w = w.borrow_mut();
            return match w.outcome.take() {
                Some(outcome) => Poll::Ready(outcome),
                None => {
                    w.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            };
        }
        if let Some(since) = self.since
            && let Some(e) = self.mark.rejected_since(since, self.target)
        {
            return Poll::Ready(Err(e));
        }
        if self.mark.value.get() >= self.target {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = self.mark.failure.borrow().as_ref() {
            return Poll::Ready(Err(e.duplicate()));
        }
        let waiter = Rc::new(RefCell::new(Waiter {
            target: self.target,
            waker: Some(cx.waker().clone()),
            outcome: None,
        }));
        self.mark.waiters.borrow_mut().push(waiter.clone());
        self.waiter = Some(waiter);
        Poll::Pending
    }
}

impl Drop for WaitFor<'_> {
    fn drop(&mut self) {
        if let Some(w) = self.waiter.take() {
            self.mark
                .waiters
                .borrow_mut()
                .retain(|x| !Rc::ptr_eq(x, &w));
        }
    }
}
