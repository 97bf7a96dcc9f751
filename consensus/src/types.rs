//! Identifiers of the consensus group: [`Zxid`], [`Epoch`], [`NodeId`], client and session ids.
//!
//! Owns only plain value types and their ordering; never any protocol decision. A zxid is
//! ZooKeeper's 64-bit transaction id: the epoch of the leader that proposed it in the high 32
//! bits, a per-epoch counter in the low 32 bits, so zxids order first by epoch.

use std::fmt;

/// A voting member of the group.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct NodeId(pub u64);

/// A leader's term. Epochs only grow; at most one leader is established per epoch.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct Epoch(pub u32);

/// A transaction id: `(epoch, counter)`, ordered lexicographically.
///
/// Within one epoch only one leader proposes, so a zxid names exactly one transaction across
/// the whole group: two logs holding the same zxid hold the same transaction and the same
/// history before it (ZAB's prefix property). `Zxid::ZERO` is "before everything".
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct Zxid {
    pub epoch: u32,
    pub counter: u32,
}

impl Zxid {
    pub const ZERO: Zxid = Zxid {
        epoch: 0,
        counter: 0,
    };

    pub const fn new(epoch: u32, counter: u32) -> Zxid {
        Zxid { epoch, counter }
    }

    /// The 64-bit form ZooKeeper prints and stores.
    pub const fn as_u64(self) -> u64 {
        ((self.epoch as u64) << 32) | self.counter as u64
    }

    pub const fn from_u64(v: u64) -> Zxid {
        Zxid {
            epoch: (v >> 32) as u32,
            counter: v as u32,
        }
    }

    pub const fn epoch(self) -> Epoch {
        Epoch(self.epoch)
    }

    /// The next zxid in the same epoch, or `None` when the counter is exhausted (the leader must
    /// then step down so that a new epoch starts; ZooKeeper does the same).
    pub fn next_in_epoch(self) -> Option<Zxid> {
        self.counter.checked_add(1).map(|counter| Zxid {
            epoch: self.epoch,
            counter,
        })
    }
}

impl fmt::Display for Zxid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:08x}{:08x}", self.epoch, self.counter)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A client connection as a node knows it (the runtime assigns them; unique per node).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct ClientId(pub u64);

/// A client's request number, echoed in the reply.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct RequestId(pub u64);

/// A client session: the zxid of the transaction that created it, as a number (unique across
/// the group, and ordered by creation).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
// The session table is a map keyed by it, archived inside snapshots and SNAP messages.
#[rkyv(derive(PartialEq, Eq, PartialOrd, Ord))]
pub struct SessionId(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zxid_orders_by_epoch_then_counter() {
        assert!(Zxid::new(1, 99) < Zxid::new(2, 0));
        assert!(Zxid::new(2, 1) > Zxid::new(2, 0));
        assert_eq!(Zxid::from_u64(Zxid::new(7, 9).as_u64()), Zxid::new(7, 9));
        assert!(Zxid::new(3, 4).as_u64() < Zxid::new(4, 0).as_u64());
        assert_eq!(Zxid::new(1, u32::MAX).next_in_epoch(), None);
        assert_eq!(Zxid::new(1, 1).to_string(), "0x0000000100000001");
    }
}
