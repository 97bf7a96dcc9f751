//! One member of a classic group: who it is (member id, static instance id, client), the
//! protocols it offered in its last JoinGroup, the assignment it was given, its timeouts,
//! and where it stands in the current rebalance.
//!
//! Never: decides group transitions (the group state machine does); reads a clock (times
//! come in as arguments).

use bytes::Bytes;

/// A protocol a member supports (an assignor for consumers) with its member metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    /// `group.instance.id` of a static member (KIP-345).
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// In the member's order of preference.
    pub protocols: Vec<Protocol>,
    /// What the leader assigned it in the last completed rebalance.
    pub assignment: Bytes,
    /// Sent JoinGroup for the rebalance under way and waits for its answer.
    pub awaiting_join: bool,
    /// Sent SyncGroup and waits for the leader's assignment to be stored.
    pub awaiting_sync: bool,
    /// When the member is gone unless it heartbeats, joins or syncs before.
    pub session_deadline_ms: i64,
    /// Answer its JoinGroup with `skip_assignment` when it is a static leader rejoining
    /// (JoinGroup v9, KIP-814).
    pub supports_skip_assignment: bool,
}

impl Member {
    pub fn is_static(&self) -> bool {
        self.instance_id.is_some()
    }

    /// The metadata this member offered for `protocol`.
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    pub fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|p| p.name == protocol)
    }

    /// Its first choice among `candidates` (the protocols every member supports).
    pub fn vote<'a>(&'a self, candidates: &[&str]) -> Option<&'a str> {
        self.protocols
            .iter()
            .map(|p| p.name.as_str())
            .find(|n| candidates.contains(n))
    }

    /// Pushes the session deadline out from `now_ms` (a heartbeat, join or sync).
    pub fn touch(&mut self, now_ms: i64) {
        self.session_deadline_ms = now_ms.saturating_add(i64::from(self.session_timeout_ms));
    }

    /// Whether the session ran out. A member waiting for a join or sync answer has done its
    /// part and is not expired (Kafka's `hasSatisfiedHeartbeat`).
    pub fn expired(&self, now_ms: i64) -> bool {
        !self.awaiting_join && !self.awaiting_sync && now_ms >= self.session_deadline_ms
    }

    /// Same protocols with the same metadata, in the same order.
    pub fn same_protocols(&self, protocols: &[Protocol]) -> bool {
        self.protocols == protocols
    }
}
