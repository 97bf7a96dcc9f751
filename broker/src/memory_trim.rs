//! Gives freed memory back to the system.
//!
//! glibc's allocator keeps what the process frees for later allocations: after a
//! 10,000-partition topic is deleted (its write buffers and cache freed), or 10,000
//! connections close, the broker's resident memory stays where it peaked (1.1 GiB measured
//! after such a topic, against 31 MiB fresh) although almost nothing is in use. A thread of its
//! own looks every `corebus.memory.trim.interval.ms` at how much the allocator holds free
//! (`mallinfo2`) and, when that is past `corebus.memory.trim.threshold.bytes` and more than
//! what is in use (the heap is mostly free: a peak has passed, not a steady load churning
//! its buffers), asks it to return its free pages (`malloc_trim`), as a JVM's collector
//! uncommits its free heap.
//!
//! Never: runs on a shard (a trim holds each allocator arena's lock while it returns pages,
//! so a shard allocating then waits for it; that is why it runs only past the threshold);
//! frees anything that is in use.

use std::time::Duration;

use tracing::{debug, info, warn};

/// Bytes returned by one trim worth an info line (smaller ones log at debug).
const LOG_RETURNED_BYTES: u64 = 64 << 20;

/// What a trim did: resident bytes before and after.
#[derive(Clone, Copy, Debug)]
pub struct Trimmed {
    pub resident_before: u64,
    pub resident_after: u64,
}

/// Bytes the allocator holds free (in its arenas, not returned to the system) and bytes in
/// use, where known.
pub fn heap() -> Option<(u64, u64)> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's own statistics.
        let info = unsafe { libc::mallinfo2() };
        Some((info.fordblks as u64, (info.uordblks + info.hblkhd) as u64))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// Resident bytes of this process (`/proc/self/statm`).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// Bytes the allocator holds free, where known.
pub fn free_bytes() -> Option<u64> {
    heap().map(|(free, _)| free)
}

/// Whether a heap with `free` bytes free and `in_use` in use should be trimmed.
fn worth_trimming(free: u64, in_use: u64, threshold: u64) -> bool {
    free >= threshold && free > in_use
}

/// Returns the allocator's free pages to the system now.
pub fn trim() -> Trimmed {
    let resident_before = resident_bytes().unwrap_or(0);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
    Trimmed {
        resident_before,
        resident_after: resident_bytes().unwrap_or(0),
    }
}

/// Starts the trimming thread; `interval_ms` 0 starts nothing. The thread runs until the
/// process exits.
pub fn start(interval_ms: u64, threshold_bytes: u64) {
    if interval_ms == 0 || free_bytes().is_none() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("memory-trim".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(interval_ms));
                if heap().is_some_and(|(free, used)| worth_trimming(free, used, threshold_bytes)) {
                    let began = std::time::Instant::now();
                    let t = trim();
                    let took_ms = began.elapsed().as_millis() as u64;
                    let returned = t.resident_before.saturating_sub(t.resident_after);
                    if returned >= LOG_RETURNED_BYTES {
                        info!(
                            returned_mib = returned >> 20,
                            resident_mib = t.resident_after >> 20,
                            took_ms,
                            "returned freed memory to the system"
                        );
                    } else {
                        debug!(
                            returned,
                            resident = t.resident_after,
                            took_ms,
                            "memory trim"
                        );
                    }
                }
            }
        });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the memory-trim thread; freed memory stays with the process");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_mostly_free_heap_past_the_threshold_is_trimmed() {
        assert!(worth_trimming(800 << 20, 40 << 20, 64 << 20));
        // A steady load: much free, more in use.
        assert!(!worth_trimming(200 << 20, 700 << 20, 64 << 20));
        assert!(!worth_trimming(10 << 20, 1 << 20, 64 << 20));
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_memory_is_counted_free_and_a_trim_returns_it() {
        // 64 MiB in blocks small enough to come from the heap, not from mmap, each followed
        // by a small allocation that stays: the freed blocks cannot merge into the heap's top
        // (which the allocator would give back on its own), as after a real workload.
        let (blocks, pins): (Vec<Vec<u8>>, Vec<Box<u64>>) = (0..2048u64)
            .map(|i| (vec![i as u8; 32 << 10], Box::new(i)))
            .unzip();
        let held = resident_bytes().unwrap();
        let free_before = free_bytes().unwrap();
        drop(blocks);
        assert!(
            free_bytes().unwrap() >= free_before + (32 << 20),
            "the freed blocks are not counted free"
        );
        let t = trim();
        assert!(t.resident_before > 0 && t.resident_after > 0);
        // Other tests of this process allocate meanwhile: only most of it must be gone.
        assert!(
            t.resident_after + (32 << 20) <= held,
            "resident {held} before the free, {} after the trim",
            t.resident_after
        );
        assert_eq!(pins.iter().map(|p| **p).sum::<u64>(), 2047 * 2048 / 2);
    }
}
