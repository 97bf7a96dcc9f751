//! DescribeCluster (key 60): the live brokers and the controller, as the cluster view has them
//! (see `crate::cluster`).
//!
//! Never: lists controllers as a separate endpoint type (corebus has none to list).

use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use corebus_wire::kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse,
};

use super::common::str_bytes;
use crate::shard::Shard;

/// KIP-919 endpoint types.
const ENDPOINT_BROKERS: i8 = 1;

pub fn handle(
    shard: &Shard,
    request: DescribeClusterRequest,
    _version: i16,
) -> DescribeClusterResponse {
    let cluster = shard.cluster();
    let response = DescribeClusterResponse::default()
        .with_endpoint_type(request.endpoint_type)
        .with_cluster_id(str_bytes(shard.metadata().cluster_id.clone()))
        .with_controller_id(BrokerId(cluster.controller_wire_id()));
    if request.endpoint_type != ENDPOINT_BROKERS {
        return response
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(str_bytes("only broker endpoints are served")));
    }
    let brokers = cluster
        .brokers
        .iter()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.node_id))
                .with_host(str_bytes(b.host.clone()))
                .with_port(b.port)
                .with_rack(b.rack.clone().map(str_bytes))
        })
        .collect();
    response.with_brokers(brokers)
}
