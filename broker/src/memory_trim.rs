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
/// use, where known: glibc 2.33 or newer (`mallinfo2`, looked up when first needed, so the
/// binary still starts on an older glibc, without the trim). Each call locks every arena in
/// turn and walks its free chunks: call it from the trim thread only, not per request.
pub fn heap() -> Option<(u64, u64)> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        type MallInfo2 = unsafe extern "C" fn() -> libc::mallinfo2;
        static MALLINFO2: std::sync::OnceLock<Option<MallInfo2>> = std::sync::OnceLock::new();
        let f = MALLINFO2.get_or_init(|| {
            // SAFETY: a NUL-terminated name looked up in the already loaded libraries.
            let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"mallinfo2".as_ptr()) };
            // SAFETY: glibc's mallinfo2 has exactly this signature.
            (!sym.is_null())
                .then(|| unsafe { std::mem::transmute::<*mut libc::c_void, MallInfo2>(sym) })
        });
        // SAFETY: mallinfo2 only reads the allocator's own statistics.
        let info = unsafe { (*f)?() };
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

    // That a trim returns freed memory is tested on the real broker
    // (tests/blackbox/test_memory_return.py): measured here, the other tests of this process
    // allocating in parallel would make it flaky.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn the_heap_is_read_on_glibc() {
        let (free, in_use) = heap().expect("mallinfo2 on this glibc");
        assert!(in_use > 0, "free {free}, in use {in_use}");
        assert!(resident_bytes().unwrap() > 0);
    }
}
