//! Unit tests of the classic group state machine, time injected as `now_ms`.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

fn counter() -> String {
    NEXT_ID.fetch_add(1, Ordering::Relaxed).to_string()
}

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;
const DELAY_MS: i32 = 3_000;

fn limits() -> GroupLimits {
    GroupLimits {
        min_session_timeout_ms: 6_000,
        max_session_timeout_ms: 60_000,
        initial_rebalance_delay_ms: DELAY_MS,
        max_size_members: 3,
    }
}

fn group() -> ClassicGroup {
    ClassicGroup::new("g", limits(), 0).with_id_source(counter)
}

fn protocols(names: &[&str]) -> Vec<Protocol> {
    names
        .iter()
        .map(|n| Protocol {
            name: n.to_string(),
            metadata: Bytes::from(format!("meta-{n}")),
        })
        .collect()
}

fn req(member_id: &str, instance: Option<&str>) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_string(),
        instance_id: instance.map(str::to_string),
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".into(),
        protocols: protocols(&["range"]),
        require_known_member_id: true,
        supports_skip_assignment: false,
    }
}

/// The Join effects, by member id.
fn joins(effects: &[Effect]) -> Vec<(String, JoinResult)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Join { member_id, result } => Some((member_id.clone(), result.clone())),
            _ => None,
        })
        .collect()
}

fn syncs(effects: &[Effect]) -> Vec<(String, SyncResult)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Sync { member_id, result } => Some((member_id.clone(), result.clone())),
            _ => None,
        })
        .collect()
}

/// A first join (KIP-394 round trip included) that is left waiting; returns the member id.
fn join_new(g: &mut ClassicGroup, now: i64) -> (String, Vec<Effect>) {
    let (reply, effects) = g.join(req("", None), now);
    assert!(effects.is_empty());
    let Reply::Now(r) = reply else {
        panic!("first join must be answered at once")
    };
    assert_eq!(r.error, Some(ResponseError::MemberIdRequired));
    assert!(r.member_id.starts_with("client-"));
    let (reply, effects) = g.join(req(&r.member_id, None), now);
    assert_eq!(reply, Reply::Wait(r.member_id.clone()));
    (r.member_id, effects)
}

/// Drives `g` from Empty to Stable with members `n`; returns their ids (leader first).
fn stable_group(g: &mut ClassicGroup, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|_| join_new(g, 0).0).collect();
    // The initial delay runs out (extended once because members kept arriving).
    let mut effects = g.tick(i64::from(DELAY_MS));
    if n > 1 {
        assert!(effects.is_empty(), "delay extends while members arrive");
        effects = g.tick(i64::from(2 * DELAY_MS));
    }
    let answers = joins(&effects);
    assert_eq!(answers.len(), n);
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    let leader = g.leader().unwrap().to_string();
    let now = i64::from(2 * DELAY_MS);
    let assignment: Vec<(String, Bytes)> = ids
        .iter()
        .map(|id| (id.clone(), Bytes::from(format!("part-{id}"))))
        .collect();
    for id in ids.iter().filter(|id| **id != leader) {
        let (reply, effects) = g.sync(id, None, 1, None, None, vec![], now);
        assert_eq!(reply, Reply::Wait(id.clone()));
        assert!(effects.is_empty());
    }
    let (_, effects) = g.sync(
        &leader,
        None,
        1,
        Some("consumer"),
        Some("range"),
        assignment,
        now,
    );
    let [Effect::StoreAssignment { generation: 1, .. }] = effects.as_slice() else {
        panic!("the leader's sync stores the assignment: {effects:?}")
    };
    let done = g.assignment_stored(1, true, now);
    assert_eq!(
        syncs(&done).len(),
        n,
        "every waiting member, leader included, gets its part"
    );
    for (id, r) in syncs(&done) {
        assert_eq!(r.assignment, Bytes::from(format!("part-{id}")));
    }
    assert_eq!(g.state(), GroupState::Stable);
    let mut ordered = vec![leader.clone()];
    ordered.extend(ids.into_iter().filter(|i| *i != leader));
    ordered
}

