//! Which new client connections the node takes: `max.connections` over the whole node and
//! `max.connections.per.ip` (with `max.connections.per.ip.overrides`) per client address, as
//! Kafka's `ConnectionQuotas` counts them. A refused connection is closed at accept, before
//! anything is read from it.
//!
//! Owns: the node's count of open client connections, in total and per address (shared by
//! every shard's accept loop; touched at accept and close only, never per request).
//! Never: counts a connection twice or forgets one it counted (every `admit` that succeeds is
//! matched by one `release`).

use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Connections each client address may hold: a default and exceptions by address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerIpLimits {
    pub default_max: usize,
    pub overrides: HashMap<IpAddr, usize>,
}

impl PerIpLimits {
    /// Parses `max.connections.per.ip` and `max.connections.per.ip.overrides` (Kafka's form:
    /// `host-or-ip:count` pairs separated by commas; a host name stands for every address it
    /// resolves to at start-up). As in Kafka, a default of 0 needs at least one override.
    pub fn parse(default_max: i64, overrides: &str) -> Result<PerIpLimits, String> {
        let default_max = usize::try_from(default_max)
            .map_err(|_| format!("max.connections.per.ip {default_max} is negative"))?;
        let mut table = HashMap::new();
        for entry in overrides
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            // The count follows the last colon (an IPv6 address has colons of its own).
            let (host, count) = entry
                .rsplit_once(':')
                .ok_or_else(|| format!("override {entry:?} is not HOST:COUNT"))?;
            let count: usize = count
                .trim()
                .parse()
                .map_err(|_| format!("override {entry:?}: {count:?} is not a count"))?;
            let host = host.trim().trim_start_matches('[').trim_end_matches(']');
            for ip in resolve(host)? {
                table.insert(ip, count);
            }
        }
        if default_max == 0 && table.is_empty() {
            return Err(
                "max.connections.per.ip can be 0 only with max.connections.per.ip.overrides set"
                    .into(),
            );
        }
        Ok(PerIpLimits {
            default_max,
            overrides: table,
        })
    }

    /// The most connections `ip` may hold.
    pub fn max_for(&self, ip: IpAddr) -> usize {
        self.overrides
            .get(&canonical(ip))
            .copied()
            .unwrap_or(self.default_max)
    }
}

/// The addresses an override names: an IP address, or a host name resolved now.
fn resolve(host: &str) -> Result<Vec<IpAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![canonical(ip)]);
    }
    let ips: Vec<IpAddr> = (host, 0)
        .to_socket_addrs()
        .map_err(|e| format!("override host {host:?} does not resolve: {e}"))?
        .map(|a| canonical(a.ip()))
        .collect();
    if ips.is_empty() {
        return Err(format!("override host {host:?} resolves to no address"));
    }
    Ok(ips)
}

/// An IPv4 client seen through an IPv6 socket (`::ffff:a.b.c.d`) counts as its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Why a new connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max.connections` connections are open on the node.
    Node { max: usize },
    /// The address already holds its `max.connections.per.ip` (or override).
    Address { max: usize },
}

/// The node's open client connections.
pub struct Admission {
    max_total: usize,
    per_ip: PerIpLimits,
    open: AtomicUsize,
    /// Open connections by client address; an address with none has no entry.
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl Admission {
    pub fn new(max_total: usize, per_ip: PerIpLimits) -> Admission {
        Admission {
            max_total,
            per_ip,
            open: AtomicUsize::new(0),
            by_ip: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a new connection from `ip`, or says why it must be closed (nothing counted).
    pub fn admit(&self, ip: IpAddr) -> Result<(), Refused> {
        let ip = canonical(ip);
        let max_ip = self.per_ip.max_for(ip);
        let mut by_ip = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        let held = by_ip.get(&ip).copied().unwrap_or(0);
        if held >= max_ip {
            return Err(Refused::Address { max: max_ip });
        }
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_total).then_some(n + 1)
            })
            .map_err(|_| Refused::Node {
                max: self.max_total,
            })?;
        by_ip.insert(ip, held + 1);
        Ok(())
    }

    /// Forgets a connection from `ip` that `admit` counted.
    pub fn release(&self, ip: IpAddr) {
        let ip = canonical(ip);
        let mut by_ip = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        match by_ip.get_mut(&ip) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                by_ip.remove(&ip);
            }
            None => debug_assert!(false, "released a connection from {ip} never admitted"),
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
    }

    /// Client connections open on the node.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections open from `ip`.
    #[cfg(test)]
    fn open_from(&self, ip: IpAddr) -> usize {
        let by_ip = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        by_ip.get(&canonical(ip)).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn overrides_parse_as_kafka_writes_them() {
        let l = PerIpLimits::parse(5, "127.0.0.1:200, [::1]:7,10.0.0.1:0").unwrap();
        assert_eq!(l.max_for(ip("127.0.0.1")), 200);
        assert_eq!(l.max_for(ip("::ffff:127.0.0.1")), 200);
        assert_eq!(l.max_for(ip("::1")), 7);
        assert_eq!(l.max_for(ip("10.0.0.1")), 0);
        assert_eq!(l.max_for(ip("10.0.0.2")), 5);
        let named = PerIpLimits::parse(5, "localhost:3").unwrap();
        assert_eq!(named.max_for(ip("127.0.0.1")), 3);
        assert_eq!(PerIpLimits::parse(5, "").unwrap().overrides.len(), 0);
    }

    #[test]
    fn malformed_overrides_are_refused_with_the_entry() {
        for bad in [
            "127.0.0.1",
            "127.0.0.1:x",
            "127.0.0.1:-1",
            "no-such-host.invalid:3",
        ] {
            let e = PerIpLimits::parse(5, bad).unwrap_err();
            assert!(e.contains("override"), "{bad}: {e}");
        }
        assert!(PerIpLimits::parse(0, "").is_err());
        assert!(PerIpLimits::parse(-1, "").is_err());
        assert!(PerIpLimits::parse(0, "127.0.0.1:1").is_ok());
    }

    #[test]
    fn each_address_and_the_node_are_bounded_and_released() {
        let a = Admission::new(3, PerIpLimits::parse(2, "10.0.0.9:0").unwrap());
        let (x, y) = (ip("10.0.0.1"), ip("10.0.0.2"));
        assert_eq!(a.admit(x), Ok(()));
        assert_eq!(a.admit(x), Ok(()));
        assert_eq!(a.admit(x), Err(Refused::Address { max: 2 }));
        assert_eq!(a.admit(ip("10.0.0.9")), Err(Refused::Address { max: 0 }));
        assert_eq!(a.admit(y), Ok(()));
        // The node is full: y's second is refused for the node, and nothing is counted.
        assert_eq!(a.admit(y), Err(Refused::Node { max: 3 }));
        assert_eq!((a.open(), a.open_from(y)), (3, 1));
        a.release(x);
        assert_eq!(a.admit(y), Ok(()));
        for who in [x, y, y] {
            a.release(who);
        }
        assert_eq!((a.open(), a.open_from(x), a.open_from(y)), (0, 0, 0));
        assert!(a.by_ip.lock().unwrap().is_empty());
    }
}
