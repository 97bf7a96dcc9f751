//! A shard's pool of memory for requests being read (Kafka's `queued.max.request.bytes`, per
//! shard here: see `corebus.shard.request.memory.pool.bytes`): a connection takes a frame's
//! announced size from it as soon as the size prefix arrives, before it reads the body, and
//! gives it back when the request is done with its memory (the permit is dropped). The same
//! type is the shard's Fetch read budget (`corebus.shard.fetch.memory.budget.bytes`): a
//! partition read takes its size before it allocates and gives it back once its chunks are
//! written to the socket (or, for a connection of another shard, once copied).
//!
//! Per shard, not per node: a shard's connections, buffers and allocations live on its own
//! thread, so a shard-local count needs no atomics, and a shard waiting for memory is woken by
//! its own requests finishing, never by another thread.
//!
//! Not a queue: glommio's semaphore grants a new request that fits in what is free even while
//! a larger one waits, so one large frame waiting for memory does not hold up the small
//! requests of every other connection (a large frame can wait while small ones keep the pool
//! busy; the read timeout bounds how long any frame holds memory while it arrives).
//!
//! Owns: `MemoryPool`, `MemoryPermit`. Never: grants more than its capacity in total (a
//! request larger than the whole pool is refused, not waited for, since it could never be
//! granted).

use std::rc::Rc;

use glommio::sync::Semaphore;

/// Bytes of a shard's request memory, held until dropped.
pub struct MemoryPermit {
    bytes: usize,
    // `None` for an empty frame: nothing to give back.
    pool: Option<Rc<Semaphore>>,
}

impl MemoryPermit {
    fn new(bytes: usize, pool: &Rc<Semaphore>) -> MemoryPermit {
        MemoryPermit {
            bytes,
            pool: (bytes > 0).then(|| pool.clone()),
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Gives back all but `bytes` now (a Fetch read that took for its worst case keeps what
    /// it actually holds); no effect when it holds no more than that.
    pub fn shrink_to(&mut self, bytes: usize) {
        if bytes >= self.bytes {
            return;
        }
        if let Some(pool) = &self.pool {
            pool.signal((self.bytes - bytes) as u64);
        }
        self.bytes = bytes;
    }
}

impl Drop for MemoryPermit {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool
            && self.bytes > 0
        {
            pool.signal(self.bytes as u64);
        }
    }
}

impl std::fmt::Debug for MemoryPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemoryPermit({} bytes)", self.bytes)
    }
}

/// Why no memory was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolRefusal {
    /// More bytes than the pool holds in all; waiting could never help.
    #[error("{wanted_bytes} bytes asked of a memory pool of {capacity_bytes} bytes")]
    LargerThanPool {
        wanted_bytes: usize,
        capacity_bytes: usize,
    },
    /// The pool was closed (the shard is stopping).
    #[error("the memory pool is closed")]
    Closed,
}

/// A fixed number of bytes shared by a shard's connections; see the module doc.
pub struct MemoryPool {
    capacity_bytes: usize,
    units: Rc<Semaphore>,
}

impl MemoryPool {
    pub fn new(capacity_bytes: usize) -> MemoryPool {
        MemoryPool {
            capacity_bytes,
            units: Rc::new(Semaphore::new(capacity_bytes as u64)),
        }
    }

    pub fn capacity_bytes(&self) -> usize {
        self.capacity_bytes
    }

    /// Bytes granted and not yet given back.
    pub fn in_use_bytes(&self) -> usize {
        let available = usize::try_from(self.units.available()).unwrap_or(usize::MAX);
        self.capacity_bytes.saturating_sub(available)
    }

    /// Waits until `bytes` are free and takes them; refuses at once what the pool could never
    /// grant.
    pub async fn take(&self, bytes: usize) -> Result<MemoryPermit, PoolRefusal> {
        if bytes > self.capacity_bytes {
            return Err(PoolRefusal::LargerThanPool {
                wanted_bytes: bytes,
                capacity_bytes: self.capacity_bytes,
            });
        }
        if bytes == 0 {
            return Ok(MemoryPermit::new(0, &self.units));
        }
        match self.units.acquire(bytes as u64).await {
            Ok(()) => Ok(MemoryPermit::new(bytes, &self.units)),
            Err(_) => Err(PoolRefusal::Closed),
        }
    }

