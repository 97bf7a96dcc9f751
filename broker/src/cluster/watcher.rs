//! Shard 0's side of the cluster: joining it at start-up (register, learn or become the
//! controller, read the live brokers), following it with watches while the broker runs, and
//! leaving it at a clean shutdown (closing the session, so the registration and a controller
//! node go at once).
//!
//! Watches, all on the store's client (one session): a child watch on `/corebus/brokers/ids`
//! (the live brokers), an exists watch on `/corebus/controller` (when it goes, claim it), and
//! persistent recursive watches on `/corebus/topics` and `/corebus/config/topics` (a broker
//! that is not the controller reads the tree again, so a topic created through another broker
//! is served here without polling). One-shot watches are armed again by the read that handles
//! their event. After the client moved to another consensus node everything is read again,
//! since a move may hide changes to persistent watches.
//!
//! Each new [`ClusterView`] is installed on every shard by message. When the session expires
//! (its registration and any controller role are gone with it), [`follow`] gives up the
//! controller role, opens a new session on the same client (which keeps its watches),
//! registers again and reads everything again, while the shards go on serving; it fails, and
//! the broker stops, only when that has not worked for
//! `corebus.consensus.session.renew.timeout.ms`.
//!
//! Never: runs on a shard other than 0; blocks the shard (every wait is async and bounded);
//! decides topic changes (the controller does).

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corebus_consensus::client::{Client, Error as ClientError};
use corebus_consensus::txn::TreeError;
use corebus_consensus::watch::WatchEvent;
use tracing::{info, warn};

use super::election::{Claim, claim};
use super::registration::{decode_registration, register};
use super::{BrokerEndpoint, ClusterError, ClusterView};
use crate::metadata::consensus_store::{
    BROKER_IDS, CONTROLLER, ConsensusStore, TOPIC_CONFIGS, TOPICS, WriterRole,
};
use crate::shard::{Shard, ShardId};

/// Pause before reading the tree again after the group failed to answer.
pub const CLUSTER_RETRY_MS: u64 = 500;
/// How often the follower wakes without an event to see whether the client moved.
pub const CLUSTER_MOVE_CHECK_MS: u64 = 1_000;
/// Time a clean shutdown gives the session's close.
pub const SESSION_CLOSE_TIMEOUT_MS: u64 = 2_000;

/// What needs reading again.
#[derive(Debug, Clone, Copy, Default)]
struct Dirty {
    brokers: bool,
    controller: bool,
    topics: bool,
}

impl Dirty {
    const ALL: Dirty = Dirty {
        brokers: true,
        controller: true,
        topics: true,
    };

    fn any(self) -> bool {
        self.brokers || self.controller || self.topics
    }

    fn note(&mut self, e: &WatchEvent) {
        let under = |root: &str| e.path == root || e.path.starts_with(&format!("{root}/"));
        if under(BROKER_IDS) {
            self.brokers = true;
        } else if e.path == CONTROLLER {
            self.controller = true;
        } else if under(TOPICS) || under(TOPIC_CONFIGS) {
            self.topics = true;
        }
    }
}

/// Shard 0's record of the cluster between events.
pub struct Membership {
    me: BrokerEndpoint,
    view: ClusterView,
    /// The topics have not been read since the watches on them were armed.
    topics_unread: bool,
}

fn store(shard: &Shard) -> Result<&ConsensusStore, ClusterError> {
    shard
        .controller()
        .and_then(|c| c.store().consensus())
        .ok_or(ClusterError::Metadata(
            crate::metadata::MetadataError::NotController,
        ))
}

fn session_expired(e: &ClusterError) -> bool {
    matches!(e, ClusterError::Group(ClientError::SessionExpired { .. }))
}

