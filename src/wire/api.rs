//! The VoidPhone DHT API messages (API.md): `size u16 · type u16 · body`, big-endian, where `size`
//! counts the whole message. Requests (PUT, GET) come from clients; replies (SUCCESS, FAILURE) go back.

use crate::id::Key;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fmt;

pub const DHT_PUT: u16 = 650;
pub const DHT_GET: u16 = 651;
pub const DHT_SUCCESS: u16 = 652;
pub const DHT_FAILURE: u16 = 653;

pub const HEADER_BYTES: usize = 4;
/// PUT header and fixed fields: size, type, ttl, replication, reserved, key.
pub const PUT_FIXED_BYTES: usize = HEADER_BYTES + 4 + 32;
/// The largest value a PUT can carry: the u16 size field bounds the whole message.
pub const VALUE_BYTES_MAX: usize = u16::MAX as usize - PUT_FIXED_BYTES;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiRequest {
    Put {
        ttl_s: u16,
        replication: u8,
        key: Key,
        value: Bytes,
    },
    Get {
        key: Key,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiReply {
    Success { key: Key, value: Bytes },
    Failure { key: Key },
}

/// Why a frame was refused. Every one is a protocol violation: the connection is closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiError {
    /// `size` is smaller than the 4-byte header.
    SizeBelowHeader { size: u16 },
    /// A type this direction of the API does not carry.
    UnknownType { msg_type: u16 },
    /// `size` disagrees with the layout of `msg_type`.
    BadSize { msg_type: u16, size: u16 },
    /// A PUT with no value.
    EmptyValue,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::SizeBelowHeader { size } => {
                write!(f, "size {size} is below the 4-byte header")
            }
            ApiError::UnknownType { msg_type } => write!(f, "unknown message type {msg_type}"),
            ApiError::BadSize { msg_type, size } => {
                write!(f, "size {size} does not fit the layout of type {msg_type}")
            }
            ApiError::EmptyValue => write!(f, "DHT PUT with an empty value"),
        }
    }
}

impl std::error::Error for ApiError {}

/// Splits one whole frame off `buf`: `(type, body)` once `size` bytes are there.
fn split_frame(buf: &mut BytesMut) -> Result<Option<(u16, BytesMut)>, ApiError> {
    if buf.len() < HEADER_BYTES {
        return Ok(None);
    }
    let size = u16::from_be_bytes([buf[0], buf[1]]);
    if (size as usize) < HEADER_BYTES {
        return Err(ApiError::SizeBelowHeader { size });
    }
    let msg_type = u16::from_be_bytes([buf[2], buf[3]]);
    if buf.len() < size as usize {
        return Ok(None);
    }
    let mut frame = buf.split_to(size as usize);
    frame.advance(HEADER_BYTES);
    Ok(Some((msg_type, frame)))
}

/// Checks the size of a frame against its type before its body has arrived, so a bad frame is
/// refused at once rather than after waiting for up to 64 KiB of bytes that will never make sense.
fn check_request_size(msg_type: u16, size: u16) -> Result<(), ApiError> {
    let size_usize = size as usize;
    match msg_type {
        DHT_GET if size_usize != HEADER_BYTES + 32 => Err(ApiError::BadSize { msg_type, size }),
        DHT_PUT if size_usize < PUT_FIXED_BYTES => Err(ApiError::BadSize { msg_type, size }),
        DHT_PUT if size_usize == PUT_FIXED_BYTES => Err(ApiError::EmptyValue),
        DHT_GET | DHT_PUT => Ok(()),
        _ => Err(ApiError::UnknownType { msg_type }),
    }
}

fn get_key(buf: &mut impl Buf) -> Key {
    let mut k = [0u8; 32];
    buf.copy_to_slice(&mut k);
    crate::id::Id(k)
}