    /// Takes `bytes` if they are free now and nobody waits for memory; never waits.
    pub fn try_take(&self, bytes: usize) -> Option<MemoryPermit> {
        if bytes > self.capacity_bytes {
            return None;
        }
        if bytes == 0 {
            return Some(MemoryPermit::new(0, &self.units));
        }
        match self.units.try_acquire(bytes as u64) {
            Ok(true) => Some(MemoryPermit::new(bytes, &self.units)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::Duration;

    use super::*;

    fn on_executor(
        f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> + Send + 'static,
    ) {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn grants_up_to_capacity_and_frees_on_drop() {
        on_executor(|| {
            Box::pin(async {
                let pool = MemoryPool::new(100);
                let a = pool.take(60).await.unwrap();
                let b = pool.take(40).await.unwrap();
                assert_eq!(pool.in_use_bytes(), 100);
                drop(a);
                assert_eq!(pool.in_use_bytes(), 40);
                drop(b);
                assert_eq!(pool.in_use_bytes(), 0);
                // An empty frame costs nothing and never waits, even with the pool full.
                let _full = pool.take(100).await.unwrap();
                let _empty = pool.take(0).await.unwrap();
                assert_eq!(pool.in_use_bytes(), 100);
            })
        });
    }

    #[test]
    fn a_permit_shrinks_to_what_it_keeps_and_try_take_never_waits() {
        on_executor(|| {
            Box::pin(async {
                let pool = MemoryPool::new(100);
                let mut a = pool.take(80).await.unwrap();
                assert!(pool.try_take(30).is_none(), "only 20 free");
                a.shrink_to(50);
                assert_eq!((a.bytes(), pool.in_use_bytes()), (50, 50));
                a.shrink_to(70); // never grows
                assert_eq!(pool.in_use_bytes(), 50);
                let b = pool.try_take(30).expect("30 free after the shrink");
                assert_eq!(pool.in_use_bytes(), 80);
                drop((a, b));
                assert_eq!(pool.in_use_bytes(), 0);
                assert!(pool.try_take(101).is_none());
            })
        });
    }

    #[test]
    fn refuses_more_than_the_pool_at_once() {
        on_executor(|| {
            Box::pin(async {
                let pool = MemoryPool::new(100);
                assert_eq!(
                    pool.take(101).await.unwrap_err(),
                    PoolRefusal::LargerThanPool {
                        wanted_bytes: 101,
                        capacity_bytes: 100
                    }
                );
                assert_eq!(pool.in_use_bytes(), 0);
            })
        });
    }

    #[test]
    fn waits_when_exhausted_and_lets_what_fits_go_first() {
        on_executor(|| {
            Box::pin(async {
                let pool = Rc::new(MemoryPool::new(100));
                let held = pool.take(90).await.unwrap();
                let order = Rc::new(Cell::new(Vec::<&str>::new()));
                let push = |o: &Rc<Cell<Vec<&'static str>>>, what| {
                    let mut v = o.take();
                    v.push(what);
                    o.set(v);
                };
                // A large request waits; a small one that fits in what is free does not.
                let large = {
                    let (pool, order) = (pool.clone(), order.clone());
                    glommio::spawn_local(async move {
                        let p = pool.take(50).await.unwrap();
                        push(&order, "large");
                        p
                    })
                };
                glommio::timer::sleep(Duration::from_millis(5)).await;
                let small = pool.take(5).await.unwrap();
                assert!(order.take().is_empty(), "nothing granted past the capacity");
                assert_eq!(pool.in_use_bytes(), 95);
                drop(held);
                let large = large.await;
                assert_eq!(order.take(), vec!["large"]);
                assert_eq!(pool.in_use_bytes(), 55);
                drop((large, small));
                assert_eq!(pool.in_use_bytes(), 0);
            })
        });
    }
}
