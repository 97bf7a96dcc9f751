//! The error code a response reports, for `corebus_requests_total{error=...}`: the
//! request-level code when the response has one and it is set, else the first non-zero code
//! of a topic, partition, group or resource in it, else NONE.
//!
//! Never: changes a response; allocates (it only walks what the handler built).

use corebus_wire::kafka_protocol::messages::{FetchResponse, ResponseKind};

/// The first non-zero code among `codes`, else 0.
fn first(codes: impl IntoIterator<Item = i16>) -> i16 {
    codes.into_iter().find(|&c| c != 0).unwrap_or(0)
}

/// The code of a Fetch response (the zero-copy path keeps it outside a `ResponseKind`).
pub fn fetch_error_code(r: &FetchResponse) -> i16 {
    first(
        std::iter::once(r.error_code).chain(
            r.responses
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        ),
    )
}

/// The code that labels `response` in the request counters (0 for NONE).
pub fn response_error_code(response: &ResponseKind) -> i16 {
    use ResponseKind as R;
    match response {
        R::Produce(r) => first(
            r.responses
                .iter()
                .flat_map(|t| t.partition_responses.iter().map(|p| p.error_code)),
        ),
        R::Fetch(r) => fetch_error_code(r),
        R::ListOffsets(r) => first(
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        ),
        R::DeleteRecords(r) => first(
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        ),
        R::OffsetForLeaderEpoch(r) => first(
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        ),
        R::Metadata(r) => {
            first(std::iter::once(r.error_code).chain(r.topics.iter().map(|t| t.error_code)))
        }
        R::CreateTopics(r) => first(r.topics.iter().map(|t| t.error_code)),
        R::DeleteTopics(r) => first(r.responses.iter().map(|t| t.error_code)),
        R::CreatePartitions(r) => first(r.results.iter().map(|t| t.error_code)),
        R::DescribeConfigs(r) => first(r.results.iter().map(|t| t.error_code)),
        R::AlterConfigs(r) => first(r.responses.iter().map(|t| t.error_code)),
        R::IncrementalAlterConfigs(r) => first(r.responses.iter().map(|t| t.error_code)),
        R::OffsetCommit(r) => first(
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        ),
        R::OffsetFetch(r) => first(
            std::iter::once(r.error_code)
                .chain(r.groups.iter().map(|g| g.error_code))
                .chain(
                    r.topics
                        .iter()
                        .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
                ),
        ),
        R::FindCoordinator(r) => {
            first(std::iter::once(r.error_code).chain(r.coordinators.iter().map(|c| c.error_code)))
        }
        R::DescribeGroups(r) => first(r.groups.iter().map(|g| g.error_code)),
        R::DeleteGroups(r) => first(r.results.iter().map(|g| g.error_code)),
        R::DescribeLogDirs(r) => {
            first(std::iter::once(r.error_code).chain(r.results.iter().map(|d| d.error_code)))
        }
        R::DescribeProducers(r) => first(
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        ),
        R::ApiVersions(r) => r.error_code,
        R::InitProducerId(r) => r.error_code,
        R::DescribeCluster(r) => r.error_code,
        R::JoinGroup(r) => r.error_code,
        R::SyncGroup(r) => r.error_code,
        R::Heartbeat(r) => r.error_code,
        R::LeaveGroup(r) => {
            first(std::iter::once(r.error_code).chain(r.members.iter().map(|m| m.error_code)))
        }
        R::ListGroups(r) => r.error_code,
        R::OffsetDelete(r) => first(
            std::iter::once(r.error_code).chain(
                r.topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
            ),
        ),
        // Every API this broker advertises is listed above; any other reports no code.
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corebus_wire::kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use corebus_wire::kafka_protocol::messages::{HeartbeatResponse, ProduceResponse};

    #[test]
    fn request_level_then_first_partition_code() {
        let ok = PartitionProduceResponse::default();
        let bad = PartitionProduceResponse::default().with_error_code(3);
        let r = ProduceResponse::default().with_responses(vec![
            TopicProduceResponse::default().with_partition_responses(vec![ok.clone(), bad]),
        ]);
        assert_eq!(response_error_code(&ResponseKind::Produce(r)), 3);
        let r = ProduceResponse::default().with_responses(vec![
            TopicProduceResponse::default().with_partition_responses(vec![ok]),
        ]);
        assert_eq!(response_error_code(&ResponseKind::Produce(r)), 0);
        let h = HeartbeatResponse::default().with_error_code(27);
        assert_eq!(response_error_code(&ResponseKind::Heartbeat(h)), 27);
    }
}
