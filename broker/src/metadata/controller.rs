//! The metadata controller, hosted on shard 0: the only writer of the metadata store (with
//! the consensus store, only on the broker that holds `/corebus/controller`; the store refuses
//! topic changes elsewhere, see `consensus_store`). A change
//! is decided against the latest image, committed durably, and then installed on every shard
//! before the caller hears of it, so a client that created a topic through one connection sees
//! it through any other.
//!
//! Never: lets two changes interleave (a semaphore of one orders decide-commit-install); is
//! called from another shard directly (they send a job to shard 0 through the mesh).

use std::sync::Arc;

use super::image::BrokerId;
use super::{MetadataCommand, MetadataError, MetadataImage, MetadataStore, Store};
use crate::cluster::ClusterView;
use crate::shard::ShardId;
use crate::shard::mesh::Mesh;

/// Producer ids taken from the store per durable write; ids are handed out from the block in
/// memory until it is used up (Kafka's controller uses blocks of 1000 too).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

pub struct Controller {
    store: Store,
    mesh: Mesh,
    turn: glommio::sync::Semaphore,
    producer_ids: std::cell::Cell<(i64, i64)>,
    /// Brokers in a controlled shutdown, with the registration they had then: never made
    /// leaders or in-sync members again while that registration lives (a restarted broker
    /// registers anew).
    shutting_down: std::cell::RefCell<std::collections::BTreeMap<BrokerId, u64>>,
}

impl Controller {
    pub fn new(store: Store, mesh: Mesh) -> Controller {
        Controller {
            store,
            mesh,
            turn: glommio::sync::Semaphore::new(1),
            producer_ids: std::cell::Cell::new((0, 0)),
            shutting_down: Default::default(),
        }
    }

    /// Notes that `broker`, registered as `view` shows it, is in a controlled shutdown.
    pub fn shutting_down(&self, broker: BrokerId, view: &ClusterView) {
        if let Some(b) = view.brokers.iter().find(|b| b.node_id == broker) {
            self.shutting_down.borrow_mut().insert(broker, b.registered);
        }
    }

    /// The brokers in a controlled shutdown, forgetting those whose registration is gone
    /// from `view` (stopped, or registered anew since).
    pub fn barred(&self, view: &ClusterView) -> Vec<BrokerId> {
        let mut set = self.shutting_down.borrow_mut();
        set.retain(|id, registered| {
            view.brokers
                .iter()
                .any(|b| b.node_id == *id && b.registered == *registered)
        });
        set.keys().copied().collect()
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.store.current()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Reads the consensus tree again and installs it on every shard (changes another broker
    /// made, told by a watch); ordered with the changes of this controller.
    pub async fn reload(&self) -> Result<(), MetadataError> {
        let Some(store) = self.store.consensus() else {
            return Ok(());
        };
        let _turn = self
            .turn
            .acquire_permit(1)
            .await
            .map_err(|e| MetadataError::Invalid(format!("controller closed: {e}")))?;
        let image = store.reload().await?;
        self.install_everywhere(image).await;
        Ok(())
    }

    /// Runs `decide` on the latest image; commits the commands it returns (none: nothing is
    /// written) and installs the new image on every shard; returns `decide`'s result.
    pub async fn transact<R>(
        &self,
        decide: impl FnOnce(&MetadataImage) -> (Vec<MetadataCommand>, R),
    ) -> Result<R, MetadataError> {
        self.transact_image(decide).await.map(|(r, _)| r)
    }

    /// `transact`, also returning the image the change made.
    async fn transact_image<R>(
        &self,
        decide: impl FnOnce(&MetadataImage) -> (Vec<MetadataCommand>, R),
    ) -> Result<(R, Arc<MetadataImage>), MetadataError> {
        let _turn = self
            .turn
            .acquire_permit(1)
            .await
            .map_err(|e| MetadataError::Invalid(format!("controller closed: {e}")))?;
        // A store that fell behind (a write of unknown outcome) catches up first, so `decide`
        // sees a change that did happen instead of making it twice.
        if let Some(caught_up) = self.store.refresh().await? {
            self.install_everywhere(caught_up).await;
        }
        let current = self.store.current();
        let (cmds, result) = decide(&current);
        if cmds.is_empty() {
            return Ok((result, current));
        }
        let image = self.store.apply(cmds).await?;
        self.install_everywhere(image.clone()).await;
        Ok((result, image))
    }

    /// A new producer id, never handed out before, also across crashes.
    pub async fn next_producer_id(&self) -> Result<i64, MetadataError> {
        let (next, end) = self.producer_ids.get();
        if next < end {
            self.producer_ids.set((next + 1, end));
            return Ok(next);
        }
        let ((), image) = self
            .transact_image(|_| {
                (
                    vec![MetadataCommand::AllocateProducerIds {
                        count: PRODUCER_ID_BLOCK_SIZE,
                    }],
                    (),
                )
            })
            .await?;
        // The block ends where the committed counter now stands: a store that had to retry
        // its compare-and-set took the block from wherever the counter had got to.
        let end = image.next_producer_id;
        let start = end - PRODUCER_ID_BLOCK_SIZE;
        self.producer_ids.set((start + 1, end));
        Ok(start)
    }

    async fn install_everywhere(&self, image: Arc<MetadataImage>) {
        for s in 0..self.mesh.shard_count() {
            let img = image.clone();
            let target = ShardId(s as u16);
            // A shard that is gone is shutting down; it needs no metadata any more.
            let _ = self
                .mesh
                .call(target, move |shard| async move {
                    shard.install_metadata(img).await
                })
                .await;
        }
    }
}
