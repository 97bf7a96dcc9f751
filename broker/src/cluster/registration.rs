//! The broker's registration: the ephemeral node `/corebus/brokers/ids/<node id>` under its
//! consensus session, holding `{"version":1,"node_id":N,"listeners":[{"name":"PLAINTEXT",
//! "host":"..","port":P}],"rack":null|".."}` (the advertised listener; Kafka's
//! `/brokers/ids/N` in spirit), and reading other brokers' registrations back.
//!
//! A registration that already exists belongs to another session: either this broker's
//! predecessor, killed without closing its session (the node goes within the session bound),
//! or another live broker with the same id. Start-up waits the bound out and then refuses with
//! [`ClusterError::NodeExists`]; it never deletes or overwrites someone else's registration.
//!
//! Never: writes anything but this broker's own registration; panics on what it reads.

use std::time::{Duration, Instant};

use corebus_consensus::client::{Client, CreateMode, Error as ClientError};
use corebus_consensus::txn::TreeError;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{BrokerEndpoint, ClusterError};
use crate::metadata::MetadataError;
use crate::metadata::consensus_store::{BROKER_IDS, NODE_VERSION_1, bad, decode, encode};

/// The name of the one listener corebus has (Kafka's default listener name).
pub const LISTENER_NAME: &str = "PLAINTEXT";
/// Beyond the session timeout, how long start-up waits for a predecessor's registration to
/// go: the session bound's allowance for a change of the group's leader (the old leader's
/// silence limit, an election, the new leader's sync) and a commit.
pub const REGISTRATION_LEADER_CHANGE_ALLOWANCE_MS: u64 = 3_000;
/// Pause between looks at a registration held by another session.
const REGISTRATION_RETRY_MS: u64 = 100;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct ListenerNode {
    name: String,
    host: String,
    port: i32,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct RegistrationNode {
    version: u32,
    node_id: i32,
    listeners: Vec<ListenerNode>,
    rack: Option<String>,
}

pub fn broker_path(node_id: i32) -> String {
    format!("{BROKER_IDS}/{node_id}")
}

pub fn registration_value(me: &BrokerEndpoint) -> Vec<u8> {
    encode(&RegistrationNode {
        version: NODE_VERSION_1,
        node_id: me.node_id,
        listeners: vec![ListenerNode {
            name: LISTENER_NAME.into(),
            host: me.host.clone(),
            port: me.port,
        }],
        rack: me.rack.clone(),
    })
}

/// A registration read from `path` (`/corebus/brokers/ids/<id>`).
pub fn decode_registration(path: &str, bytes: &[u8]) -> Result<BrokerEndpoint, MetadataError> {
    let node: RegistrationNode = decode(path, bytes)?;
    let named: Option<i32> = path.rsplit('/').next().and_then(|n| n.parse().ok());
    if named != Some(node.node_id) || node.node_id < 0 {
        return Err(bad(
            path,
            format!("registration of node {} under this name", node.node_id),
        ));
    }
    let listener = node
        .listeners
        .iter()
        .find(|l| l.name == LISTENER_NAME)
        .or(node.listeners.first())
        .ok_or_else(|| bad(path, "a registration without listeners"))?;
    if !(1..=i32::from(u16::MAX)).contains(&listener.port) || listener.host.is_empty() {
        return Err(bad(
            path,
            format!(
                "listener {}:{} is not an address",
                listener.host, listener.port
            ),
        ));
    }
    Ok(BrokerEndpoint {
        node_id: node.node_id,
        host: listener.host.clone(),
        port: listener.port,
        rack: node.rack,
        registered: 0,
    })
}

/// Creates this broker's registration under the client's session (opening it), waiting up
/// to the session bound for a predecessor's registration to go (see the module docs).
pub async fn register(
    client: &Client,
    me: &BrokerEndpoint,
    session_timeout_ms: u64,
) -> Result<(), ClusterError> {
    let path = broker_path(me.node_id);
    let data = registration_value(me);
    let session = client.open_session().await?;
    let wait_ms = session_timeout_ms + REGISTRATION_LEADER_CHANGE_ALLOWANCE_MS;
    let mut first_seen: Option<Instant> = None;
    loop {
        match client.create(&path, &data, CreateMode::Ephemeral).await {
            Ok(_) => {
                info!(path, session = session.id.0, server = ?client.server(), "broker registered");
                return Ok(());
            }
            Err(ClientError::Tree {
                error: TreeError::NodeExists,
                ..
            })
            | Err(ClientError::ConnectionLoss { .. } | ClientError::Timeout { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        // Held by someone: by this session (a create whose reply was lost), or another.
        let holder = match client.get(&path).await {
            Ok((_, stat)) if stat.ephemeral_owner == Some(session.id) => {
                info!(path, session = session.id.0, server = ?client.server(), "broker registered");
                return Ok(());
            }
            Ok((bytes, stat)) => describe_holder(&path, &bytes, stat.ephemeral_owner),
            Err(ClientError::Tree {
                error: TreeError::NoNode,
                ..
            }) => continue,
            Err(e) => return Err(e.into()),
        };
        let since = *first_seen.get_or_insert_with(|| {
            warn!(
                path,
                %holder,
                wait_ms,
                "this broker id is registered by another session; waiting for it to expire \
                 (a broker killed without closing its session) before refusing"
            );
            Instant::now()
        });
        if since.elapsed() >= Duration::from_millis(wait_ms) {
            return Err(ClusterError::NodeExists {
                node_id: me.node_id,
                path,
                holder,
                waited_ms: wait_ms,
            });
        }
        glommio::timer::sleep(Duration::from_millis(REGISTRATION_RETRY_MS)).await;
    }
}

fn describe_holder(
    path: &str,
    bytes: &[u8],
    owner: Option<corebus_consensus::types::SessionId>,
) -> String {
    let session = owner.map_or("no session".to_string(), |s| format!("session {:#x}", s.0));
    match decode_registration(path, bytes) {
        Ok(b) => format!("{}:{}, {session}", b.host, b.port),
        Err(e) => format!("{e}, {session}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_round_trip_and_bad_ones_are_errors() {
        let me = BrokerEndpoint {
            node_id: 7,
            host: "10.0.0.7".into(),
            port: 9092,
            rack: Some("r1".into()),
            registered: 0,
        };
        let bytes = registration_value(&me);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(
            text,
            r#"{"version":1,"node_id":7,"listeners":[{"name":"PLAINTEXT","host":"10.0.0.7","port":9092}],"rack":"r1"}"#
        );
        assert_eq!(decode_registration(&broker_path(7), &bytes).unwrap(), me);
        // Under another id's name, without listeners, with a bad port, a newer format.
        assert!(decode_registration(&broker_path(8), &bytes).is_err());
        for bad in [
            r#"{"version":1,"node_id":7,"listeners":[],"rack":null}"#,
            r#"{"version":1,"node_id":7,"listeners":[{"name":"PLAINTEXT","host":"h","port":0}],"rack":null}"#,
            r#"{"version":2,"node_id":7,"listeners":[{"name":"PLAINTEXT","host":"h","port":1}],"rack":null}"#,
            "not json",
        ] {
            assert!(
                matches!(
                    decode_registration(&broker_path(7), bad.as_bytes()),
                    Err(MetadataError::BadNode { .. })
                ),
                "{bad}"
            );
        }
    }
}