/// Decodes one client request from the front of `buf`.
pub fn decode_request(buf: &mut BytesMut) -> Result<Option<ApiRequest>, ApiError> {
    if buf.len() >= HEADER_BYTES {
        let size = u16::from_be_bytes([buf[0], buf[1]]);
        if (size as usize) >= HEADER_BYTES {
            check_request_size(u16::from_be_bytes([buf[2], buf[3]]), size)?;
        }
    }
    let Some((msg_type, mut body)) = split_frame(buf)? else {
        return Ok(None);
    };
    Ok(Some(match msg_type {
        DHT_GET => ApiRequest::Get {
            key: get_key(&mut body),
        },
        _ => {
            let ttl_s = body.get_u16();
            let replication = body.get_u8();
            let _reserved = body.get_u8();
            let key = get_key(&mut body);
            ApiRequest::Put {
                ttl_s,
                replication,
                key,
                value: body.freeze(),
            }
        }
    }))
}

/// Decodes one reply (the client side: CLI and tests).
pub fn decode_reply(buf: &mut BytesMut) -> Result<Option<ApiReply>, ApiError> {
    let Some((msg_type, mut body)) = split_frame(buf)? else {
        return Ok(None);
    };
    let size = (body.len() + HEADER_BYTES) as u16;
    match msg_type {
        DHT_SUCCESS if body.len() >= 32 => {
            let key = get_key(&mut body);
            Ok(Some(ApiReply::Success {
                key,
                value: body.freeze(),
            }))
        }
        DHT_FAILURE if body.len() == 32 => Ok(Some(ApiReply::Failure {
            key: get_key(&mut body),
        })),
        DHT_SUCCESS | DHT_FAILURE => Err(ApiError::BadSize { msg_type, size }),
        _ => Err(ApiError::UnknownType { msg_type }),
    }
}

impl ApiRequest {
    /// Appends the encoded request to `out`. Panics if a PUT value is empty or too large: the
    /// caller (CLI, tests) checks against [`VALUE_BYTES_MAX`] first.
    pub fn encode(&self, out: &mut impl BufMut) {
        match self {
            ApiRequest::Put {
                ttl_s,
                replication,
                key,
                value,
            } => {
                assert!(!value.is_empty() && value.len() <= VALUE_BYTES_MAX);
                out.put_u16((PUT_FIXED_BYTES + value.len()) as u16);
                out.put_u16(DHT_PUT);
                out.put_u16(*ttl_s);
                out.put_u8(*replication);
                out.put_u8(0);
                out.put_slice(&key.0);
                out.put_slice(value);
            }
            ApiRequest::Get { key } => {
                out.put_u16((HEADER_BYTES + 32) as u16);
                out.put_u16(DHT_GET);
                out.put_slice(&key.0);
            }
        }
    }
}

impl ApiReply {
    pub fn key(&self) -> &Key {
        match self {
            ApiReply::Success { key, .. } | ApiReply::Failure { key } => key,
        }
    }