#[test]
fn first_join_needs_a_member_id_then_waits_out_the_initial_delay() {
    let mut g = group();
    let (id, effects) = join_new(&mut g, 0);
    assert!(effects.is_empty());
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert!(g.tick(i64::from(DELAY_MS) - 1).is_empty());
    let effects = g.tick(i64::from(DELAY_MS));
    let answers = joins(&effects);
    assert_eq!(answers.len(), 1);
    let (who, r) = &answers[0];
    assert_eq!(who, &id);
    assert_eq!(
        (r.error, r.generation, r.leader.as_str()),
        (None, 1, id.as_str())
    );
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    assert_eq!(r.members.len(), 1, "the leader gets the member list");
    assert_eq!(r.members[0].metadata, Bytes::from("meta-range"));
}

#[test]
fn three_members_complete_one_rebalance_and_sync() {
    let mut g = group();
    let ids = stable_group(&mut g, 3);
    assert_eq!(g.generation(), 1);
    // The group is full: a fourth member is refused.
    let (reply, _) = g.join(req("", None), 7_000);
    assert_eq!(
        reply,
        Reply::Now(JoinResult::error(ResponseError::GroupMaxSizeReached, ""))
    );
    // A Stable member's sync answers at once with its part.
    let (reply, _) = g.sync(&ids[1], None, 1, None, None, vec![], 7_000);
    let Reply::Now(r) = reply else { panic!() };
    assert_eq!(r.assignment, Bytes::from(format!("part-{}", ids[1])));
}

#[test]
fn a_new_member_rebalances_a_stable_group_and_completes_when_all_rejoin() {
    let mut g = group();
    let ids = stable_group(&mut g, 1);
    let now = 10_000;
    let (new, effects) = join_new(&mut g, now);
    assert!(joins(&effects).is_empty());
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert_eq!(
        g.heartbeat(&ids[0], None, 1, now),
        Err(ResponseError::RebalanceInProgress)
    );
    // Offsets may still be committed for the old generation while rejoining.
    assert_eq!(g.check_commit(&ids[0], None, 1, now), Ok(()));
    let (reply, effects) = g.join(req(&ids[0], None), now + 10);
    assert_eq!(reply, Reply::Wait(ids[0].clone()));
    let answers = joins(&effects);
    assert_eq!(answers.len(), 2, "everyone rejoined: no need to wait");
    assert!(answers.iter().all(|(_, r)| r.generation == 2));
    assert!(answers.iter().any(|(id, _)| *id == new));
    // The old generation is stale now.
    assert_eq!(
        g.heartbeat(&ids[0], None, 1, now + 20),
        Err(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        g.check_commit(&ids[0], None, 2, now + 20),
        Err(ResponseError::RebalanceInProgress)
    );
}

#[test]
fn an_expired_session_removes_the_member_and_the_rest_rebalance() {
    let mut g = group();
    let ids = stable_group(&mut g, 2);
    let t0 = 6_000;
    // Only the leader heartbeats.
    let mut t = t0;
    while t < t0 + i64::from(SESSION_MS) {
        t += 1_000;
        let _ = g.heartbeat(&ids[0], None, 1, t);
        assert!(g.tick(t).is_empty() || t >= t0 + i64::from(SESSION_MS));
    }
    let effects = g.tick(t0 + i64::from(SESSION_MS));
    assert!(effects.is_empty() || g.has_member(&ids[0]));
    assert!(!g.has_member(&ids[1]), "the silent member expired");
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert_eq!(
        g.heartbeat(&ids[1], None, 1, t),
        Err(ResponseError::UnknownMemberId)
    );
    // The survivor rejoins and gets a new generation at once (it is the only member).
    let (_, effects) = g.join(req(&ids[0], None), t + 1);
    let answers = joins(&effects);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].1.generation, 2);
}

#[test]
fn a_rebalance_times_out_members_that_do_not_rejoin() {
    let mut g = group();
    let ids = stable_group(&mut g, 2);
    let now = 7_000;
    // The leader rejoins (forcing a rebalance); the other never does, but heartbeats.
    let (reply, _) = g.join(req(&ids[0], None), now);
    assert_eq!(reply, Reply::Wait(ids[0].clone()));
    for t in (now..now + i64::from(REBALANCE_MS)).step_by(5_000) {
        let _ = g.heartbeat(&ids[1], None, 1, t);
        assert!(joins(&g.tick(t)).is_empty());
    }
    assert!(joins(&g.tick(now + i64::from(REBALANCE_MS) - 1)).is_empty());
    let answers = joins(&g.tick(now + i64::from(REBALANCE_MS)));
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0, ids[0]);
    assert!(!g.has_member(&ids[1]));
    assert_eq!(answers[0].1.members.len(), 1);
}

