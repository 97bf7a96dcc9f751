//! The process's open-file limit and each shard's share of it for segment files.
//!
//! A broker holds a file per written partition (its active segment), a socket per client
//! connection, and a few hundred descriptors of its own (consensus, metrics, io_uring,
//! signals). Shells and containers often start a process with a soft limit of 1,024 and a
//! hard limit far above it; like the JVM (`-XX:+MaxFDLimit`, on by default) and Go's runtime,
//! the broker raises its soft limit to the hard one at start-up. What is left after the
//! connections (`max.connections`) and a reserve is split between the shards.
//!
//! Never: raises the hard limit (that is the operator's, e.g. systemd's `LimitNOFILE`).

use std::io;

use tracing::{info, warn};

use crate::limits::Limits;

/// Descriptors kept for what is neither a client connection nor a segment file.
pub const RESERVED_FILES: u64 = 1024;

/// The smallest per-shard budget, whatever the limit says (below it the broker would reopen
/// files even with a handful of partitions).
pub const MIN_FILES_PER_SHARD: usize = 256;

/// The open-file limit before and after start-up raised it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Raised {
    pub was: u64,
    pub now: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard one; returns both values (`now` stays `was`
/// when the raise is refused: the limit in force is what the budget must fit).
pub fn raise_limit() -> io::Result<Raised> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let was = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: a valid rlimit whose soft value does not exceed its hard one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        } else {
            warn!(
                soft = was,
                hard = lim.rlim_max,
                error = %io::Error::last_os_error(),
                "cannot raise the open-file limit to its hard value; keeping the soft one"
            );
        }
    }
    Ok(Raised {
        was,
        now: lim.rlim_cur,
    })
}

/// Raises the limit, then sets `limits.shard_max_open_files` to each of `shards`' budget
/// (`budget`), saying so in the log, with a warning when the budgets, the connections and the
/// reserve do not fit in the limit.
pub fn size_budget(limits: &mut Limits, shards: usize) {
    let limit = match raise_limit() {
        Ok(r) => {
            if r.now > r.was {
                info!(
                    was = r.was,
                    now = r.now,
                    "raised the open-file limit to its hard value"
                );
            }
            r.now
        }
        Err(e) => {
            warn!(error = %e, "cannot read the open-file limit; assuming 1024");
            1024
        }
    };
    limits.shard_max_open_files = budget(
        limits.shard_max_open_files,
        limit,
        limits.max_connections,
        shards,
    );
    info!(
        open_file_limit = limit,
        segment_files_per_shard = limits.shard_max_open_files,
        "open-file budget"
    );
    if !fits(
        limits.shard_max_open_files,
        shards,
        limits.max_connections,
        limit,
    ) {
        warn!(
            open_file_limit = limit,
            segment_files_per_shard = limits.shard_max_open_files,
            shards,
            max_connections = limits.max_connections,
            "segment files, max.connections and a reserve of {RESERVED_FILES} exceed the \
             open-file limit: under load, opening a file or accepting a connection can fail; \
             raise the limit (LimitNOFILE, ulimit -n) or lower max.connections"
        );
    }
}

/// Segment files each of `shards` may keep open: `setting` when it is not 0, else what the
/// process's `limit` leaves after `max_connections` and [`RESERVED_FILES`], split evenly (at
/// least [`MIN_FILES_PER_SHARD`]).
pub fn budget(setting: usize, limit: u64, max_connections: usize, shards: usize) -> usize {
    if setting != 0 {
        return setting;
    }
    let left = limit
        .saturating_sub(max_connections as u64)
        .saturating_sub(RESERVED_FILES);
    let each = left / shards.max(1) as u64;
    usize::try_from(each)
        .unwrap_or(usize::MAX)
        .max(MIN_FILES_PER_SHARD)
}

/// Whether `shards` budgets of `per_shard` files, `max_connections` sockets and the reserve
/// fit in `limit` (when they do not, opens and accepts can fail with EMFILE under load).
pub fn fits(per_shard: usize, shards: usize, max_connections: usize, limit: u64) -> bool {
    (per_shard as u64)
        .saturating_mul(shards as u64)
        .saturating_add(max_connections as u64)
        .saturating_add(RESERVED_FILES)
        <= limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_shared_after_connections_and_the_reserve() {
        // A systemd unit's LimitNOFILE=1048576, 10,000 connections, 2 shards.
        assert_eq!(budget(0, 1_048_576, 10_000, 2), (1_048_576 - 11_024) / 2);
        // A set value wins.
        assert_eq!(budget(5000, 1_048_576, 10_000, 2), 5000);
        // A limit smaller than the connections leaves the floor, never zero.
        assert_eq!(budget(0, 1024, 10_000, 4), MIN_FILES_PER_SHARD);
        // No shard count is taken as one.
        assert_eq!(budget(0, u64::MAX, 0, 0), usize::MAX - 1024);
        assert!(fits(budget(0, 20_000, 4_000, 1), 1, 4_000, 20_000));
        assert!(!fits(MIN_FILES_PER_SHARD, 4, 10_000, 1024));
    }

    #[test]
    fn raising_keeps_the_hard_limit() {
        let r = raise_limit().expect("getrlimit works");
        assert!(r.now >= r.was);
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid rlimit to fill.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(lim.rlim_cur, lim.rlim_max);
        assert_eq!(lim.rlim_cur, r.now);
    }
}