/// At start-up on shard 0, before it reports ready: registers this broker, learns or becomes
/// the controller, and reads the live brokers. Installs the view on shard 0 only (the other
/// shards get it from [`follow`]).
pub async fn join(shard: &Rc<Shard>, me: BrokerEndpoint) -> Result<Membership, ClusterError> {
    let timeout_ms = super::session_timeout_ms(&shard.config);
    let client = store(shard)?.client();
    register(client, &me, timeout_ms).await?;
    let mut m = Membership {
        me,
        view: ClusterView {
            generation: 0,
            brokers: Vec::new(),
            controller_id: None,
        },
        topics_unread: true,
    };
    arm_topic_watches(client).await?;
    info!("topic watches armed; reading the cluster view");
    // Topics were read moments ago (`metadata::open`); `follow` reads them once more, after
    // the watches were armed, since only then can it install an image on every shard.
    let now = Dirty {
        topics: false,
        ..Dirty::ALL
    };
    refresh(shard, &mut m, now, false).await?;
    shard.install_cluster(Arc::new(m.view.clone()));
    Ok(m)
}

async fn arm_topic_watches(client: &Client) -> Result<(), ClusterError> {
    client.add_watch(TOPICS, true).await?;
    client.add_watch(TOPIC_CONFIGS, true).await?;
    Ok(())
}

/// Follows the cluster until shutdown. When the session expires (the process or its host
/// stalled past the timeout, or the group was unreachable that long) the broker opens a new
/// session and registers again, as a Kafka broker re-creates its ZooKeeper registration, and
/// goes on serving meanwhile; `Err` only when that has not succeeded within
/// `corebus.consensus.session.renew.timeout.ms`.
pub async fn follow(shard: Rc<Shard>, mut m: Membership) -> Result<(), ClusterError> {
    install_everywhere(&shard, &m.view).await;
    // What changed between the start-up read of the topics and the arming of their watches.
    let mut dirty = Dirty {
        topics: true,
        ..Dirty::default()
    };
    loop {
        match follow_session(&shard, &mut m, dirty).await {
            Err(ClusterError::SessionExpired) => {}
            other => return other,
        }
        shard.count(|c| c.consensus_session_renewals += 1);
        renew(&shard, &mut m).await?;
        if shard.shutdown.is_fired() {
            return Ok(());
        }
        // Whatever happened while the session was gone is read again.
        dirty = Dirty::ALL;
    }
}

/// After the session expired: fences what the old session owned (the controller role: its
/// writes carry the old fence and would fail anyway, but nothing here tries them), then opens
/// a new session and registers again, retrying until it works, the node shuts down, or the
/// renew timeout passes.
async fn renew(shard: &Rc<Shard>, m: &mut Membership) -> Result<(), ClusterError> {
    let store = store(shard)?;
    if matches!(store.role(), WriterRole::Controller { .. }) {
        warn!(
            "the consensus session that held the controller role expired; no longer the controller"
        );
    }
    store.set_role(WriterRole::Follower);
    let client = store.client();
    let session_timeout_ms = super::session_timeout_ms(&shard.config);
    let renew_ms = super::session_renew_timeout_ms(&shard.config);
    let started = Instant::now();
    warn!(
        node_id = m.me.node_id,
        renew_timeout_ms = renew_ms,
        "consensus session expired (this process or its host stalled, or the group was out of \
         reach, for longer than corebus.consensus.session.timeout.ms = {session_timeout_ms} \
         ms); registering again with a new session, serving meanwhile"
    );
    loop {
        let attempt = async {
            let session = client.renew_session().await?;
            register(client, &m.me, session_timeout_ms).await?;
            arm_topic_watches(client).await?;
            Ok::<_, ClusterError>(session)
        };
        match attempt.await {
            Ok(session) => {
                info!(
                    session = session.id.0,
                    after_ms = started.elapsed().as_millis() as u64,
                    "registered again with a new consensus session"
                );
                // The topics may have changed while nothing was watching them.
                m.topics_unread = true;
                return Ok(());
            }
            Err(e) => {
                let waited_ms = started.elapsed().as_millis() as u64;
                if waited_ms >= renew_ms {
                    return Err(ClusterError::RenewFailed {
                        waited_ms,
                        last: e.to_string(),
                    });
                }
                warn!(error = %e, waited_ms, "cannot register again yet; retrying");
                sleep_or_shutdown(shard, CLUSTER_RETRY_MS).await;
                if shard.shutdown.is_fired() {
                    return Ok(());
                }
            }
        }
    }
}

