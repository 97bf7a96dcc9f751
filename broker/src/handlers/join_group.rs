//! JoinGroup (key 11): checks the request, then joins the group on its coordinator's shard
//! and waits there for the rebalance to complete (the classic protocol's long poll). v4+ get
//! MEMBER_ID_REQUIRED on a first join (KIP-394); v5+ carry `group.instance.id` (KIP-345);
//! v9 may answer a static leader with `skip_assignment` (KIP-814).
//!
//! Never: waits on the connection's shard for another shard's group state.

use std::net::SocketAddr;
use std::rc::Rc;

use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use corebus_wire::kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::common::str_bytes;
use super::group_routing::{MAX_GROUP_STRING_BYTES, check_group_id, code, on_coordinator};
use crate::groups::group::{JoinRequest, JoinResult};
use crate::groups::member::Protocol;
use crate::shard::Shard;

/// Characters of the client id kept in a generated member id (Kafka keeps all; a bound keeps
/// the stored member id within its i16 length).
const MEMBER_ID_CLIENT_PREFIX_CHARS: usize = 200;

pub async fn handle(
    shard: &Rc<Shard>,
    request: JoinGroupRequest,
    version: i16,
    client_id: &str,
    peer: SocketAddr,
) -> JoinGroupResponse {
    let group_id = request.group_id.0.to_string();
    let result = match check(&request) {
        Err(e) => JoinResult::error(e, &request.member_id),
        Ok(()) => {
            let req = JoinRequest {
                member_id: request.member_id.to_string(),
                instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
                client_id: client_id
                    .chars()
                    .take(MEMBER_ID_CLIENT_PREFIX_CHARS)
                    .collect(),
                client_host: format!("/{}", peer.ip()),
                session_timeout_ms: request.session_timeout_ms,
                // v0 has no rebalance timeout; Kafka uses the session timeout.
                rebalance_timeout_ms: if version == 0 || request.rebalance_timeout_ms <= 0 {
                    request.session_timeout_ms
                } else {
                    request.rebalance_timeout_ms
                },
                protocol_type: request.protocol_type.to_string(),
                protocols: request
                    .protocols
                    .iter()
                    .map(|p| Protocol {
                        name: p.name.to_string(),
                        metadata: p.metadata.clone(),
                    })
                    .collect(),
                require_known_member_id: version >= 4,
                supports_skip_assignment: version >= 9,
            };
            let g = group_id.clone();
            on_coordinator(shard, &group_id, move |s: Rc<Shard>| async move {
                s.groups.join(&s, &g, req).await
            })
            .await
            .unwrap_or_else(|e| JoinResult::error(e, &request.member_id))
        }
    };
    response(result, version)
}

fn check(request: &JoinGroupRequest) -> Result<(), ResponseError> {
    check_group_id(&request.group_id.0)?;
    let too_long = |s: &str| s.len() > MAX_GROUP_STRING_BYTES;
    if request
        .group_instance_id
        .as_deref()
        .is_some_and(|i| i.is_empty() || too_long(i))
        || too_long(&request.protocol_type)
        || too_long(&request.member_id)
        || request.protocols.iter().any(|p| too_long(&p.name))
    {
        return Err(ResponseError::InvalidRequest);
    }
    Ok(())
}

fn response(r: JoinResult, version: i16) -> JoinGroupResponse {
    let mut resp = JoinGroupResponse::default()
        .with_error_code(code(r.error))
        .with_generation_id(r.generation)
        .with_leader(str_bytes(r.leader))
        .with_member_id(str_bytes(r.member_id))
        .with_members(
            r.members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(m.member_id))
                        .with_group_instance_id(m.instance_id.map(str_bytes))
                        .with_metadata(m.metadata)
                })
                .collect(),
        );
    // The protocol name is nullable from v7 only; before it is a plain string.
    resp.protocol_name = match r.protocol_name {
        Some(n) => Some(str_bytes(n)),
        None if version < 7 => Some(str_bytes("")),
        None => None,
    };
    if version >= 7 {
        resp.protocol_type = r.protocol_type.map(str_bytes);
    }
    if version >= 9 {
        resp.skip_assignment = r.skip_assignment;
    }
    resp
}
