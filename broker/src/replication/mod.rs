//! Replication, step 2 of the cluster issue: followers copy their leader's log. Each shard
//! runs one fetcher per leader broker for the partitions whose replica it holds and another
//! broker leads (`follower`): it sends that leader Kafka Fetch requests with its own broker id
//! as `replica_id`, all those partitions in one request, and appends what comes back byte for
//! byte (offsets and leader epochs as the leader gave them, `PartitionLog::append_replica`).
//!
//! What is not built yet, so a replication factor above 1 stays behind
//! `corebus.replication.experimental` (off by default; CreateTopics refuses it otherwise): the
//! leader does not track its followers (no ISR changes, the ISR written at creation stays),
//! the high watermark is the leader's log end, acks=all waits for the leader's disk only, a
//! returning follower does not truncate to the leader's epoch history, and leadership never
//! moves. A follower's copy is therefore not yet a guarantee of anything.
//!
//! Never: appends a batch that fails its CRC or would go back before the log end; serves a
//! client from a follower (the router's `owner` answers NOT_LEADER_OR_FOLLOWER); holds a
//! response larger than `follower::MAX_FETCH_RESPONSE_BYTES`.

pub mod follower;

pub use follower::follow_leaders;
