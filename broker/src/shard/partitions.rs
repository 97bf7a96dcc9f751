//! The partitions a shard owns: its storage engine, the open `PartitionLog` of every partition
//! placed on it, and keeping that set in step with the metadata image (open new partitions,
//! apply changed topic settings, set deleted topics' directories aside).
//!
//! Never: opens a partition another shard owns; deletes data of a topic that still exists.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::ShardId;
use super::producer_state::{
    PRODUCER_STATE_REBUILD_BATCHES, PRODUCER_STATE_REBUILD_RECORDS, ProducerStates,
};
use super::router::Here;
use crate::config::BrokerSettings;
use crate::config::settings::{Scope, in_scope};
use crate::metadata::{MetadataImage, TopicId};
use crate::storage::bounded::run_bounded;
use crate::storage::hw_checkpoint::{self, CheckpointKey, HighWatermarks};
use crate::storage::{
    CONCURRENT_LOG_OPENS_CLOSES, Disk, DmaDisk, LogConfig, PartitionLog, ShardOptions,
    StorageError, StorageShard,
};

/// One shard's logs.
pub type Log = PartitionLog<DmaDisk>;

/// A partition's identity inside the node.
pub type PartitionKey = (TopicId, i32);

/// A topic's setting overrides, by Kafka name.
type TopicConfigs = BTreeMap<String, String>;

pub struct ShardLogs {
    data_dir: PathBuf,
    storage: StorageShard<DmaDisk>,
    logs: RefCell<HashMap<PartitionKey, Log>>,
    /// Idempotent-producer state of each open partition.
    producers: RefCell<HashMap<PartitionKey, ProducerStates>>,
    /// Each open topic's name and settings, to see renames (delete + create) and changes.
    topics: RefCell<HashMap<TopicId, (String, TopicConfigs)>>,
    /// One `sync_with` at a time: two overlapping ones would both open a partition that
    /// neither has finished opening.
    syncing: glommio::sync::Semaphore,
    /// High watermarks to open replicated logs with, as every shard's checkpoint held them
    /// at start; an entry moves to `unopened` when its log is opened.
    restored: RefCell<HighWatermarks>,
    /// High watermarks of this shard's partitions without an open log (closed but kept,
    /// being opened, or failed to open): they stay in the checkpoint until the log is open.
    unopened: RefCell<HighWatermarks>,
    /// What this shard's checkpoint file holds (nothing is written when nothing changed).
    checkpointed: RefCell<Option<HighWatermarks>>,
    /// One checkpoint write at a time (they share a temporary file).
    checkpointing: glommio::sync::Semaphore,
    shard: ShardId,
    /// Checkpoint files of shards this node no longer runs (found at start, on shard 0):
    /// removed once this shard's first checkpoint holds what they held for it.
    gone_files: RefCell<Vec<String>>,
}

fn checkpoint_key((topic, partition): PartitionKey) -> CheckpointKey {
    (*topic.0.as_bytes(), partition)
}

impl ShardLogs {
    /// Prepares direct I/O on `data_dir`; must run on the shard's executor before any other
    /// DMA file is opened there (glommio's polled-I/O probe, see `storage::dma_disk`). At most
    /// `max_open_files` segment files stay open at once (`shard::open_files`). Reads the high
    /// watermark checkpoints of every shard (`storage::hw_checkpoint`).
    pub async fn new(
        data_dir: &Path,
        max_open_files: usize,
        shard: ShardId,
        shard_count: usize,
    ) -> Result<ShardLogs, std::io::Error> {
        let disk = DmaDisk::new(data_dir).await?;
        let (restored, files) = hw_checkpoint::read_all(&disk, data_dir).await;
        let gone_files = files
            .into_iter()
            .filter(|s| shard == ShardId(0) && usize::from(*s) >= shard_count)
            .map(hw_checkpoint::file_name)
            .collect();
        Ok(ShardLogs {
            data_dir: data_dir.to_path_buf(),
            storage: StorageShard::new(
                disk,
                ShardOptions {
                    max_open_files,
                    ..ShardOptions::default()
                },
            ),
            logs: RefCell::new(HashMap::new()),
            producers: RefCell::new(HashMap::new()),
            topics: RefCell::new(HashMap::new()),
            syncing: glommio::sync::Semaphore::new(1),
            restored: RefCell::new(restored),
            unopened: RefCell::new(HighWatermarks::new()),
            checkpointed: RefCell::new(None),
            checkpointing: glommio::sync::Semaphore::new(1),
            shard,
            gone_files: RefCell::new(gone_files),
        })
    }

