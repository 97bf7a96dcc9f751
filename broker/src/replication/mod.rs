//! Replication (the cluster issues): a partition has as many replicas as its topic asked for,
//! up to the live brokers. Followers copy their leader's log (`follower`): each
//! shard runs one fetcher per leader broker for the partitions whose replica it holds and
//! another broker leads; it sends that leader Kafka Fetch requests with its own broker id as
//! `replica_id`, all those partitions in one request, appends what comes back byte for byte
//! (offsets and leader epochs as the leader gave them, `PartitionLog::append_replica`), and
//! fetches again only once those appends are written (and synced, where the topic's acks=all
//! waits for syncs), so its fetch offset says what it holds. The leader (`leader`) records
//! each follower's fetch offset; the high watermark is what every in-sync replica holds,
//! consumers read only below it, and acks=all waits for it (refused with NOT_ENOUGH_REPLICAS
//! when the in-sync set is smaller than `min.insync.replicas`). The in-sync set changes
//! through the controller (`isr`: a follower lagging `replica.lag.time.max.ms` leaves, a
//! caught-up one joins, by compare-and-set on the partition's epochs, as Kafka's
//! AlterPartition).
//!
//! Leadership moves (`metadata::elect`): when a broker's session expires the controller
//! gives its partitions a new leader from the live in-sync replicas (leader epoch +1); a
//! follower fetches under a new leader epoch only after asking the leader where its own latest
//! epoch ends (OffsetForLeaderEpoch) and truncating what the leader does not have
//! (`follower::truncate`, the epochs kept by `storage::epochs`); followers keep the
//! idempotent-producer state so a new leader deduplicates retries; group coordinators follow
//! the leadership of `__consumer_offsets` partitions (`groups::coordinator`); a broker
//! stopping hands its leaderships over first (`shutdown`); leadership returns to the preferred
//! replicas (`balance`, and ElectLeaders on request).
//!
//! `sim` (tests only) runs this code (the leader's `Leaders`, the follower's `truncation`,
//! the controller's `isr::decide` and `elect`, real logs over simulated disks) under a
//! deterministic simulator with kills, power losses, lost and late messages and late metadata,
//! checking that nothing acknowledged or shown to a consumer is lost; `scripts/replication-sim`
//! sweeps more seeds.
//!
//! A replica reopens its log at the high watermark its shard last checkpointed
//! (`storage::hw_checkpoint`, every `replica.high.watermark.checkpoint.interval.ms` and at a
//! clean stop; `PartitionLog::open_high_watermark`), never past what it recovered, and the
//! in-sync replicas' next fetches move it on from there.
//!
//! Not built yet: the inter-broker requests (Fetch with a replica id, AlterPartition,
//! BrokerHeartbeat) are taken from any client, as Kafka takes them without an authorizer;
//! listeners, authentication and ACLs are the security issue's.
//!
//! Never: appends a batch that fails its CRC or would go back before the log end; serves a
//! client from a follower (the router's `owner` answers NOT_LEADER_OR_FOLLOWER); holds a
//! response larger than `follower::MAX_FETCH_RESPONSE_BYTES`; shows a consumer a record that
//! an in-sync replica does not hold; counts an in-sync set the controller did not commit.

pub mod balance;
pub mod follower;
pub mod isr;
pub mod leader;
pub mod shutdown;
#[cfg(test)]
mod sim;

pub use follower::follow_leaders;
