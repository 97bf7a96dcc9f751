//! The node's roles and its consensus membership: `--roles`, `--consensus-listen`,
//! `--consensus-peers`, resolved and checked at start-up.
//!
//! Owns parsing and cross-checks only (every member named once, this node among them,
//! addresses that resolve); never starts anything (see `crate::consensus`).

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};

use super::value::parse_host_port;
use super::{ConfigError, HostPort};

/// The consensus port when `--consensus-listen` is not given (on the `--listen` host).
pub const DEFAULT_CONSENSUS_PORT: u16 = 9093;

/// What this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub consensus: bool,
    pub broker: bool,
}

impl Roles {
    pub const BOTH: Roles = Roles {
        consensus: true,
        broker: true,
    };

    /// `consensus`, `broker`, or both comma-separated, in either order.
    pub fn parse(text: &str) -> Result<Roles, ConfigError> {
        let mut roles = Roles {
            consensus: false,
            broker: false,
        };
        for part in text.split(',').map(str::trim) {
            let slot = match part {
                "consensus" => &mut roles.consensus,
                "broker" => &mut roles.broker,
                other => {
                    return Err(bad(
                        "--roles",
                        text,
                        format!("unknown role {other:?}: the roles are consensus and broker"),
                    ));
                }
            };
            if *slot {
                return Err(bad("--roles", text, format!("role {part:?} given twice")));
            }
            *slot = true;
        }
        Ok(roles)
    }
}

/// The consensus group as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsensusConfig {
    /// Where this node's consensus role listens (peers and clients).
    pub listen: SocketAddr,
    /// Every member by id, this node included. Without `--consensus-peers`: this node alone
    /// (the embedded group of one).
    pub members: BTreeMap<u64, SocketAddr>,
    /// Whether the members came from `--consensus-peers` (a group to join or to reach).
    pub explicit_peers: bool,
}

fn bad(name: &str, value: &str, reason: String) -> ConfigError {
    ConfigError::Malformed {
        name: name.to_string(),
        value: value.to_string(),
        origin: "command line".to_string(),
        reason,
    }
}

fn resolve(flag: &str, text: &str, host: &str, port: u16) -> Result<SocketAddr, ConfigError> {
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| bad(flag, text, format!("cannot resolve {host:?}: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| bad(flag, text, format!("{host:?} resolves to no address")))
}

/// Resolves the consensus flags for node `node_id` whose Kafka listener is `listen`. A node
/// with the consensus role must be among the members; a broker-only node uses the group and
/// need not be.
pub fn resolve_consensus(
    node_id: i32,
    roles: Roles,
    listen: &HostPort,
    consensus_listen: Option<&str>,
    peers: Option<&str>,
) -> Result<ConsensusConfig, ConfigError> {
    let given_listen = match consensus_listen {
        Some(text) => {
            let (host, port) =
                parse_host_port(text.trim()).map_err(|r| bad("--consensus-listen", text, r))?;
            Some(resolve("--consensus-listen", text, &host, port)?)
        }
        None => None,
    };
    let me = node_id as u64;
    let Some(text) = peers else {
        let listen_addr = match given_listen {
            Some(a) => a,
            None => {
                let text = format!("{}:{DEFAULT_CONSENSUS_PORT}", listen.host);
                resolve(
                    "--consensus-listen",
                    &text,
                    &listen.host,
                    DEFAULT_CONSENSUS_PORT,
                )?
            }
        };
        return Ok(ConsensusConfig {
            listen: listen_addr,
            members: BTreeMap::from([(me, listen_addr)]),
            explicit_peers: false,
        });
    };
    let flag = "--consensus-peers";
    let mut members = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) = entry
            .split_once('@')
            .ok_or_else(|| bad(flag, text, format!("{entry:?} is not ID@HOST:PORT")))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| bad(flag, text, format!("{id:?} in {entry:?} is not a node id")))?;
        let (host, port) = parse_host_port(addr.trim()).map_err(|r| bad(flag, text, r))?;
        let addr = resolve(flag, text, &host, port)?;
        if members.insert(id, addr).is_some() {
            return Err(bad(flag, text, format!("node {id} is listed twice")));
        }
    }
    if members.is_empty() {
        return Err(bad(flag, text, "no members given".into()));
    }
    if roles.consensus && !members.contains_key(&me) {
        return Err(bad(
            flag,
            text,
            format!(
                "this node (--node-id {node_id}) is not among the members; list every member, this one included"
            ),
        ));
    }
    // Without --consensus-listen the node listens where the group expects it (a broker-only
    // node listens for no consensus traffic; the address is unused).
    let listen_addr = match (given_listen, members.get(&me)) {
        (Some(a), _) | (None, Some(&a)) => a,
        (None, None) => resolve(flag, text, &listen.host, DEFAULT_CONSENSUS_PORT)?,
    };
    Ok(ConsensusConfig {
        listen: listen_addr,
        members,
        explicit_peers: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostPort {
        HostPort {
            host: "127.0.0.1".into(),
            port: 9092,
        }
    }

    #[test]
    fn roles_parse_and_refuse() {
        assert_eq!(Roles::parse("consensus,broker").unwrap(), Roles::BOTH);
        assert_eq!(Roles::parse("broker , consensus").unwrap(), Roles::BOTH);
        let c = Roles::parse("consensus").unwrap();
        assert!(c.consensus && !c.broker);
        for t in ["", "zookeeper", "broker,broker", "broker,"] {
            assert!(Roles::parse(t).is_err(), "{t:?}");
        }
    }

    #[test]
    fn defaults_to_a_group_of_one_next_to_the_listener() {
        let c = resolve_consensus(1, Roles::BOTH, &host(), None, None).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9093");
        assert_eq!(c.members, BTreeMap::from([(1, c.listen)]));
        assert!(!c.explicit_peers);
    }

    #[test]
    fn peers_are_checked() {
        let peers = "1@127.0.0.1:7001,2@127.0.0.1:7002,3@127.0.0.1:7003";
        let c = resolve_consensus(2, Roles::BOTH, &host(), Some("127.0.0.1:7002"), Some(peers))
            .unwrap();
        assert_eq!(c.members.len(), 3);
        assert_eq!(c.members[&3].port(), 7003);
        let c = resolve_consensus(3, Roles::BOTH, &host(), None, Some(peers)).unwrap();
        assert_eq!(c.listen.port(), 7003, "listens at its own member address");
        for (id, p) in [
            (4, peers),
            (1, "1@127.0.0.1:7001,1@127.0.0.1:7002"),
            (1, "1-127.0.0.1:7001"),
            (1, "x@127.0.0.1:7001"),
            (1, "1@127.0.0.1"),
            (1, ","),
        ] {
            let e = resolve_consensus(id, Roles::BOTH, &host(), None, Some(p)).unwrap_err();
            assert!(e.to_string().contains("--consensus-peers"), "{p}: {e}");
        }
        let e = resolve_consensus(1, Roles::BOTH, &host(), Some("nowhere"), None).unwrap_err();
        assert!(e.to_string().contains("--consensus-listen"), "{e}");
        // A broker-only node uses the group without being one of its members.
        let broker = Roles {
            consensus: false,
            broker: true,
        };
        let c = resolve_consensus(4, broker, &host(), None, Some(peers)).unwrap();
        assert_eq!(c.members.len(), 3);
        assert!(!c.members.contains_key(&4) && c.explicit_peers);
    }
}