    /// Writes this shard's high watermark checkpoint: the high watermark of every open log,
    /// and of its partitions without one; skipped when nothing changed since the last one.
    /// The first one written by shard 0 removes the files of shards this node no longer runs
    /// (their entries were read at start by the shards that now hold those partitions).
    pub async fn checkpoint_high_watermarks(&self) {
        let Ok(_one_at_a_time) = self.checkpointing.acquire_permit(1).await else {
            return;
        };
        let mut now = self.unopened.borrow().clone();
        for (key, log) in self.logs.borrow().iter() {
            now.insert(checkpoint_key(*key), log.high_watermark());
        }
        if self.checkpointed.borrow().as_ref() == Some(&now) {
            return;
        }
        let disk = self.storage.disk();
        let name = hw_checkpoint::file_name(self.shard.0);
        if let Err(e) = hw_checkpoint::write(disk, &self.data_dir, &name, &now).await {
            warn!(
                shard = self.shard.0,
                error = %e,
                "writing the high watermark checkpoint failed; a restart opens replicated \
                 partitions at an older high watermark"
            );
            return;
        }
        *self.checkpointed.borrow_mut() = Some(now);
        let gone = std::mem::take(&mut *self.gone_files.borrow_mut());
        if !gone.is_empty() {
            for name in gone {
                let _ = disk.remove(&self.data_dir.join(name)).await;
            }
            let _ = disk.sync_dir(&self.data_dir).await;
        }
    }

    /// The open log of a partition this shard owns.
    pub fn log(&self, key: PartitionKey) -> Option<Log> {
        self.logs.borrow().get(&key).cloned()
    }

    /// Runs `f` on the producer state of an open partition. Synchronous on purpose: a check,
    /// the append that follows it and the state update must not be split by an await.
    pub fn with_producers<R>(
        &self,
        key: PartitionKey,
        f: impl FnOnce(&mut ProducerStates) -> R,
    ) -> R {
        f(self.producers.borrow_mut().entry(key).or_default())
    }

    /// Partitions whose log is open on this shard (metrics).
    pub fn partition_count(&self) -> usize {
        self.logs.borrow().len()
    }

    /// Bytes of record batches on disk over this shard's open logs (metrics; one pass over
    /// the logs' segment tables, no I/O).
    pub fn size_bytes(&self) -> u64 {
        self.logs.borrow().values().map(|l| l.size_bytes()).sum()
    }

    pub fn storage(&self) -> &StorageShard<DmaDisk> {
        &self.storage
    }

