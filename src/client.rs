//! Blocking clients for people and tests: the API client behind `put`/`get`, and the P2P INFO query
//! behind `ring`. Not used by the node itself.

use crate::id::{Id, Key};
use crate::msg::{Frame, PeerMsg};
use crate::wire::api::{self, ApiReply, ApiRequest};
use crate::wire::p2p;
use bytes::{Bytes, BytesMut};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// KEY as people type it: 64 hex digits are the raw key, any other text is hashed with SHA-256.
pub fn parse_key(text: &str) -> Key {
    Id::from_hex(text).unwrap_or_else(|| Id::hash(text.as_bytes()))
}

pub struct ApiClient {
    stream: TcpStream,
    buf: BytesMut,
}

impl ApiClient {
    pub fn connect(addr: SocketAddr) -> io::Result<ApiClient> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(ApiClient {
            stream,
            buf: BytesMut::new(),
        })
    }

    pub fn put(&mut self, key: Key, value: &[u8], ttl_s: u16, replication: u8) -> io::Result<()> {
        if value.is_empty() || value.len() > api::VALUE_BYTES_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a value must have 1 to {} bytes, not {}",
                    api::VALUE_BYTES_MAX,
                    value.len()
                ),
            ));
        }
        self.send(&ApiRequest::Put {
            ttl_s,
            replication,
            key,
            value: Bytes::copy_from_slice(value),
        })
    }

    /// GET and wait for its answer: `Some(value)` on DHT SUCCESS, `None` on DHT FAILURE.
    pub fn get(&mut self, key: Key) -> io::Result<Option<Bytes>> {
        self.send(&ApiRequest::Get { key })?;
        loop {
            match self.recv()? {
                ApiReply::Success { key: k, value } if k == key => return Ok(Some(value)),
                ApiReply::Failure { key: k } if k == key => return Ok(None),
                _ => continue,
            }
        }
    }

    pub fn send(&mut self, req: &ApiRequest) -> io::Result<()> {
        let mut out = BytesMut::new();
        req.encode(&mut out);
        self.stream.write_all(&out)
    }

    /// Writes raw bytes (tests of malformed input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn recv(&mut self) -> io::Result<ApiReply> {
        loop {
            match api::decode_reply(&mut self.buf) {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

pub use crate::msg::NodeInfo;

/// Asks the node at `addr` (its P2P port) for its INFO.
pub fn node_info(addr: SocketAddr, timeout: Duration) -> io::Result<NodeInfo> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut out = BytesMut::new();
    Frame::new(1, PeerMsg::InfoGet).encode(&mut out);
    stream.write_all(&out)?;
    let mut buf = BytesMut::new();
    loop {
        match p2p::decode_frame(&mut buf, 1 << 20) {
            Ok(Some(Frame {
                msg: PeerMsg::InfoReply(info),
                ..
            })) => return Ok(*info),
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Walks the ring from `start` along successor pointers until it reaches a node walked already (or
/// `max` nodes).
/// A node that does not answer is skipped through the previous node's successor list.
pub fn walk_ring(start: SocketAddr, max: usize, timeout: Duration) -> io::Result<Vec<NodeInfo>> {
    let first = node_info(start, timeout)?;
    let mut seen = std::collections::HashSet::from([first.node.addr]);
    let mut out = vec![first];
    while out.len() < max {
        let last = out.last().unwrap();
        let mut next = None;
        for s in &last.succs {
            // Back at a node already walked: the ring is closed (started from a node nobody
            // points to, the walk closes on the cycle it leads into).
            if seen.contains(&s.addr) {
                return Ok(out);
            }
            if let Ok(info) = node_info(s.addr, timeout) {
                next = Some(info);
                break;
            }
        }
        match next {
            Some(info) => {
                seen.insert(info.node.addr);
                out.push(info)
            }
            None => return Ok(out),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hex_or_hashed() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_key(&hex), Id([0xab; 32]));
        assert_eq!(parse_key("hello"), Id::hash(b"hello"));
        assert_eq!(
            parse_key(&"ab".repeat(31)),
            Id::hash("ab".repeat(31).as_bytes())
        );
    }
}
