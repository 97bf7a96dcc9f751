//! Which versions of which APIs this side speaks, and the ApiVersions answer built from that.
//!
//! Owns: the version range of every api key (taken from kafka-protocol's generated messages,
//! which follow Kafka 4.x with the KIP-896 floor: Produce 3+, Fetch 4+, ListOffsets 1+,
//! OffsetCommit 2+, OffsetFetch 1+, Metadata 0+ kept for old clients), and [`ApiSupport`], the
//! set of APIs a broker advertises, optionally capped below the generated maximum.
//!
//! A range is the intersection of the api key's table and what both generated messages can
//! encode: kafka-protocol 0.18 lists InitProducerId v6, OffsetCommit v10 and OffsetFetch v10
//! (Kafka 4.1) for the key but generates those requests only up to v5, v9 and v9 (Kafka 4.0's
//! maxima), so advertising the higher versions would accept requests that cannot be decoded.
//! Never: decides which APIs the broker implements; the broker lists them.

use std::collections::BTreeMap;

use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use kafka_protocol::protocol::Message;

use crate::error::WireError;

pub use kafka_protocol::protocol::VersionRange;

/// Every version of `api_key` this crate can decode and encode, request and response.
pub fn supported_versions(api_key: ApiKey) -> VersionRange {
    api_key
        .valid_versions()
        .intersect(&generated_versions(api_key))
}

/// The versions of the message a `RequestKind`/`ResponseKind` variant constructor wraps.
fn versions_of<T: Message, Kind>(_variant: fn(T) -> Kind) -> VersionRange {
    T::VERSIONS
}

macro_rules! define_generated_versions {
    ([] $($name:ident),* $(,)?) => {
        /// The versions both generated messages of `api_key` support.
        fn generated_versions(api_key: ApiKey) -> VersionRange {
            match api_key {
                $(ApiKey::$name => versions_of(RequestKind::$name)
                    .intersect(&versions_of(ResponseKind::$name)),)*
            }
        }
    };
}
crate::for_each_api!(define_generated_versions);

/// Whether `api_version` of `api_key` is within [`supported_versions`].
pub fn is_supported_version(api_key: ApiKey, api_version: i16) -> bool {
    let range = supported_versions(api_key);
    (range.min..=range.max).contains(&api_version)
}

/// The APIs and version ranges a broker advertises in its ApiVersions response.
///
/// Built from the list of APIs the broker implements: an API absent here is not advertised, so
/// clients never send it (KIP-848's ConsumerGroupHeartbeat, for instance, must stay out until
/// it fully works: clients switch to it as soon as they see it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiSupport {
    // Keyed by the api key's number so the response lists keys in ascending order, as Kafka does.
    ranges: BTreeMap<i16, VersionRange>,
}

impl ApiSupport {
    /// Advertises nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Advertises every api key at its full generated range (tools and tests; a broker lists
    /// what it implements instead).
    pub fn all() -> Self {
        ApiKey::iter().fold(Self::new(), Self::with)
    }

    /// Advertises `api_key` at its full generated range.
    pub fn with(mut self, api_key: ApiKey) -> Self {
        self.ranges
            .insert(api_key as i16, supported_versions(api_key));
        self
    }

    /// Advertises `api_key` from its generated minimum up to `max_version` (capped to the
    /// generated maximum). A cap below the generated minimum is refused rather than silently
    /// dropping the API.
    pub fn with_max_version(
        mut self,
        api_key: ApiKey,
        max_version: i16,
    ) -> Result<Self, WireError> {
        let generated = supported_versions(api_key);
        if max_version < generated.min {
            return Err(WireError::VersionCapBelowFloor {
                api_key,
                max_version,
                min_version: generated.min,
            });
        }
        let capped = VersionRange {
            min: generated.min,
            max: max_version.min(generated.max),
        };
        self.ranges.insert(api_key as i16, capped);
        Ok(self)
    }

    /// The advertised range of `api_key`, if it is advertised.
    pub fn range(&self, api_key: ApiKey) -> Option<VersionRange> {
        self.ranges.get(&(api_key as i16)).copied()
    }

    /// Whether `api_version` of `api_key` is advertised.
    pub fn supports(&self, api_key: ApiKey, api_version: i16) -> bool {
        self.range(api_key)
            .is_some_and(|range| (range.min..=range.max).contains(&api_version))
    }

    /// The advertised ranges in ascending api key order, as ApiVersions entries.
    pub fn api_version_entries(&self) -> Vec<ApiVersion> {
        self.ranges
            .iter()
            .map(|(&api_key, range)| {
                ApiVersion::default()
                    .with_api_key(api_key)
                    .with_min_version(range.min)
                    .with_max_version(range.max)
            })
            .collect()
    }

    /// A successful ApiVersions response listing the advertised ranges. Features, throttle time
    /// and the other fields keep their defaults (so tagged fields stay unwritten); the broker
    /// sets them if it has any.
    pub fn api_versions_response(&self) -> ApiVersionsResponse {
        ApiVersionsResponse::default().with_api_keys(self.api_version_entries())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kip_896_floors() {
        let floor = |api_key: ApiKey| supported_versions(api_key).min;
        assert_eq!(floor(ApiKey::Produce), 3);
        assert_eq!(floor(ApiKey::Fetch), 4);
        assert_eq!(floor(ApiKey::ListOffsets), 1);
        assert_eq!(floor(ApiKey::OffsetCommit), 2);
        assert_eq!(floor(ApiKey::OffsetFetch), 1);
        // Kept because kafka-python and librdkafka still send them.
        assert_eq!(floor(ApiKey::Metadata), 0);
        assert_eq!(floor(ApiKey::JoinGroup), 0);
        assert_eq!(floor(ApiKey::ApiVersions), 0);
    }

    #[test]
    fn ranges_stop_where_the_generated_requests_stop() {
        let max = |api_key: ApiKey| supported_versions(api_key).max;
        assert_eq!(max(ApiKey::InitProducerId), 5);
        assert_eq!(max(ApiKey::OffsetCommit), 9);
        assert_eq!(max(ApiKey::OffsetFetch), 9);
        assert_eq!(max(ApiKey::Produce), 13);
        assert_eq!(max(ApiKey::Fetch), 18);
        assert_eq!(max(ApiKey::Metadata), 13);
        assert!(ApiKey::iter().all(|api_key| !supported_versions(api_key).is_empty()));
    }

    #[test]
    fn capped_support() {
        let support = ApiSupport::new()
            .with(ApiKey::ApiVersions)
            .with_max_version(ApiKey::Produce, 12)
            .unwrap()
            .with_max_version(ApiKey::Metadata, i16::MAX)
            .unwrap();
        assert_eq!(
            support.range(ApiKey::Produce),
            Some(VersionRange { min: 3, max: 12 })
        );
        assert_eq!(
            support.range(ApiKey::Metadata),
            Some(supported_versions(ApiKey::Metadata))
        );
        assert!(support.supports(ApiKey::Produce, 12));
        assert!(!support.supports(ApiKey::Produce, 13));
        assert!(!support.supports(ApiKey::Fetch, 4));
        assert!(matches!(
            ApiSupport::new().with_max_version(ApiKey::Produce, 2),
            Err(WireError::VersionCapBelowFloor { .. })
        ));
        let keys: Vec<i16> = support
            .api_versions_response()
            .api_keys
            .iter()
            .map(|e| e.api_key)
            .collect();
        assert_eq!(keys, vec![0, 3, 18]);
    }
}