    /// Brings the open logs in line with `image`: opens (recovering) every partition of which
    /// this node holds a replica on shard `me` (`router::replica_shard`) and that is not open,
    /// updates settings that changed, closes (cleanly, keeping the directory) the logs of
    /// partitions that are no longer this node's on this shard, and sets aside the directories
    /// of topics that are gone. A partition that fails to open stays closed and its error is
    /// logged; clients get KAFKA_STORAGE_ERROR for it.
    pub async fn sync_with(
        &self,
        image: &MetadataImage,
        me: ShardId,
        here: Here,
        settings: &BrokerSettings,
    ) {
        // Closed only when the shard is dropped, which no caller outlives.
        let Ok(_one_at_a_time) = self.syncing.acquire_permit(1).await else {
            return;
        };
        let gone: Vec<(TopicId, String)> = self
            .topics
            .borrow()
            .iter()
            .filter(|(id, _)| image.topic_by_id(**id).is_none())
            .map(|(id, (name, _))| (*id, name.clone()))
            .collect();
        // Deleted topics' logs are discarded (no sync, no marker) concurrently, as opening is:
        // a topic of 10,000 partitions closed cleanly in turn kept DeleteTopics waiting for
        // longer than clients wait.
        let mut removed_logs = Vec::new();
        for (id, name) in gone {
            self.topics.borrow_mut().remove(&id);
            self.unopened
                .borrow_mut()
                .retain(|(topic, _), _| *topic != *id.0.as_bytes());
            let keys: Vec<PartitionKey> = self
                .logs
                .borrow()
                .keys()
                .filter(|k| k.0 == id)
                .copied()
                .collect();
            for key in keys {
                self.producers.borrow_mut().remove(&key);
                if let Some(log) = self.logs.borrow_mut().remove(&key) {
                    removed_logs.push((id, log));
                }
            }
            info!(topic = %name, "topic deleted: its partitions on this shard are set aside");
        }
        run_bounded(removed_logs, CONCURRENT_LOG_OPENS_CLOSES, |(id, log)| async move {
            if let Err(e) = log.discard().await {
                warn!(dir = %log.dir().display(), error = %e, "closing a deleted partition failed");
            }
            set_aside(log.dir(), id).await;
        })
        .await;
        // Partitions this shard no longer holds a replica of.
        let moved: Vec<PartitionKey> = self
            .logs
            .borrow()
            .keys()
            .filter(|(id, p)| super::router::replica_shard(image, *id, *p, here) != Some(me))
            .copied()
            .collect();
        let mut moved_logs = Vec::new();
        // Replicas a reassignment took off this broker are deleted, as Kafka's StopReplica
        // with deletion does (the reason to move a partition is often the disk it takes);
        // anything else that no longer maps here is closed and kept.
        let mut removed_replicas = Vec::new();
        for key in moved {
            self.producers.borrow_mut().remove(&key);
            if let Some(log) = self.logs.borrow_mut().remove(&key) {
                let reassigned_away = super::router::partition_meta(image, key.0, key.1)
                    .is_some_and(|m| m.is_assigned() && !m.replicas.contains(&here.node_id));
                if reassigned_away {
                    removed_replicas.push((key.0, log));
                } else {
                    self.unopened
                        .borrow_mut()
                        .insert(checkpoint_key(key), log.high_watermark());
                    moved_logs.push(log);
                }
            }
        }
        if !removed_replicas.is_empty() {
            info!(
                partitions = removed_replicas.len(),
                "replicas moved off this broker: their logs are deleted"
            );
        }
        run_bounded(removed_replicas, CONCURRENT_LOG_OPENS_CLOSES, |(id, log)| async move {
            if let Err(e) = log.discard().await {
                warn!(dir = %log.dir().display(), error = %e, "closing a removed replica failed");
            }
            set_aside(log.dir(), id).await;
        })
        .await;
        if !moved_logs.is_empty() {
            info!(
                partitions = moved_logs.len(),
                "partitions no longer served by this shard: their logs are closed"
            );
        }
        run_bounded(moved_logs, CONCURRENT_LOG_OPENS_CLOSES, |log| async move {
            if let Err(e) = log.close().await {
                warn!(dir = %log.dir().display(), error = %e, "closing a moved partition failed");
            }
        })
        .await;
        let mut to_open = Vec::new();
        for topic in image.topics.values() {
            let config_changed = self
                .topics
                .borrow()
                .get(&topic.id)
                .is_none_or(|(_, c)| c != &topic.configs);
            let config = log_config(settings, &topic.configs);
            for p in 0..topic.partitions.len() {
                if super::router::replica_shard(image, topic.id, p as i32, here) != Some(me) {
                    continue;
                }
                let key = (topic.id, p as i32);
                let open = self.logs.borrow().get(&key).cloned();
                match open {
                    Some(log) if config_changed => log.set_config(config.clone()),
                    Some(_) => {}
                    None => {
                        let dir =
                            StorageShard::<DmaDisk>::log_dir(&self.data_dir, &topic.name, p as i32);
                        let replicated = topic.partitions[p].replicas.len() > 1;
                        let hw = replicated.then(|| self.checkpointed_high_watermark(key));
                        to_open.push((key, dir, config.clone(), hw));
                    }
                }
            }
            self.topics
                .borrow_mut()
                .insert(topic.id, (topic.name.clone(), topic.configs.clone()));
        }
        // Opening recovers and syncs: thousands of partitions open concurrently, not in turn.
        let storage = self.storage.clone();
        let opened = run_bounded(
            to_open,
            CONCURRENT_LOG_OPENS_CLOSES,
            |(key, dir, config, hw)| {
                let storage = storage.clone();
                async move {
                    let result = match storage.open_log(dir.clone(), config).await {
                        Ok(log) => {
                            if let Some(hw) = hw {
                                log.open_high_watermark(hw);
                            }
                            let states = rebuild_producers(&log).await;
                            Ok((log, states))
                        }
                        Err(e) => Err(e),
                    };
                    (key, dir, result)
                }
            },
        )
        .await;
        for (key, dir, result) in opened {
            match result {
                Ok((log, states)) => {
                    self.unopened.borrow_mut().remove(&checkpoint_key(key));
                    self.producers.borrow_mut().insert(key, states);
                    self.logs.borrow_mut().insert(key, log);
                }
                Err(e) => warn!(dir = %dir.display(), error = %e, "cannot open partition log"),
            }
        }
    }

