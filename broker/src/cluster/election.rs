//! The controller election: brokers race to create the ephemeral `/corebus/controller`
//! (`{"version":1,"node_id":N,"epoch":E}`) under their sessions; the one that creates it is
//! the controller until its session ends. The node is created in one `multi` with a
//! compare-and-set of `/corebus/controller_epoch` to `E`, so every controller has an epoch no
//! other had, and the epoch node's data version is the fence its topic changes carry
//! (`consensus_store::WriterRole`): a controller that was replaced cannot write over its
//! successor, however late its request arrives.
//!
//! Never: deletes the controller node (it goes with its owner's session); claims while the
//! node exists.

use corebus_consensus::client::{Client, Error as ClientError};
use corebus_consensus::txn::{OpResult, TreeError, WriteOp};
use corebus_consensus::types::SessionId;
use serde::{Deserialize, Serialize};

use super::ClusterError;
use crate::metadata::MetadataError;
use crate::metadata::consensus_store::{
    CONTROLLER, CONTROLLER_EPOCH, NODE_VERSION_1, bad, controller_epoch_value, decode,
    decode_controller_epoch, encode,
};

/// Rounds of the race one claim may lose to concurrent claimants (each loss means someone
/// else became controller or bumped the epoch) before it reports a conflict.
pub const CONTROLLER_CLAIM_ATTEMPTS: usize = 8;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct ControllerNode {
    version: u32,
    node_id: i32,
    epoch: u64,
}

/// Who the controller is after a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This broker: its epoch, and the data version of `/corebus/controller_epoch` it holds.
    Won { epoch: u64, fence_version: u32 },
    /// Another session holds the node (another broker, or this broker's dead predecessor).
    Held { node_id: i32, epoch: u64 },
}

pub fn controller_value(node_id: i32, epoch: u64) -> Vec<u8> {
    encode(&ControllerNode {
        version: NODE_VERSION_1,
        node_id,
        epoch,
    })
}

/// The controller node's holder and epoch.
pub fn decode_controller(bytes: &[u8]) -> Result<(i32, u64), MetadataError> {
    let node: ControllerNode = decode(CONTROLLER, bytes)?;
    if node.node_id < 0 || node.epoch == 0 {
        return Err(bad(
            CONTROLLER,
            format!("node {} at epoch {}", node.node_id, node.epoch),
        ));
    }
    Ok((node.node_id, node.epoch))
}

/// Learns who the controller is, and takes the role when nobody holds it.
pub async fn claim(client: &Client, node_id: i32) -> Result<Claim, ClusterError> {
    let session = client.open_session().await?.id;
    for _ in 0..CONTROLLER_CLAIM_ATTEMPTS {
        if let Some(claim) = current(client, session).await? {
            return Ok(claim);
        }
        let (bytes, stat) = client.get(CONTROLLER_EPOCH).await?;
        let epoch = decode_controller_epoch(&bytes)? + 1;
        let ops = vec![
            WriteOp::SetData {
                path: CONTROLLER_EPOCH.into(),
                data: controller_epoch_value(epoch),
                expected_version: Some(stat.version),
            },
            WriteOp::Create {
                path: CONTROLLER.into(),
                data: controller_value(node_id, epoch),
                sequential: false,
                ephemeral_owner: Some(session),
            },
        ];
        match client.multi(ops).await {
            Ok(results) => {
                if let Some(OpResult::Set { stat }) = results.first() {
                    return Ok(Claim::Won {
                        epoch,
                        fence_version: stat.version,
                    });
                }
                // Applied, but the reply does not say the version: read it back.
            }
            // Lost the race (someone bumped the epoch or holds the node), or the outcome is
            // unknown: the next round reads what is there now.
            Err(ClientError::Tree {
                error: TreeError::BadVersion | TreeError::NodeExists,
                ..
            })
            | Err(ClientError::ConnectionLoss { .. } | ClientError::Timeout { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(ClusterError::Metadata(MetadataError::Conflict(format!(
        "the controller claim lost {CONTROLLER_CLAIM_ATTEMPTS} races in a row"
    ))))
}

/// The controller as the tree has it now (`None`: nobody holds the node).
async fn current(client: &Client, session: SessionId) -> Result<Option<Claim>, ClusterError> {
    let (bytes, stat) = match client.get(CONTROLLER).await {
        Ok(found) => found,
        Err(ClientError::Tree {
            error: TreeError::NoNode,
            ..
        }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let (holder, epoch) = decode_controller(&bytes)?;
    if stat.ephemeral_owner != Some(session) {
        return Ok(Some(Claim::Held {
            node_id: holder,
            epoch,
        }));
    }
    // Ours (an earlier claim whose reply was lost, or a second look): the fence is the epoch
    // node's version now, which nobody can change while this node exists.
    let (bytes, stat) = client.get(CONTROLLER_EPOCH).await?;
    let fenced = decode_controller_epoch(&bytes)?;
    if fenced != epoch {
        return Err(ClusterError::Metadata(bad(
            CONTROLLER_EPOCH,
            format!("epoch {fenced}, but this broker's controller node says {epoch}"),
        )));
    }
    Ok(Some(Claim::Won {
        epoch,
        fence_version: stat.version,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_values_round_trip_and_bad_ones_are_errors() {
        let v = controller_value(3, 12);
        assert_eq!(
            std::str::from_utf8(&v).unwrap(),
            r#"{"version":1,"node_id":3,"epoch":12}"#
        );
        assert_eq!(decode_controller(&v).unwrap(), (3, 12));
        for bad in [
            r#"{"version":1,"node_id":-1,"epoch":1}"#,
            r#"{"version":1,"node_id":1,"epoch":0}"#,
            r#"{"version":9,"node_id":1,"epoch":1}"#,
            r#"{"node_id":1}"#,
        ] {
            assert!(decode_controller(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