/// Follows the cluster on the current session; `Err(SessionExpired)` when it is gone.
async fn follow_session(
    shard: &Rc<Shard>,
    m: &mut Membership,
    mut dirty: Dirty,
) -> Result<(), ClusterError> {
    let client = store(shard)?.client();
    let events = client.events();
    let mut server = client.server();
    loop {
        if dirty.any() {
            match refresh(shard, m, dirty, true).await {
                Ok(changed) => {
                    dirty = Dirty::default();
                    if changed {
                        install_everywhere(shard, &m.view).await;
                    }
                }
                Err(e) if session_expired(&e) => return Err(ClusterError::SessionExpired),
                Err(e) => {
                    warn!(error = %e, "cannot read the cluster from the consensus tree; retrying");
                    sleep_or_shutdown(shard, CLUSTER_RETRY_MS).await;
                }
            }
            if shard.shutdown.is_fired() {
                return Ok(());
            }
            continue;
        }
        let got = futures_lite::future::or(async { Some(events.recv_async().await.ok()) }, async {
            futures_lite::future::or(
                async {
                    shard.shutdown.wait().await;
                    None
                },
                async {
                    glommio::timer::sleep(Duration::from_millis(CLUSTER_MOVE_CHECK_MS)).await;
                    Some(None)
                },
            )
            .await
        })
        .await;
        let Some(event) = got else { return Ok(()) };
        if client.session().is_none() {
            return Err(ClusterError::SessionExpired);
        }
        if let Some(e) = event {
            dirty.note(&e);
        }
        // Everything that arrived meanwhile is handled by one read of the tree.
        while let Ok(e) = events.try_recv() {
            dirty.note(&e);
        }
        let now = client.server();
        if now.is_some() && now != server {
            // A move may hide changes to the persistent watches: read everything again.
            info!(server = ?now, "consensus session moved; reading the cluster again");
            server = now;
            dirty = Dirty::ALL;
        }
    }
}

async fn sleep_or_shutdown(shard: &Shard, ms: u64) {
    futures_lite::future::or(shard.shutdown.wait(), async {
        glommio::timer::sleep(Duration::from_millis(ms)).await;
    })
    .await;
}

/// Reads what `dirty` names, arming its watches again; says whether the view changed.
/// `installing`: images may be installed on every shard (not while joining: the other shards
/// do not serve their mailboxes yet).
async fn refresh(
    shard: &Rc<Shard>,
    m: &mut Membership,
    dirty: Dirty,
    installing: bool,
) -> Result<bool, ClusterError> {
    let store = store(shard)?;
    let client = store.client();
    let mut view = m.view.clone();
    if dirty.controller {
        // Arm the watch first: a controller that goes after this read is told.
        let _ = client.exists_watch(CONTROLLER).await?;
        let was = store.role();
        match claim(client, m.me.node_id).await? {
            Claim::Won {
                epoch,
                fence_version,
            } => {
                if !matches!(was, WriterRole::Controller { .. }) {
                    // Changes the last controller made are read before deciding any here.
                    if installing && let Some(c) = shard.controller() {
                        c.reload().await?;
                    }
                    info!(
                        node_id = m.me.node_id,
                        epoch, "this broker is the controller"
                    );
                }
                store.set_role(WriterRole::Controller { fence_version });
                view.controller_id = Some(m.me.node_id);
            }
            Claim::Held { node_id, epoch } => {
                if matches!(was, WriterRole::Controller { .. }) {
                    warn!(
                        controller = node_id,
                        epoch, "this broker is no longer the controller"
                    );
                }
                store.set_role(WriterRole::Follower);
                view.controller_id = Some(node_id);
            }
        }
    }
    if dirty.brokers {
        view.brokers = live_brokers(client).await?;
    }
    // The controller's own changes fire these watches too; it knows them already.
    let controller = matches!(store.role(), WriterRole::Controller { .. });
    if installing && dirty.topics && (m.topics_unread || !controller) {
        // Another broker (the controller) changed topics: take its image.
        if let Some(c) = shard.controller() {
            c.reload().await?;
        }
        m.topics_unread = false;
    }
    let changed = view.brokers != m.view.brokers || view.controller_id != m.view.controller_id;
    if installing && controller {
        // Brokers came or went (or this broker just became the controller): partitions whose
        // leader is gone get a new one from their live in-sync replicas. Nothing is written
        // when nothing changes. A failure fails the refresh, which is tried again.
        elect_leaders(shard, &view).await?;
    }
    if changed {
        view.generation = m.view.generation + 1;
        info!(
            brokers = ?view.brokers.iter().map(|b| b.node_id).collect::<Vec<_>>(),
            controller = ?view.controller_id,
            "cluster view"
        );
        m.view = view;
    }
    Ok(changed)
}

