//! The classic group's timers, as transitions of the state machine at a given time: lapsed
//! KIP-394 member ids, expired sessions, the end of the (initial delayed or normal) join
//! phase, members that did not sync in time. The coordinator calls `tick` every
//! `GROUP_TIMER_TICK_MS`; tests call it with any time they like.
//!
//! Never: reads a clock.

use super::{ClassicGroup, Effect, GroupState, JoinPhase};

impl ClassicGroup {
    /// Applies every timeout that has passed at `now_ms`: lapsed KIP-394 member ids, expired
    /// sessions, the end of the join phase, members that did not sync in time.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        let lapsed: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, t)| now_ms >= **t)
            .map(|(id, _)| id.clone())
            .collect();
        if !lapsed.is_empty() {
            for id in lapsed {
                self.pending.remove(&id);
            }
            effects.extend(self.try_complete_join(now_ms));
        }
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.expired(now_ms))
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            effects.extend(self.remove_member(&id, now_ms));
        }
        match self.join {
            Some(JoinPhase::Initial {
                deadline_ms,
                limit_ms,
                new_member_added,
            }) if now_ms >= deadline_ms => {
                if new_member_added && deadline_ms < limit_ms {
                    let delay = i64::from(self.limits.initial_rebalance_delay_ms);
                    self.join = Some(JoinPhase::Initial {
                        deadline_ms: deadline_ms.saturating_add(delay).min(limit_ms),
                        limit_ms,
                        new_member_added: false,
                    });
                } else {
                    effects.extend(self.complete_join(now_ms));
                }
            }
            Some(JoinPhase::Normal { deadline_ms }) if now_ms >= deadline_ms => {
                effects.extend(self.complete_join(now_ms));
            }
            _ => {}
        }
        if self.state == GroupState::CompletingRebalance
            && self.pending_assignment.is_none()
            && self.sync_deadline_ms.is_some_and(|t| now_ms >= t)
        {
            let late: Vec<String> = self
                .members
                .values()
                .filter(|m| !m.awaiting_sync)
                .map(|m| m.id.clone())
                .collect();
            for id in late {
                effects.extend(self.remove_member(&id, now_ms));
            }
        }
        effects
    }

    /// Whether any timer of this group can fire (the coordinator skips the others).
    pub fn has_timers(&self) -> bool {
        !self.members.is_empty() || !self.pending.is_empty() || self.join.is_some()
    }
}