#[test]
fn unknown_members_and_groups_states_get_kafkas_errors() {
    let mut g = group();
    assert_eq!(
        g.heartbeat("nobody", None, 0, 0),
        Err(ResponseError::UnknownMemberId)
    );
    let (reply, _) = g.join(req("nobody", None), 0);
    assert_eq!(
        reply,
        Reply::Now(JoinResult::error(ResponseError::UnknownMemberId, "nobody"))
    );
    // An empty group takes offsets from clients outside any generation.
    assert_eq!(g.check_commit("", None, -1, 0), Ok(()));
    let ids = stable_group(&mut g, 1);
    assert_eq!(
        g.check_commit("", None, -1, 7_000),
        Err(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        g.check_commit(&ids[0], None, 0, 7_000),
        Err(ResponseError::IllegalGeneration)
    );
    let (reply, _) = g.sync(&ids[0], None, 5, None, None, vec![], 7_000);
    assert_eq!(
        reply,
        Reply::Now(SyncResult::error(ResponseError::IllegalGeneration))
    );
    let (reply, _) = g.sync("nobody", None, 1, None, None, vec![], 7_000);
    assert_eq!(
        reply,
        Reply::Now(SyncResult::error(ResponseError::UnknownMemberId))
    );
    let mut bad = req("", None);
    bad.session_timeout_ms = 1_000;
    assert_eq!(
        g.join(bad, 7_000).0,
        Reply::Now(JoinResult::error(ResponseError::InvalidSessionTimeout, ""))
    );
    let mut other = req("", None);
    other.protocols = protocols(&["roundrobin"]);
    assert_eq!(
        g.join(other, 7_000).0,
        Reply::Now(JoinResult::error(
            ResponseError::InconsistentGroupProtocol,
            ""
        ))
    );
}

#[test]
fn the_protocol_most_members_prefer_among_common_ones_wins() {
    let mut g = group();
    let mut a = req("", None);
    a.require_known_member_id = false;
    a.protocols = protocols(&["range", "roundrobin"]);
    let mut b = a.clone();
    b.protocols = protocols(&["roundrobin", "range"]);
    let mut c = a.clone();
    c.protocols = protocols(&["roundrobin", "sticky", "range"]);
    for r in [a, b, c] {
        assert!(matches!(g.join(r, 0).0, Reply::Wait(_)));
    }
    g.tick(i64::from(DELAY_MS));
    let effects = g.tick(i64::from(2 * DELAY_MS));
    let answers = joins(&effects);
    assert_eq!(answers.len(), 3);
    assert!(
        answers
            .iter()
            .all(|(_, r)| r.protocol_name.as_deref() == Some("roundrobin"))
    );
}

#[test]
fn a_static_member_rejoining_keeps_its_assignment_without_a_rebalance() {
    let mut g = group();
    let mut first = req("", Some("instance-a"));
    first.require_known_member_id = true;
    let (reply, _) = g.join(first.clone(), 0);
    let Reply::Wait(old_id) = reply else {
        panic!("static members need no KIP-394 round trip")
    };
    let effects = g.tick(i64::from(DELAY_MS));
    assert_eq!(joins(&effects).len(), 1);
    let (_, effects) = g.sync(
        &old_id,
        None,
        1,
        None,
        None,
        vec![(old_id.clone(), Bytes::from_static(b"p0-p5"))],
        3_000,
    );
    assert_eq!(effects.len(), 1);
    g.assignment_stored(1, true, 3_000);
    assert_eq!(g.state(), GroupState::Stable);
    // The process restarts: same instance id, no member id, within the session timeout.
    let (reply, effects) = g.join(first.clone(), 5_000);
    let Reply::Now(r) = reply else {
        panic!("answered at once")
    };
    assert_eq!(r.error, None);
    assert_eq!(r.generation, 1, "no new generation");
    assert_ne!(r.member_id, old_id);
    assert!(matches!(effects.as_slice(), [Effect::Store(_)]));
    assert_eq!(g.state(), GroupState::Stable);
    let (reply, _) = g.sync(
        &r.member_id,
        Some("instance-a"),
        1,
        None,
        None,
        vec![],
        5_000,
    );
    let Reply::Now(s) = reply else { panic!() };
    assert_eq!(s.assignment, Bytes::from_static(b"p0-p5"));
    // The old process, still running, is fenced.
    assert_eq!(
        g.heartbeat(&old_id, Some("instance-a"), 1, 5_000),
        Err(ResponseError::FencedInstanceId)
    );
    assert_eq!(
        g.check_commit(&old_id, Some("instance-a"), 1, 5_000),
        Err(ResponseError::FencedInstanceId)
    );
    // Leaving by instance id alone.
    let (out, _) = g.leave(&[(String::new(), Some("instance-a".into()))], 6_000);
    assert_eq!(out, vec![Ok(r.member_id.clone())]);
    assert!(!g.has_member(&r.member_id));
}

#[test]
fn leave_in_a_batch_and_the_rebalance_completes_with_who_is_left() {
    let mut g = group();
    let ids = stable_group(&mut g, 3);
    let (out, effects) = g.leave(
        &[
            (ids[1].clone(), None),
            ("nobody".into(), None),
            (ids[2].clone(), None),
        ],
        7_000,
    );
    assert_eq!(out[0], Ok(ids[1].clone()));
    assert_eq!(out[1], Err(ResponseError::UnknownMemberId));
    assert_eq!(out[2], Ok(ids[2].clone()));
    assert!(joins(&effects).is_empty());
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    let (_, effects) = g.join(req(&ids[0], None), 7_100);
    assert_eq!(joins(&effects).len(), 1);
    // The last member leaves: the group is Empty at once and its (empty) membership stored.
    let (_, effects) = g.leave(&[(ids[0].clone(), None)], 7_200);
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Store(v) if v.members.is_empty()))
    );
    assert_eq!(g.state(), GroupState::Empty);
}

