//! Client sessions as the replicated state knows them: the record each node keeps per live
//! session, and the rule that turns a client's requested timeout into the one it gets.
//!
//! Owns the session record and timeout negotiation only. Which sessions are alive is decided
//! by committed transactions ([`crate::txn::Txn::CreateSession`] / `CloseSession`), applied by
//! [`crate::tree`]; when one has been silent too long is decided by the leader alone
//! ([`crate::zab::leader`]), which proposes its expiry through the quorum. Never reads a clock.
//!
//! # How long an ephemeral node outlives its client
//!
//! A session's timeout `T` runs on the leader from the last request or heartbeat it heard of
//! from that session. A client's heartbeat reaches a follower first; the follower passes the
//! sessions it heard from to the leader with its answer to the leader's next ping, so the
//! leader may learn of it up to one ping interval `P` late. After `T` of silence the leader
//! proposes the expiry on its next tick, and the ephemeral nodes go when that commits (one
//! quorum round trip `C`). So a dead client's ephemeral nodes are gone within
//! `T + P + 1 tick + C` while the leader stays. If the leader changes meanwhile, the new one
//! knows nothing of when sessions last spoke and gives every session a fresh timeout once it
//! is established, so the bound becomes `E + T + 1 tick + C`, where `E` is the time from the
//! client's death to the new leader's establishment (at most the old leader's silence limit,
//! `sync_limit_ticks`, plus the election and `init_limit_ticks`). A session whose client is
//! alive never expires as long as some node it can reach hears from it at least every
//! `T - P`: the client heartbeats after `T / 3` of quiet and moves to another node after
//! `2 T / 3` without an answer.

/// One live session.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct SessionInfo {
    /// The negotiated timeout, in protocol ticks.
    pub timeout_ticks: u32,
    /// Proves a client re-attaching after a move is the session's owner.
    pub password: u64,
}

/// The timeout a session gets for the one it asked: clamped to the group's bounds, as
/// ZooKeeper clamps to its `minSessionTimeout`/`maxSessionTimeout`.
pub fn negotiate_timeout_ticks(requested_ticks: u64, min_ticks: u32, max_ticks: u32) -> u32 {
    let min = min_ticks.min(max_ticks);
    u32::try_from(requested_ticks)
        .unwrap_or(u32::MAX)
        .clamp(min, max_ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_clamped() {
        assert_eq!(negotiate_timeout_ticks(0, 20, 200), 20);
        assert_eq!(negotiate_timeout_ticks(150, 20, 200), 150);
        assert_eq!(negotiate_timeout_ticks(u64::MAX, 20, 200), 200);
        // A misconfigured group (min over max) still answers within max.
        assert_eq!(negotiate_timeout_ticks(5, 300, 200), 200);
    }
}
