//! A broker speaking the Kafka protocol to another broker (forwarded topic creations, replica
//! fetches): connecting to its advertised listener and one bounded request/response exchange.
//!
//! Never: resolves a host name on the reactor; reads a response larger than the caller's
//! bound.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::BrokerEndpoint;

/// The broker's address; a host name is resolved off the reactor.
pub async fn resolve(to: &BrokerEndpoint) -> Result<SocketAddr, String> {
    let target = format!("{}:{}", to.host, to.port);
    if let Ok(addr) = target.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let name = target.clone();
    let found = glommio::executor()
        .spawn_blocking(move || name.to_socket_addrs().map(|mut a| a.next()))
        .await;
    match found {
        Ok(Some(addr)) => Ok(addr),
        Ok(None) => Err(format!("{target} resolves to no address")),
        Err(e) => Err(format!("cannot resolve {target}: {e}")),
    }
}

/// A connection to `to`, within `timeout_ms`.
pub async fn connect(to: &BrokerEndpoint, timeout_ms: u64) -> Result<TcpStream, String> {
    let addr = resolve(to).await?;
    let stream = TcpStream::connect_timeout(addr, Duration::from_millis(timeout_ms))
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    // Requests are small and the answer is awaited: no Nagle delay.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Writes one request frame and reads one response frame of at most `max_bytes`.
pub async fn exchange(
    stream: &mut TcpStream,
    frame: &[u8],
    max_bytes: usize,
) -> Result<Bytes, String> {
    let io = |e: std::io::Error| format!("broker connection: {e}");
    stream.write_all(frame).await.map_err(io)?;
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).await.map_err(io)?;
    let size = i32::from_be_bytes(size);
    let len = usize::try_from(size)
        .ok()
        .filter(|n| *n <= max_bytes)
        .ok_or_else(|| format!("a response frame of {size} bytes (at most {max_bytes})"))?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.map_err(io)?;
    Ok(Bytes::from(body))
}