#[test]
fn a_failed_store_of_the_assignment_starts_over() {
    let mut g = group();
    let (id, _) = join_new(&mut g, 0);
    g.tick(i64::from(DELAY_MS));
    let (reply, _) = g.sync(&id, None, 1, None, None, vec![], 3_000);
    assert_eq!(reply, Reply::Wait(id.clone()));
    let effects = g.assignment_stored(1, false, 3_000);
    assert_eq!(
        syncs(&effects),
        vec![(
            id,
            SyncResult::error(ResponseError::CoordinatorNotAvailable)
        )]
    );
    assert_eq!(g.state(), GroupState::PreparingRebalance);
}

#[test]
fn a_stored_group_comes_back_stable_with_its_members() {
    let mut g = group();
    let ids = stable_group(&mut g, 2);
    let stored = g.stored_value(9, None);
    let back = ClassicGroup::from_stored("g", stored, limits(), 100_000);
    assert_eq!(back.state(), GroupState::Stable);
    assert_eq!(back.generation(), 1);
    assert_eq!(back.leader(), Some(ids[0].as_str()));
    let mut back = back;
    assert_eq!(back.heartbeat(&ids[1], None, 1, 100_001), Ok(()));
    // Members that never come back expire from the load time on.
    back.tick(100_000 + i64::from(SESSION_MS));
    assert_eq!(back.members().count(), 1, "the leader never heartbeat");
    let effects = back.tick(100_001 + i64::from(SESSION_MS));
    assert_eq!(back.members().count(), 0);
    assert_eq!(back.state(), GroupState::Empty);
    assert!(matches!(effects.as_slice(), [Effect::Store(v)] if v.members.is_empty()));
}

#[test]
fn a_lone_leader_rejoining_a_stable_group_gets_a_new_generation_at_once() {
    let mut g = group();
    let ids = stable_group(&mut g, 1);
    let (reply, effects) = g.join(req(&ids[0], None), 7_000);
    assert_eq!(reply, Reply::Wait(ids[0].clone()));
    let answers = joins(&effects);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].1.generation, 2);
    assert_eq!(g.state(), GroupState::CompletingRebalance);
}
