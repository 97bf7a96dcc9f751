//! Fetch sessions (KIP-227) of one shard: a consumer that opens a session sends, after the
//! first full fetch, only the partitions whose fetch position changed, and is answered only
//! for partitions with news (records, an error, a moved high watermark or log start offset).
//! With hundreds of partitions per consumer this keeps idle fetches small.
//!
//! A session lives on the shard that created it, where the client's connection stays; a
//! session id arriving on another shard is simply unknown (FETCH_SESSION_ID_NOT_FOUND), after
//! which the client opens a new one. The cache is bounded; the least recently used session
//! makes room.
//!
//! Never: does I/O; answers an incremental fetch whose epoch is not the expected one.

use std::collections::HashMap;

use corebus_wire::error_code::ResponseError;
use uuid::Uuid;

use super::ShardId;

/// Sessions kept per shard (Kafka's `max.incremental.fetch.session.cache.slots` is 1000 per
/// broker).
pub const MAX_FETCH_SESSIONS_PER_SHARD: usize = 1000;

/// KIP-227 epochs.
pub const FINAL_EPOCH: i32 = -1;
pub const INITIAL_EPOCH: i32 = 0;

/// A partition as the client names it: topic name (before Fetch v13) or topic id (from v13).
pub type PartKey = (String, Uuid, i32);

/// A partition of a session, with what the client last heard about it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionPart {
    pub key: PartKey,
    pub fetch_offset: i64,
    pub max_bytes: i32,
    /// High watermark and log start last sent; `None` until the first answer.
    pub sent: Option<(i64, i64)>,
}

/// How to answer a fetch.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// Answer every requested partition; put `session_id` in the response (0: no session).
    Full {
        session_id: i32,
    },
    /// Answer from the session's partitions those with news.
    Incremental {
        session_id: i32,
        parts: Vec<SessionPart>,
    },
    Refuse(ResponseError),
}

struct Session {
    next_epoch: i32,
    parts: Vec<SessionPart>,
    last_used: u64,
}

pub struct FetchSessions {
    shard: u16,
    shard_count: u16,
    created: u32,
    clock: u64,
    sessions: HashMap<i32, Session>,
}

impl FetchSessions {
    pub fn new(shard: ShardId, shard_count: usize) -> FetchSessions {
        FetchSessions {
            shard: shard.0,
            shard_count: shard_count.clamp(1, usize::from(u16::MAX)) as u16,
            created: 0,
            clock: 0,
            sessions: HashMap::new(),
        }
    }

    /// Starts answering a fetch: `requested` are the request's partitions with their fetch
    /// offset and byte limit, `forgotten` the ones an incremental request drops.
    pub fn begin(
        &mut self,
        session_id: i32,
        epoch: i32,
        requested: Vec<(PartKey, i64, i32)>,
        forgotten: Vec<PartKey>,
    ) -> Plan {
        self.clock += 1;
        if epoch == FINAL_EPOCH || epoch == INITIAL_EPOCH {
            if session_id != 0 {
                self.sessions.remove(&session_id);
            }
            if epoch == FINAL_EPOCH {
                return Plan::Full { session_id: 0 };
            }
            let id = self.new_id();
            let parts = requested
                .into_iter()
                .map(|(key, fetch_offset, max_bytes)| SessionPart {
                    key,
                    fetch_offset,
                    max_bytes,
                    sent: None,
                })
                .collect();
            self.make_room();
            self.sessions.insert(
                id,
                Session {
                    next_epoch: 1,
                    parts,
                    last_used: self.clock,
                },
            );
            return Plan::Full { session_id: id };
        }
        let clock = self.clock;
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return Plan::Refuse(ResponseError::FetchSessionIdNotFound);
        };
        if epoch != session.next_epoch {
            return Plan::Refuse(ResponseError::InvalidFetchSessionEpoch);
        }
        session.next_epoch = if session.next_epoch == i32::MAX {
            1
        } else {
            session.next_epoch + 1
        };
        session.last_used = clock;
        session.parts.retain(|p| !forgotten.contains(&p.key));
        for (key, fetch_offset, max_bytes) in requested {
            match session.parts.iter_mut().find(|p| p.key == key) {
                Some(p) => {
                    p.fetch_offset = fetch_offset;
                    p.max_bytes = max_bytes;
                }
                None => session.parts.push(SessionPart {
                    key,
                    fetch_offset,
                    max_bytes,
                    sent: None,
                }),
            }
        }
        Plan::Incremental {
            session_id,
            parts: session.parts.clone(),
        }
    }

    /// Records what was sent for each partition of a session's answer.
    pub fn finish(&mut self, session_id: i32, sent: &[(PartKey, i64, i64)]) {
        if let Some(session) = self.sessions.get_mut(&session_id) {
            for (key, hwm, log_start) in sent {
                if let Some(p) = session.parts.iter_mut().find(|p| &p.key == key) {
                    p.sent = Some((*hwm, *log_start));
                }
            }
        }
    }

    fn new_id(&mut self) -> i32 {
        // Ids encode the shard, so no two shards hand out the same one.
        self.created = self.created.wrapping_add(1);
        let n = i64::from(self.created) * i64::from(self.shard_count) + i64::from(self.shard);
        (n % i64::from(i32::MAX - 1)) as i32 + 1
    }

    fn make_room(&mut self) {
        while self.sessions.len() >= MAX_FETCH_SESSIONS_PER_SHARD {
            let Some(oldest) = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(id, _)| *id)
            else {
                return;
            };
            self.sessions.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: i32) -> PartKey {
        ("t".to_string(), Uuid::nil(), p)
    }

    #[test]
    fn full_then_incremental_with_epochs() {
        let mut s = FetchSessions::new(ShardId(1), 2);
        assert_eq!(
            s.begin(0, FINAL_EPOCH, vec![(key(0), 0, 100)], vec![]),
            Plan::Full { session_id: 0 }
        );
        let Plan::Full { session_id: id } = s.begin(
            0,
            INITIAL_EPOCH,
            vec![(key(0), 0, 100), (key(1), 5, 100)],
            vec![],
        ) else {
            panic!("a session is created")
        };
        assert_ne!(id, 0);
        s.finish(id, &[(key(0), 10, 0), (key(1), 5, 0)]);
        match s.begin(id, 1, vec![(key(0), 10, 100)], vec![key(1)]) {
            Plan::Incremental { parts, .. } => {
                assert_eq!(parts.len(), 1);
                assert_eq!(parts[0].fetch_offset, 10);
                assert_eq!(parts[0].sent, Some((10, 0)));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            s.begin(id, 1, vec![], vec![]),
            Plan::Refuse(ResponseError::InvalidFetchSessionEpoch)
        );
        assert!(matches!(
            s.begin(id, 2, vec![], vec![]),
            Plan::Incremental { .. }
        ));
        assert_eq!(
            s.begin(id + 1000, 1, vec![], vec![]),
            Plan::Refuse(ResponseError::FetchSessionIdNotFound)
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut s = FetchSessions::new(ShardId(0), 1);
        for _ in 0..MAX_FETCH_SESSIONS_PER_SHARD + 5 {
            s.begin(0, INITIAL_EPOCH, vec![(key(0), 0, 1)], vec![]);
        }
        assert_eq!(s.sessions.len(), MAX_FETCH_SESSIONS_PER_SHARD);
    }
}