/// Runs the controller's leader elections (`metadata::elect`) for the live brokers of `view`.
async fn elect_leaders(shard: &Rc<Shard>, view: &ClusterView) -> Result<(), ClusterError> {
    let Some(controller) = shard.controller() else {
        return Ok(());
    };
    let live = view.live_ids();
    let barred = controller.barred(view);
    let unclean = shard
        .config
        .settings
        .bool(crate::metadata::elect::UNCLEAN_SETTING);
    let outcome = controller
        .transact(move |image| {
            let cmds = crate::metadata::elect::elect(image, &live, &barred, unclean);
            let count = cmds.len();
            (cmds, count)
        })
        .await;
    let topics = outcome?;
    if topics > 0 {
        info!(topics, "partition leaders elected for the live brokers");
    }
    Ok(())
}

/// The registrations under `/corebus/brokers/ids`, arming the child watch.
async fn live_brokers(client: &Client) -> Result<Vec<BrokerEndpoint>, ClusterError> {
    let mut names = client.children_watch(BROKER_IDS).await?;
    names.sort_by_key(|n| n.parse::<i64>().unwrap_or(i64::MAX));
    let mut brokers = Vec::with_capacity(names.len());
    for name in names {
        let path = format!("{BROKER_IDS}/{name}");
        match client.get(&path).await {
            Ok((bytes, stat)) => match decode_registration(&path, &bytes) {
                Ok(mut b) => {
                    b.registered = stat.czxid.as_u64();
                    brokers.push(b)
                }
                Err(e) => warn!(error = %e, "a broker registration is unreadable; left out"),
            },
            // Gone since the listing: the child watch tells of it.
            Err(ClientError::Tree {
                error: TreeError::NoNode,
                ..
            }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(brokers)
}

async fn install_everywhere(shard: &Rc<Shard>, view: &ClusterView) {
    let view = Arc::new(view.clone());
    for s in 0..shard.shard_count() {
        let v = view.clone();
        // A shard that is gone is shutting down; it needs no view any more.
        let _ = shard
            .on_shard(ShardId(s as u16), move |target: Rc<Shard>| async move {
                target.install_cluster(v)
            })
            .await;
    }
}

/// At a clean shutdown: closes the session, so the registration (and the controller node,
/// when this broker holds it) go at once instead of after the session timeout.
pub async fn leave(shard: &Shard) {
    let Ok(store) = store(shard) else { return };
    store.set_role(WriterRole::Follower);
    let closed = glommio::timer::timeout(Duration::from_millis(SESSION_CLOSE_TIMEOUT_MS), async {
        store
            .client()
            .close_session()
            .await
            .map_err(|e| glommio::GlommioError::<()>::IoError(std::io::Error::other(e)))
    })
    .await;
    match closed {
        Ok(()) => info!("consensus session closed: its ephemeral nodes are gone"),
        Err(e) => warn!(error = %e, "consensus session not closed; it expires instead"),
    }
}
