//! A linearizability checker for one key's history of creates, compare-and-sets and deletes
//! (Wing & Gong's search with Lowe's memoisation, as Knossos and Porcupine do).
//!
//! Owns the register model of a tree node (absent, or present at a version) and the search.
//! Operations whose outcome the client never learned may take effect at any point after
//! they started, or never. Histories are kept small (at most [`MAX_OPS_PER_KEY`]) so the
//! search stays fast.

use std::collections::HashSet;

use crate::txn::TreeError;

/// Bitmask width of the search.
pub const MAX_OPS_PER_KEY: usize = 64;
/// Search states explored before the checker gives up on one history (reported, not passed).
pub const MAX_SEARCH_STATES: usize = 2_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Create,
    Set { expected: Option<u32> },
    Delete { expected: Option<u32> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Succeeded; for a set, the new version.
    Ok {
        version: Option<u32>,
    },
    Failed(TreeError),
    /// The client never learned the outcome.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    pub kind: Kind,
    pub invoke_us: u64,
    /// `u64::MAX` for unknown outcomes.
    pub complete_us: u64,
    pub outcome: Outcome,
}

/// Absent, or present at a data version.
type State = Option<u32>;

/// The next state if `op` can take effect in `s` with its observed outcome.
fn step(s: State, op: &Op) -> Option<State> {
    let wanted = |s: State| -> Result<State, TreeError> {
        match (op.kind, s) {
            (Kind::Create, None) => Ok(Some(0)),
            (Kind::Create, Some(_)) => Err(TreeError::NodeExists),
            (Kind::Set { .. } | Kind::Delete { .. }, None) => Err(TreeError::NoNode),
            (Kind::Set { expected: Some(e) } | Kind::Delete { expected: Some(e) }, Some(v))
                if e != v =>
            {
                Err(TreeError::BadVersion)
            }
            (Kind::Set { .. }, Some(v)) => Ok(Some(v.wrapping_add(1))),
            (Kind::Delete { .. }, Some(_)) => Ok(None),
        }
    };
    match (op.outcome, wanted(s)) {
        (Outcome::Ok { version }, Ok(next)) => match (op.kind, version) {
            (Kind::Set { .. }, Some(v)) if next != Some(v) => None,
            _ => Some(next),
        },
        (Outcome::Failed(e), Err(w)) if e == w => Some(s),
        // An unknown op is only worth placing where it would have succeeded; placing a
        // failure changes nothing, which is the same as never placing it.
        (Outcome::Unknown, Ok(next)) => Some(next),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    NotLinearizable,
    GaveUp,
}

/// Checks one key's history, starting from `initial`.
pub fn check(ops: &[Op], initial: State) -> Verdict {
    if ops.len() > MAX_OPS_PER_KEY {
        return Verdict::GaveUp;
    }
    let must: u64 = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| o.outcome != Outcome::Unknown)
        .fold(0, |m, (i, _)| m | (1 << i));
    let mut seen: HashSet<(u64, State)> = HashSet::new();
    let mut stack: Vec<(u64, State)> = vec![(0, initial)];
    while let Some((done, s)) = stack.pop() {
        if done & must == must {
            return Verdict::Linearizable;
        }
        if !seen.insert((done, s)) {
            continue;
        }
        if seen.len() > MAX_SEARCH_STATES {
            return Verdict::GaveUp;
        }
        // Whatever comes next must have started before the earliest pending response.
        let horizon = ops
            .iter()
            .enumerate()
            .filter(|(i, o)| done & (1 << i) == 0 && o.outcome != Outcome::Unknown)
            .map(|(_, o)| o.complete_us)
            .min()
            .unwrap_or(u64::MAX);
        for (i, op) in ops.iter().enumerate() {
            if done & (1 << i) != 0 || op.invoke_us >= horizon {
                continue;
            }
            if let Some(next) = step(s, op) {
                stack.push((done | (1 << i), next));
            }
        }
    }
    Verdict::NotLinearizable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: Kind, invoke_us: u64, complete_us: u64, outcome: Outcome) -> Op {
        Op {
            kind,
            invoke_us,
            complete_us,
            outcome,
        }
    }

    #[test]
    fn sequential_history() {
        let h = [
            op(Kind::Create, 0, 1, Outcome::Ok { version: None }),
            op(
                Kind::Set { expected: Some(0) },
                2,
                3,
                Outcome::Ok { version: Some(1) },
            ),
            op(
                Kind::Set { expected: Some(0) },
                4,
                5,
                Outcome::Failed(TreeError::BadVersion),
            ),
            op(
                Kind::Delete { expected: None },
                6,
                7,
                Outcome::Ok { version: None },
            ),
        ];
        assert_eq!(check(&h, None), Verdict::Linearizable);
    }

    #[test]
    fn lost_write_is_caught() {
        // Set to version 1 acknowledged, then a later CAS on version 0 succeeds: impossible.
        let h = [
            op(Kind::Create, 0, 1, Outcome::Ok { version: None }),
            op(
                Kind::Set { expected: Some(0) },
                2,
                3,
                Outcome::Ok { version: Some(1) },
            ),
            op(
                Kind::Set { expected: Some(0) },
                4,
                5,
                Outcome::Ok { version: Some(1) },
            ),
        ];
        assert_eq!(check(&h, None), Verdict::NotLinearizable);
    }

    #[test]
    fn concurrent_and_unknown_ops() {
        // Two concurrent CAS on version 0: exactly one may win.
        let h = [
            op(Kind::Create, 0, 1, Outcome::Ok { version: None }),
            op(
                Kind::Set { expected: Some(0) },
                2,
                10,
                Outcome::Ok { version: Some(1) },
            ),
            op(
                Kind::Set { expected: Some(0) },
                3,
                9,
                Outcome::Failed(TreeError::BadVersion),
            ),
        ];
        assert_eq!(check(&h, None), Verdict::Linearizable);
        // An unknown set may explain a later version 2.
        let h = [
            op(Kind::Create, 0, 1, Outcome::Ok { version: None }),
            op(Kind::Set { expected: None }, 2, u64::MAX, Outcome::Unknown),
            op(
                Kind::Set { expected: Some(1) },
                20,
                21,
                Outcome::Ok { version: Some(2) },
            ),
        ];
        assert_eq!(check(&h, None), Verdict::Linearizable);
        // But not one that started after the read of its effect.
        let h = [
            op(Kind::Create, 0, 1, Outcome::Ok { version: None }),
            op(
                Kind::Set { expected: Some(1) },
                20,
                21,
                Outcome::Ok { version: Some(2) },
            ),
            op(Kind::Set { expected: None }, 30, u64::MAX, Outcome::Unknown),
        ];
        assert_eq!(check(&h, None), Verdict::NotLinearizable);
    }
}