    /// Appends the encoded reply to `out`. Values are bounded by the PUT that stored them, so a
    /// SUCCESS always fits the u16 size (36 + n ≤ 65535 for n ≤ 65495).
    pub fn encode(&self, out: &mut impl BufMut) {
        match self {
            ApiReply::Success { key, value } => {
                debug_assert!(HEADER_BYTES + 32 + value.len() <= u16::MAX as usize);
                out.put_u16((HEADER_BYTES + 32 + value.len()) as u16);
                out.put_u16(DHT_SUCCESS);
                out.put_slice(&key.0);
                out.put_slice(value);
            }
            ApiReply::Failure { key } => {
                out.put_u16((HEADER_BYTES + 32) as u16);
                out.put_u16(DHT_FAILURE);
                out.put_slice(&key.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;

    fn key(b: u8) -> Key {
        Id([b; 32])
    }

    fn encoded<T>(f: impl FnOnce(&mut BytesMut) -> T) -> BytesMut {
        let mut b = BytesMut::new();
        f(&mut b);
        b
    }

    #[test]
    fn requests_round_trip_even_byte_by_byte() {
        let reqs = vec![
            ApiRequest::Put {
                ttl_s: 60,
                replication: 3,
                key: key(1),
                value: Bytes::from_static(b"v"),
            },
            ApiRequest::Get { key: key(2) },
            ApiRequest::Put {
                ttl_s: 0,
                replication: 255,
                key: key(3),
                value: Bytes::from(vec![7u8; VALUE_BYTES_MAX]),
            },
        ];
        let mut all = BytesMut::new();
        for r in &reqs {
            r.encode(&mut all);
        }
        // Fed one byte at a time, the decoder waits, then yields each request exactly once.
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in all.iter() {
            buf.put_u8(*b);
            while let Some(r) = decode_request(&mut buf).unwrap() {
                out.push(r);
            }
        }
        assert_eq!(out, reqs);
        assert!(buf.is_empty());
    }

    #[test]
    fn replies_round_trip() {
        for r in [
            ApiReply::Success {
                key: key(9),
                value: Bytes::from_static(b"hello"),
            },
            ApiReply::Failure { key: key(8) },
        ] {
            let mut b = encoded(|b| r.encode(b));
            assert_eq!(decode_reply(&mut b).unwrap(), Some(r));
            assert!(b.is_empty());
        }
    }

    #[test]
    fn put_layout_is_byte_exact() {
        let req = ApiRequest::Put {
            ttl_s: 0x0102,
            replication: 3,
            key: key(0xaa),
            value: Bytes::from_static(b"xy"),
        };
        let b = encoded(|b| req.encode(b));
        assert_eq!(&b[..8], &[0, 42, 0x02, 0x8a, 0x01, 0x02, 3, 0]);
        assert_eq!(&b[8..40], &[0xaa; 32]);
        assert_eq!(&b[40..], b"xy");
    }

    fn raw(size: u16, msg_type: u16, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u16(size);
        b.put_u16(msg_type);
        b.put_slice(body);
        b
    }

    #[test]
    fn every_malformed_request_is_a_typed_error() {
        let cases = [
            (raw(3, DHT_GET, &[]), ApiError::SizeBelowHeader { size: 3 }),
            (raw(0, 0, &[]), ApiError::SizeBelowHeader { size: 0 }),
            (
                raw(36, 500, &[0; 32]),
                ApiError::UnknownType { msg_type: 500 },
            ),
            (
                raw(36, DHT_SUCCESS, &[0; 32]),
                ApiError::UnknownType {
                    msg_type: DHT_SUCCESS,
                },
            ),
            (
                raw(37, DHT_GET, &[0; 33]),
                ApiError::BadSize {
                    msg_type: DHT_GET,
                    size: 37,
                },
            ),
            (
                raw(35, DHT_GET, &[0; 31]),
                ApiError::BadSize {
                    msg_type: DHT_GET,
                    size: 35,
                },
            ),
            (
                raw(39, DHT_PUT, &[0; 35]),
                ApiError::BadSize {
                    msg_type: DHT_PUT,
                    size: 39,
                },
            ),
            (raw(40, DHT_PUT, &[0; 36]), ApiError::EmptyValue),
        ];
        for (mut frame, err) in cases {
            assert_eq!(decode_request(&mut frame), Err(err));
        }
    }

    #[test]
    fn a_bad_size_is_refused_before_its_body_arrives() {
        // Only the header of a GET that claims 60000 bytes: refused now, not after 60000 bytes.
        assert_eq!(
            decode_request(&mut raw(60000, DHT_GET, &[])),
            Err(ApiError::BadSize {
                msg_type: DHT_GET,
                size: 60000
            })
        );
        // A truncated but well-formed GET just waits.
        assert_eq!(decode_request(&mut raw(36, DHT_GET, &[0; 10])), Ok(None));
    }

    #[test]
    fn malformed_replies_are_errors() {
        assert!(decode_reply(&mut raw(35, DHT_SUCCESS, &[0; 31])).is_err());
        assert!(decode_reply(&mut raw(37, DHT_FAILURE, &[0; 33])).is_err());
        assert!(decode_reply(&mut raw(36, DHT_GET, &[0; 32])).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = crate::time::Prng::new(1);
        for _ in 0..20_000 {
            let len = rng.below(80) as usize;
            let mut b: BytesMut = (0..len).map(|_| rng.next_u64() as u8).collect();
            if rng.chance(0.5) && b.len() >= 4 {
                b[2..4].copy_from_slice(&(650 + rng.below(4) as u16).to_be_bytes());
            }
            let mut c = b.clone();
            while let Ok(Some(_)) = decode_request(&mut b) {}
            while let Ok(Some(_)) = decode_reply(&mut c) {}
        }
    }
}
