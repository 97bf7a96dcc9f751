//! ApiVersions negotiation: the version this client uses for each API against one broker.
//!
//! Owns: the broker's advertised ranges, this client's own caps, and the choice (the highest
//! version both sides speak).
//! Never: guesses a version for an API the broker did not advertise.

use std::collections::HashMap;

use corebus_wire::kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use corebus_wire::supported_versions;

use super::error::ClientError;

/// The ApiVersions version asked first (the first flexible one, as librdkafka and the Java
/// client send); a broker that does not know it answers in v0 with its range (KIP-511).
pub const FIRST_API_VERSIONS_VERSION: i16 = 3;

/// The highest version this client uses of an API, below what `wire` could encode: Produce and
/// Fetch from v13 name topics by id only, which not every Kafka-compatible broker serves;
/// v12 carries names and is what current librdkafka uses.
fn client_cap(api_key: ApiKey) -> i16 {
    match api_key {
        ApiKey::Produce | ApiKey::Fetch | ApiKey::Metadata => 12,
        _ => i16::MAX,
    }
}

/// The ranges one broker advertised.
#[derive(Debug, Clone, Default)]
pub struct ApiVersionTable {
    ranges: HashMap<i16, (i16, i16)>,
}

impl ApiVersionTable {
    pub fn from_response(response: &ApiVersionsResponse) -> ApiVersionTable {
        ApiVersionTable {
            ranges: response
                .api_keys
                .iter()
                .map(|entry| (entry.api_key, (entry.min_version, entry.max_version)))
                .collect(),
        }
    }

    /// The version to use for `api_key` with this broker.
    pub fn negotiate(&self, api_key: ApiKey, address: &str) -> Result<i16, ClientError> {
        let &(broker_min, broker_max) =
            self.ranges
                .get(&(api_key as i16))
                .ok_or_else(|| ClientError::Unsupported {
                    address: address.to_owned(),
                    api_key,
                })?;
        let ours = supported_versions(api_key);
        let version = broker_max.min(ours.max).min(client_cap(api_key));
        if version < broker_min.max(ours.min) {
            return Err(ClientError::NoCommonVersion {
                address: address.to_owned(),
                api_key,
                broker_min,
                broker_max,
            });
        }
        Ok(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corebus_wire::kafka_protocol::messages::api_versions_response::ApiVersion;

    fn table(entries: &[(ApiKey, i16, i16)]) -> ApiVersionTable {
        let response = ApiVersionsResponse::default().with_api_keys(
            entries
                .iter()
                .map(|&(key, min, max)| {
                    ApiVersion::default()
                        .with_api_key(key as i16)
                        .with_min_version(min)
                        .with_max_version(max)
                })
                .collect(),
        );
        ApiVersionTable::from_response(&response)
    }

    #[test]
    fn picks_the_highest_common_version() {
        let t = table(&[(ApiKey::Produce, 0, 11), (ApiKey::Fetch, 0, 17)]);
        assert_eq!(t.negotiate(ApiKey::Produce, "b").unwrap(), 11);
        assert_eq!(t.negotiate(ApiKey::Fetch, "b").unwrap(), 12);
        assert!(matches!(
            t.negotiate(ApiKey::Metadata, "b"),
            Err(ClientError::Unsupported { .. })
        ));
        let old = table(&[(ApiKey::Produce, 0, 2)]);
        assert!(matches!(
            old.negotiate(ApiKey::Produce, "b"),
            Err(ClientError::NoCommonVersion { .. })
        ));
    }
}
