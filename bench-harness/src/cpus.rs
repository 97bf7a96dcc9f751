//! The CPUs the harness may run on, from `sched_getaffinity`, so `taskset` and cgroup cpusets
//! decide how many executors it starts and where.
//!
//! Never: picks CPUs outside the affinity mask.

/// The CPUs in this process's affinity mask, ascending.
pub fn allowed_cpus() -> std::io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set, and the kernel writes at
    // most size_of::<cpu_set_t>() bytes into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a valid, writable cpu_set_t of `size` bytes.
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: CPU_ISSET reads the set for indices below its capacity only.
    let cpus: Vec<usize> = (0..8 * size)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect();
    if cpus.is_empty() {
        return Err(std::io::Error::other("sched_getaffinity returned no CPU"));
    }
    Ok(cpus)
}
