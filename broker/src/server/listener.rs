//! Binding the listen address once per shard without letting another process share the port.
//!
//! glommio listens with SO_REUSEPORT so that every shard can accept on the same port; but then
//! a second process (another corebus, or anything else with SO_REUSEPORT under the same user)
//! could silently bind the same port and take part of the connections. So:
//! 1. probe: bind a plain socket without SO_REUSEPORT; if that fails with EADDRINUSE the port is
//!    taken and start-up stops. The probe is closed at once.
//! 2. bind one SO_REUSEPORT socket per shard (port 0 is resolved by the first).
//! 3. close the race between 1 and 2 (a process that bound with SO_REUSEPORT in that window
//!    would share the port unnoticed): list the listening sockets on the port from
//!    /proc/net/tcp{,6} and refuse to start if any of them is not one of ours (compared by
//!    socket inode). A process that binds after step 3 can still join if it sets SO_REUSEPORT
//!    under our user; a corebus started later detects us at its own step 1.
//!
//! Never: accepts connections (the shards do, on the sockets handed to them).

use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;

use crate::config::HostPort;

/// Connections queued by the kernel per listener before accept.
pub const LISTEN_BACKLOG_CONNECTIONS: i32 = 1024;

#[derive(Debug, Error)]
pub enum BindError {
    #[error("cannot resolve listen address {0}")]
    Resolve(String),
    #[error("listen address {0} is already in use by another process")]
    PortTaken(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Io { addr: String, source: io::Error },
}

/// Binds `count` listening sockets sharing `listen`'s address (SO_REUSEPORT), after checking
/// that no other process listens there. Returns them with the address actually bound.
pub fn bind_exclusive(
    listen: &HostPort,
    count: usize,
) -> Result<(Vec<Socket>, SocketAddr), BindError> {
    let text = listen.to_string();
    let addr = (listen.host.as_str(), listen.port)
        .to_socket_addrs()
        .map_err(|_| BindError::Resolve(text.clone()))?
        .next()
        .ok_or_else(|| BindError::Resolve(text.clone()))?;
    let io_err = |source| BindError::Io {
        addr: text.clone(),
        source,
    };
    if addr.port() != 0 {
        // std sets SO_REUSEADDR (so TIME_WAIT does not block a restart) but not SO_REUSEPORT.
        match std::net::TcpListener::bind(addr) {
            Ok(probe) => drop(probe),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                return Err(BindError::PortTaken(addr));
            }
            Err(e) => return Err(io_err(e)),
        }
    }
    let mut sockets = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count.max(1) {
        let s = reuseport_listener(bound).map_err(io_err)?;
        if bound.port() == 0 {
            bound = s
                .local_addr()
                .map_err(io_err)?
                .as_socket()
                .ok_or_else(|| io_err(io::Error::other("listener has no inet address")))?;
        }
        sockets.push(s);
    }
    let ours = sockets
        .iter()
        .map(|s| socket_inode(s.as_raw_fd()))
        .collect::<io::Result<HashSet<u64>>>()
        .map_err(io_err)?;
    if foreign_listener_on(bound.port(), &ours).map_err(io_err)? {
        return Err(BindError::PortTaken(bound));
    }
    Ok((sockets, bound))
}

fn reuseport_listener(addr: SocketAddr) -> io::Result<Socket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(LISTEN_BACKLOG_CONNECTIONS)?;
    Ok(s)
}

fn socket_inode(fd: i32) -> io::Result<u64> {
    // SAFETY: fstat writes into a zeroed stat of the right size; fd is open for the call.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_ino)
}

/// Whether a socket that is not in `ours` listens on `port` (any local address) in this
/// network namespace.
fn foreign_listener_on(port: u16, ours: &HashSet<u64>) -> io::Result<bool> {
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = match std::fs::read_to_string(table) {
            Ok(t) => t,
            // No IPv6 in this kernel: nothing listens there.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for (local_port, inode) in listening_sockets(&text) {
            if local_port == port && !ours.contains(&inode) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// (local port, inode) of every LISTEN row of a /proc/net/tcp table.
fn listening_sockets(table: &str) -> Vec<(u16, u64)> {
    const TCP_LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (cols.get(1)?, cols.get(3)?, cols.get(9)?);
            if *state != TCP_LISTEN {
                return None;
            }
            let port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
            Some((port, inode.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(port: u16) -> HostPort {
        HostPort {
            host: "127.0.0.1".into(),
            port,
        }
    }

    #[test]
    fn binds_several_and_resolves_port_zero() {
        let (socks, addr) = bind_exclusive(&local(0), 3).unwrap();
        assert_eq!(socks.len(), 3);
        assert_ne!(addr.port(), 0);
    }

    #[test]
    fn refuses_a_port_held_by_a_plain_listener() {
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = other.local_addr().unwrap().port();
        assert!(matches!(
            bind_exclusive(&local(port), 1),
            Err(BindError::PortTaken(_))
        ));
    }

    #[test]
    fn refuses_a_port_held_by_a_reuseport_listener() {
        // What a second glommio process would hold: the probe fails on it too.
        let (_first, addr) = bind_exclusive(&local(0), 1).unwrap();
        assert!(matches!(
            bind_exclusive(&local(addr.port()), 1),
            Err(BindError::PortTaken(_))
        ));
    }

    #[test]
    fn post_check_sees_a_foreign_reuseport_socket() {
        // The race of step 3: someone bound with SO_REUSEPORT after our probe.
        let theirs = reuseport_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = theirs.local_addr().unwrap().as_socket().unwrap().port();
        let ours = reuseport_listener(format!("127.0.0.1:{port}").parse().unwrap()).unwrap();
        let mine: HashSet<u64> = [socket_inode(ours.as_raw_fd()).unwrap()].into();
        assert!(foreign_listener_on(port, &mine).unwrap());
        let both: HashSet<u64> = [
            socket_inode(ours.as_raw_fd()).unwrap(),
            socket_inode(theirs.as_raw_fd()).unwrap(),
        ]
        .into();
        assert!(!foreign_listener_on(port, &both).unwrap());
    }
}