    /// The high watermark a replicated log opens with: where this shard closed it (or last
    /// failed to open it), else what the checkpoints held at start (taken from there: a log
    /// opened once and later deleted must not get it back). It stays in `unopened`, and so
    /// in the checkpoint, until the log is open.
    fn checkpointed_high_watermark(&self, key: PartitionKey) -> Option<i64> {
        let key = checkpoint_key(key);
        let unopened = self.unopened.borrow().get(&key).copied();
        let hw = unopened.or_else(|| self.restored.borrow_mut().remove(&key))?;
        self.unopened.borrow_mut().insert(key, hw);
        Some(hw)
    }

    /// Closes every log cleanly (drained, synced, clean-shutdown markers written) and writes
    /// the high watermark checkpoint they end with.
    pub async fn close(&self) {
        self.checkpoint_high_watermarks().await;
        self.storage.close().await;
    }
}

/// Rebuilds idempotent-producer state from the batch headers of the log's tail.
pub async fn rebuild_producers(log: &Log) -> ProducerStates {
    let from = log
        .written_offset()
        .saturating_sub(PRODUCER_STATE_REBUILD_RECORDS)
        .max(log.log_start_offset());
    match log.scan_headers(from, PRODUCER_STATE_REBUILD_BATCHES).await {
        Ok(headers) => ProducerStates::from_headers(&headers),
        Err(e) => {
            warn!(dir = %log.dir().display(), error = %e, "cannot rebuild producer state");
            ProducerStates::default()
        }
    }
}

/// The storage settings of a topic: each topic setting resolved through its broker synonyms.
pub fn log_config(settings: &BrokerSettings, overrides: &BTreeMap<String, String>) -> LogConfig {
    let mut config = LogConfig::default();
    for s in in_scope(Scope::Topic) {
        if let Some(v) = settings.resolve_topic(s, overrides).value
            && let Err(e) = config.set(s.name, &v.to_string())
        {
            // The settings table validated the value; a disagreement is a bug worth seeing.
            warn!(setting = s.name, error = %e, "storage refused a validated setting");
        }
    }
    config
}

/// Renames a deleted partition's directory out of the way (so a topic created again under the
/// same name starts empty) and removes it, both off the reactor.
async fn set_aside(dir: &Path, id: TopicId) {
    let mut name = dir.as_os_str().to_owned();
    name.push(format!(".{}-delete", id.0.simple()));
    let aside = PathBuf::from(name);
    // Both the rename and the removal are blocking file-system calls: off the reactor. The
    // rename is awaited (a topic created again under the name must find the place empty);
    // the removal is not.
    let (from, to) = (dir.to_path_buf(), aside.clone());
    let renamed = glommio::executor()
        .spawn_blocking(move || std::fs::rename(&from, &to))
        .await;
    match renamed {
        Ok(()) => {
            let removal = glommio::executor().spawn_blocking(move || {
                if let Err(e) = std::fs::remove_dir_all(&aside) {
                    warn!(dir = %aside.display(), error = %e, "cannot remove a deleted partition");
                }
            });
            glommio::spawn_local(removal).detach();
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(dir = %dir.display(), error = %e, "cannot set a deleted partition aside"),
    }
}

/// The Kafka error code of a storage error.
pub fn storage_error_code(e: &StorageError) -> i16 {
    e.kafka_error_code()
}
