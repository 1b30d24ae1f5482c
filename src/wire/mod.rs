//! Wire formats: the VoidPhone API (650–653, [`api`]) and our P2P protocol (1001–…, [`p2p`]).
//! Decoders take a `BytesMut` that may hold half a frame or many frames: `Ok(None)` means "need more
//! bytes", `Ok(Some(_))` consumed exactly one frame, `Err(_)` means the stream is unusable (close it).

pub mod api;
pub mod p2p;

use bytes::{Buf, BufMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Writes a socket address as `family u8 (4|6) · ip (4|16 bytes) · port u16`.
pub(crate) fn put_addr(out: &mut impl BufMut, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.put_u8(4);
            out.put_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.put_u8(6);
            out.put_slice(&ip.octets());
        }
    }
    out.put_u16(addr.port());
}

/// Reads what [`put_addr`] wrote; `None` on a short buffer or an unknown family.
pub(crate) fn get_addr(buf: &mut impl Buf) -> Option<SocketAddr> {
    if buf.remaining() < 1 {
        return None;
    }
    let ip = match buf.get_u8() {
        4 if buf.remaining() >= 4 + 2 => {
            let mut o = [0u8; 4];
            buf.copy_to_slice(&mut o);
            IpAddr::V4(Ipv4Addr::from(o))
        }
        6 if buf.remaining() >= 16 + 2 => {
            let mut o = [0u8; 16];
            buf.copy_to_slice(&mut o);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, buf.get_u16()))
}
