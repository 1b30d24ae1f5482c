//! The P2P protocol between voidphone-dht nodes (docs/PROTOCOL.md has the byte layouts).
//!
//! Every frame: `magic u32 · size u32 · type u16 · request u64 · body`, big-endian; `size` counts the
//! whole frame. The magic number guards against a foreign service on the same port; the request id
//! lets many requests and replies share one connection in any order; the u32 size lets a frame carry
//! the largest API value (65495 bytes) plus its own fields, bounded by `[dht] p2p_frame_bytes_max`.

use super::{get_addr, put_addr};
use crate::id::Id;
use crate::msg::*;
use bytes::{Buf, BufMut, BytesMut};
use std::fmt;

/// "VPDH": VoidPhone DHT.
pub const MAGIC: u32 = 0x5650_4448;
pub const HEADER_BYTES: usize = 4 + 4 + 2 + 8;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum P2pError {
    BadMagic {
        magic: u32,
    },
    SizeBelowHeader {
        size: u32,
    },
    FrameTooLarge {
        size: u32,
        max: usize,
    },
    UnknownType {
        msg_type: u16,
    },
    /// The body does not match the layout of its type.
    Malformed {
        msg_type: u16,
    },
}

impl fmt::Display for P2pError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            P2pError::BadMagic { magic } => write!(f, "bad magic number {magic:#010x}"),
            P2pError::SizeBelowHeader { size } => {
                write!(f, "frame size {size} is below the header")
            }
            P2pError::FrameTooLarge { size, max } => write!(f, "frame size {size} exceeds {max}"),
            P2pError::UnknownType { msg_type } => write!(f, "unknown message type {msg_type}"),
            P2pError::Malformed { msg_type } => write!(f, "malformed body for type {msg_type}"),
        }
    }
}

impl std::error::Error for P2pError {}

impl Frame {
    /// Appends the encoded frame to `out` (no intermediate allocation); returns its length. The
    /// size field is written last, once the body's length is known.
    pub fn encode(&self, out: &mut BytesMut) -> usize {
        let start = out.len();
        out.put_u32(MAGIC);
        out.put_u32(0);
        out.put_u16(self.msg.msg_type());
        out.put_u64(self.request);
        encode_body(&self.msg, out);
        let size = out.len() - start;
        assert!(size <= u32::MAX as usize);
        out[start + 4..start + 8].copy_from_slice(&(size as u32).to_be_bytes());
        size
    }
}

/// The body of `msg`, in the layout of its type.
fn encode_body(msg: &PeerMsg, out: &mut BytesMut) {
    match msg {
        PeerMsg::StorageGet { key } => out.put_slice(&key.0),
        // The same layout: a value with its time left, replication and version.
        PeerMsg::StoragePut {
            ttl_ms,
            replication,
            version,
            key,
            value,
        }
        | PeerMsg::StorageGetSuccess {
            ttl_ms,
            replication,
            version,
            key,
            value,
        } => {
            out.put_u32(*ttl_ms);
            out.put_u8(*replication);
            out.put_u64(*version);
            out.put_slice(&key.0);
            out.put_slice(value);
        }
        PeerMsg::StoragePutSuccess { key, value_hash } => {
            out.put_slice(&key.0);
            out.put_slice(&value_hash.0);
        }
        PeerMsg::StorageFailure { key, reason } => {
            out.put_slice(&key.0);
            out.put_u8(*reason as u8);
        }
        PeerMsg::PeerFind {
            target,
            hops,
            last_hop,
            reply_to,
            read: _,
        } => {
            out.put_slice(&target.0);
            out.put_u8(*hops);
            out.put_u8(*last_hop as u8);
            put_addr(out, reply_to);
        }
        PeerMsg::PeerFound {
            target,
            hops,
            nodes,
        } => put_found(out, target, *hops, nodes),
        PeerMsg::ValueFound {
            target,
            hops,
            nodes,
            held,
        } => {
            put_found(out, target, *hops, nodes);
            match held {
                Held::Missing => out.put_u8(0),
                Held::Value(value) => {
                    out.put_u8(1);
                    out.put_slice(value);
                }
                Held::TooLarge => out.put_u8(2),
            }
        }
        PeerMsg::PredecessorGet
        | PeerMsg::PredecessorsGet
        | PeerMsg::Ping
        | PeerMsg::Pong
        | PeerMsg::FindTaken
        | PeerMsg::InfoGet => {}
        PeerMsg::Predecessors { preds } => put_peers(out, preds),
        PeerMsg::Spare { holder, pred, succ } => {
            put_peer(out, holder);
            out.put_slice(&pred.0);
            out.put_slice(&succ.0);
        }
        PeerMsg::Invite { slot, fill } => {
            out.put_u8(*slot);
            out.put_u8(*fill);
        }
        PeerMsg::PredecessorReply { pred, succs } => put_pred_succs(out, pred, succs),
        PeerMsg::InfoReply(i) => {
            put_peer(out, &i.node);
            put_pred_succs(out, &i.pred, &i.succs);
            out.put_u32(i.values_primary);
            out.put_u32(i.values_replica);
            out.put_u64(i.bytes_stored);
            out.put_u64(i.bytes_max);
            out.put_u64(i.refusals);
        }
        PeerMsg::Sync {
            from,
            to,
            index,
            buckets,
        } => {
            assert_eq!(buckets.len(), SYNC_BUCKETS);
            out.put_slice(&from.0);
            out.put_slice(&to.0);
            out.put_u8(*index);
            for (digest, count) in buckets {
                out.put_u64(*digest);
                out.put_u32(*count);
            }
        }
        PeerMsg::SyncReply { differing, keys } => {
            assert!(keys.len() <= SYNC_KEYS_MAX);
            out.put_u64(*differing);
            out.put_u16(keys.len() as u16);
            for (k, version) in keys {
                out.put_slice(&k.0);
                out.put_u64(*version);
            }
        }
        PeerMsg::Leave(d) => {
            put_peer(out, &d.node);
            put_pred_succs(out, &d.pred, &d.succs);
        }
        PeerMsg::PredecessorSet { node }
        | PeerMsg::SuccessorHint { node }
        | PeerMsg::Hello { node } => put_peer(out, node),
    }
}

fn put_peer(out: &mut impl BufMut, p: &Peer) {
    out.put_slice(&p.id.0);
    put_addr(out, &p.addr);
}

fn put_pred_succs(out: &mut impl BufMut, pred: &Option<Peer>, succs: &[Peer]) {
    out.put_u8(pred.is_some() as u8);
    if let Some(p) = pred {
        put_peer(out, p);
    }
    put_peers(out, succs);
}

/// The fields PEER FOUND and VALUE FOUND share: `target [32] · hops u8 · peers (count ≥ 1)`.
fn put_found(out: &mut impl BufMut, target: &Id, hops: u8, nodes: &[Peer]) {
    assert!(nodes.len() <= PEERS_MAX);
    out.put_slice(&target.0);
    out.put_u8(hops);
    put_peers(out, nodes);
}

fn take_found(b: &mut BytesMut) -> Option<(Id, u8, Vec<Peer>)> {
    let target = take_id(b)?;
    let hops = take_u8(b)?;
    let nodes = take_peers(b)?;
    (!nodes.is_empty()).then_some((target, hops, nodes))
}

fn put_peers(out: &mut impl BufMut, peers: &[Peer]) {
    assert!(peers.len() <= PEERS_MAX);
    out.put_u8(peers.len() as u8);
    for p in peers {
        put_peer(out, p);
    }
}

/// Decodes one frame from the front of `buf`; frames larger than `frame_bytes_max` are refused as
/// soon as their header arrives.
pub fn decode_frame(buf: &mut BytesMut, frame_bytes_max: usize) -> Result<Option<Frame>, P2pError> {
    if buf.len() < HEADER_BYTES {
        // Check the magic as soon as it is there: a foreign service is refused at once.
        if buf.len() >= 4 {
            let magic = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            if magic != MAGIC {
                return Err(P2pError::BadMagic { magic });
            }
        }
        return Ok(None);
    }
    let magic = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if magic != MAGIC {
        return Err(P2pError::BadMagic { magic });
    }
    let size = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if (size as usize) < HEADER_BYTES {
        return Err(P2pError::SizeBelowHeader { size });
    }
    if size as usize > frame_bytes_max {
        return Err(P2pError::FrameTooLarge {
            size,
            max: frame_bytes_max,
        });
    }
    if buf.len() < size as usize {
        return Ok(None);
    }
    let mut frame = buf.split_to(size as usize);
    frame.advance(8);
    let msg_type = frame.get_u16();
    let request = frame.get_u64();
    let msg = decode_body(msg_type, frame)?;
    Ok(Some(Frame { request, msg }))
}

fn decode_body(msg_type: u16, mut b: BytesMut) -> Result<PeerMsg, P2pError> {
    let bad = P2pError::Malformed { msg_type };
    let msg = match msg_type {
        STORAGE_GET => PeerMsg::StorageGet {
            key: take_id(&mut b).ok_or(bad.clone())?,
        },
        STORAGE_PUT | STORAGE_GET_SUCCESS => {
            if b.len() < 4 + 1 + 8 + 32 + 1 {
                return Err(bad);
            }
            let (ttl_ms, replication, version) = (b.get_u32(), b.get_u8(), b.get_u64());
            let key = take_id(&mut b).ok_or(bad.clone())?;
            let value = b.split().freeze();
            if msg_type == STORAGE_PUT {
                PeerMsg::StoragePut {
                    ttl_ms,
                    replication,
                    version,
                    key,
                    value,
                }
            } else {
                PeerMsg::StorageGetSuccess {
                    ttl_ms,
                    replication,
                    version,
                    key,
                    value,
                }
            }
        }
        STORAGE_PUT_SUCCESS => {
            let key = take_id(&mut b).ok_or(bad.clone())?;
            PeerMsg::StoragePutSuccess {
                key,
                value_hash: take_id(&mut b).ok_or(bad.clone())?,
            }
        }
        STORAGE_FAILURE => {
            let key = take_id(&mut b).ok_or(bad.clone())?;
            let reason = match b.has_remaining().then(|| b.get_u8()) {
                Some(1) => FailureReason::NotFound,
                Some(2) => FailureReason::Refused,
                Some(3) => FailureReason::NotResponsible,
                _ => return Err(bad),
            };
            PeerMsg::StorageFailure { key, reason }
        }
        PEER_FIND | FIND_VALUE => {
            let target = take_id(&mut b).ok_or(bad.clone())?;
            let hops = take_u8(&mut b).ok_or(bad.clone())?;
            let last_hop = match take_u8(&mut b) {
                Some(0) => false,
                Some(1) => true,
                _ => return Err(bad),
            };
            PeerMsg::PeerFind {
                target,
                hops,
                last_hop,
                reply_to: get_addr(&mut b).ok_or(bad.clone())?,
                read: msg_type == FIND_VALUE,
            }
        }
        PEER_FOUND => {
            let (target, hops, nodes) = take_found(&mut b).ok_or(bad.clone())?;
            PeerMsg::PeerFound {
                target,
                hops,
                nodes,
            }
        }
        VALUE_FOUND => {
            let (target, hops, nodes) = take_found(&mut b).ok_or(bad.clone())?;
            let held = match take_u8(&mut b) {
                Some(0) => Held::Missing,
                Some(1) if b.has_remaining() => Held::Value(b.split().freeze()),
                Some(2) => Held::TooLarge,
                _ => return Err(bad),
            };
            PeerMsg::ValueFound {
                target,
                hops,
                nodes,
                held,
            }
        }
        FIND_TAKEN => PeerMsg::FindTaken,
        PREDECESSOR_GET => PeerMsg::PredecessorGet,
        PREDECESSORS_GET => PeerMsg::PredecessorsGet,
        PREDECESSORS => PeerMsg::Predecessors {
            preds: take_peers(&mut b).ok_or(bad.clone())?,
        },
        SPARE => PeerMsg::Spare {
            holder: take_peer(&mut b).ok_or(bad.clone())?,
            pred: take_id(&mut b).ok_or(bad.clone())?,
            succ: take_id(&mut b).ok_or(bad.clone())?,
        },
        INVITE => PeerMsg::Invite {
            slot: take_u8(&mut b).ok_or(bad.clone())?,
            fill: take_u8(&mut b).filter(|f| *f <= 100).ok_or(bad.clone())?,
        },
        PING => PeerMsg::Ping,
        PONG => PeerMsg::Pong,
        PREDECESSOR_REPLY => {
            let (pred, succs) = take_pred_succs(&mut b).ok_or(bad.clone())?;
            PeerMsg::PredecessorReply { pred, succs }
        }
        INFO_GET => PeerMsg::InfoGet,
        SYNC => {
            let from = take_id(&mut b).ok_or(bad.clone())?;
            let to = take_id(&mut b).ok_or(bad.clone())?;
            let index = take_u8(&mut b).ok_or(bad.clone())?;
            if b.remaining() != 12 * SYNC_BUCKETS {
                return Err(bad);
            }
            let buckets = (0..SYNC_BUCKETS)
                .map(|_| (b.get_u64(), b.get_u32()))
                .collect();
            PeerMsg::Sync {
                from,
                to,
                index,
                buckets,
            }
        }
        SYNC_REPLY => {
            if b.remaining() < 10 {
                return Err(bad);
            }
            let differing = b.get_u64();
            let n = b.get_u16() as usize;
            if n > SYNC_KEYS_MAX || b.remaining() != 40 * n {
                return Err(bad);
            }
            let keys = (0..n)
                .map(|_| (take_id(&mut b).expect("length checked"), b.get_u64()))
                .collect();
            PeerMsg::SyncReply { differing, keys }
        }
        LEAVE => {
            let node = take_peer(&mut b).ok_or(bad.clone())?;
            let (pred, succs) = take_pred_succs(&mut b).ok_or(bad.clone())?;
            PeerMsg::Leave(Box::new(Departure { node, pred, succs }))
        }
        INFO_REPLY => {
            let node = take_peer(&mut b).ok_or(bad.clone())?;
            let (pred, succs) = take_pred_succs(&mut b).ok_or(bad.clone())?;
            if b.remaining() != 32 {
                return Err(bad);
            }
            let (values_primary, values_replica) = (b.get_u32(), b.get_u32());
            let (bytes_stored, bytes_max, refusals) = (b.get_u64(), b.get_u64(), b.get_u64());
            PeerMsg::InfoReply(Box::new(NodeInfo {
                node,
                pred,
                succs,
                values_primary,
                values_replica,
                bytes_stored,
                bytes_max,
                refusals,
            }))
        }
        PREDECESSOR_SET => PeerMsg::PredecessorSet {
            node: take_peer(&mut b).ok_or(bad.clone())?,
        },
        SUCCESSOR_HINT => PeerMsg::SuccessorHint {
            node: take_peer(&mut b).ok_or(bad.clone())?,
        },
        HELLO => PeerMsg::Hello {
            node: take_peer(&mut b).ok_or(bad.clone())?,
        },
        _ => return Err(P2pError::UnknownType { msg_type }),
    };
    // Trailing bytes are a layout mismatch too (values take the rest, so they never leave any).
    if b.has_remaining() {
        return Err(P2pError::Malformed { msg_type });
    }
    Ok(msg)
}

fn take_u8(b: &mut BytesMut) -> Option<u8> {
    b.has_remaining().then(|| b.get_u8())
}

fn take_id(b: &mut BytesMut) -> Option<Id> {
    if b.remaining() < 32 {
        return None;
    }
    let mut id = [0u8; 32];
    b.copy_to_slice(&mut id);
    Some(Id(id))
}

fn take_peer(b: &mut BytesMut) -> Option<Peer> {
    let id = take_id(b)?;
    Some(Peer {
        id,
        addr: get_addr(b)?,
    })
}

fn take_pred_succs(b: &mut BytesMut) -> Option<(Option<Peer>, Vec<Peer>)> {
    let pred = match take_u8(b)? {
        0 => None,
        1 => Some(take_peer(b)?),
        _ => return None,
    };
    Some((pred, take_peers(b)?))
}

fn take_peers(b: &mut BytesMut) -> Option<Vec<Peer>> {
    let n = take_u8(b)? as usize;
    if n > PEERS_MAX {
        return None;
    }
    (0..n).map(|_| take_peer(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::net::SocketAddr;

    const MAX: usize = 70_000;

    fn peer(b: u8, port: u16) -> Peer {
        Peer {
            id: Id([b; 32]),
            addr: SocketAddr::from(([127, 0, 0, b], port)),
        }
    }

    fn all_messages() -> Vec<PeerMsg> {
        let k = Id([5; 32]);
        let v6: SocketAddr = "[::1]:9000".parse().unwrap();
        vec![
            PeerMsg::StorageGet { key: k },
            PeerMsg::StoragePut {
                ttl_ms: 1234,
                replication: 3,
                version: 1 << 40 | 7,
                key: k,
                value: Bytes::from(vec![1; 65495]),
            },
            PeerMsg::StorageGetSuccess {
                ttl_ms: 9,
                replication: 3,
                version: 42,
                key: k,
                value: Bytes::from_static(b"v"),
            },
            PeerMsg::StoragePutSuccess {
                key: k,
                value_hash: Id::hash(b"v"),
            },
            PeerMsg::StorageFailure {
                key: k,
                reason: FailureReason::NotFound,
            },
            PeerMsg::StorageFailure {
                key: k,
                reason: FailureReason::Refused,
            },
            PeerMsg::PeerFind {
                target: k,
                hops: 7,
                last_hop: true,
                reply_to: v6,
                read: false,
            },
            PeerMsg::PeerFind {
                target: k,
                hops: 0,
                last_hop: false,
                reply_to: peer(1, 1).addr,
                read: false,
            },
            PeerMsg::PeerFind {
                target: k,
                hops: 3,
                last_hop: false,
                reply_to: peer(1, 1).addr,
                read: true,
            },
            PeerMsg::ValueFound {
                target: k,
                hops: 4,
                nodes: vec![peer(1, 1)],
                held: Held::Value(Bytes::from(vec![7; 4096])),
            },
            PeerMsg::ValueFound {
                target: k,
                hops: 4,
                nodes: vec![peer(1, 1), peer(2, 2)],
                held: Held::Missing,
            },
            PeerMsg::ValueFound {
                target: k,
                hops: 1,
                nodes: vec![peer(1, 1)],
                held: Held::TooLarge,
            },
            PeerMsg::PeerFound {
                target: k,
                hops: 2,
                nodes: vec![peer(1, 1), Peer { id: k, addr: v6 }],
            },
            PeerMsg::FindTaken,
            PeerMsg::PredecessorGet,
            PeerMsg::PredecessorReply {
                pred: None,
                succs: vec![],
            },
            PeerMsg::PredecessorReply {
                pred: Some(peer(3, 3)),
                succs: vec![peer(4, 4), peer(5, 5)],
            },
            PeerMsg::PredecessorSet { node: peer(6, 6) },
            PeerMsg::PredecessorsGet,
            PeerMsg::Spare {
                holder: peer(2, 2),
                pred: k,
                succ: Id([3; 32]),
            },
            PeerMsg::Invite { slot: 7, fill: 80 },
            PeerMsg::Predecessors { preds: vec![] },
            PeerMsg::Predecessors {
                preds: vec![peer(4, 4), peer(5, 5)],
            },
            PeerMsg::SuccessorHint { node: peer(8, 8) },
            PeerMsg::Hello { node: peer(7, 7) },
            PeerMsg::Ping,
            PeerMsg::Pong,
            PeerMsg::InfoGet,
            PeerMsg::Sync {
                from: k,
                to: Id([9; 32]),
                index: 2,
                buckets: (0..64).map(|i| (i * 7, i as u32)).collect(),
            },
            PeerMsg::SyncReply {
                differing: 1 << 63 | 5,
                keys: vec![(k, 3), (Id([1; 32]), u64::MAX)],
            },
            PeerMsg::Leave(Box::new(Departure {
                node: peer(1, 1),
                pred: None,
                succs: vec![peer(2, 2)],
            })),
            PeerMsg::InfoReply(Box::new(NodeInfo {
                node: peer(1, 1),
                pred: Some(peer(2, 2)),
                succs: vec![peer(3, 3)],
                values_primary: 5,
                values_replica: 6,
                bytes_stored: 1 << 40,
                bytes_max: 1 << 41,
                refusals: 7,
            })),
        ]
    }

    #[test]
    fn every_message_round_trips_whole_and_in_pieces() {
        let frames: Vec<Frame> = all_messages()
            .into_iter()
            .enumerate()
            .map(|(i, m)| Frame::new(i as u64 * 77, m))
            .collect();
        let mut all = BytesMut::new();
        for f in &frames {
            let before = all.len();
            let len = f.encode(&mut all);
            assert_eq!(all.len() - before, len);
        }
        for chunk in [1usize, 7, 1000, usize::MAX] {
            let mut src = all.clone();
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            while !src.is_empty() {
                buf.extend_from_slice(&src.split_to(chunk.min(src.len())));
                while let Some(f) = decode_frame(&mut buf, MAX).unwrap() {
                    out.push(f);
                }
            }
            assert_eq!(out, frames);
        }
    }

    #[test]
    fn header_layout_is_byte_exact() {
        let mut b = BytesMut::new();
        Frame::new(0x0102030405060708, PeerMsg::Ping).encode(&mut b);
        assert_eq!(
            &b[..],
            &[
                0x56, 0x50, 0x44, 0x48, 0, 0, 0, 18, 0x04, 0x21, 1, 2, 3, 4, 5, 6, 7, 8
            ]
        );
    }

    #[test]
    fn find_taken_is_a_bare_header_and_anything_else_is_refused() {
        let mut b = BytesMut::new();
        let len = Frame::new(0x0102030405060708, PeerMsg::FindTaken).encode(&mut b);
        assert_eq!(len, HEADER_BYTES);
        assert_eq!(
            &b[..],
            &[
                0x56, 0x50, 0x44, 0x48, 0, 0, 0, 18, 0x03, 0xf4, 1, 2, 3, 4, 5, 6, 7, 8
            ]
        );
        // A body of any length is a layout mismatch.
        for extra in [1usize, 8, 300] {
            let mut long = header(MAGIC, (18 + extra) as u32, FIND_TAKEN);
            long.put_slice(&vec![0; extra]);
            assert_eq!(
                decode_frame(&mut long, MAX),
                Err(P2pError::Malformed {
                    msg_type: FIND_TAKEN
                })
            );
        }
        // Short, or larger than the limit, it is refused from its header.
        assert_eq!(
            decode_frame(&mut header(MAGIC, 10, FIND_TAKEN), MAX),
            Err(P2pError::SizeBelowHeader { size: 10 })
        );
        assert_eq!(
            decode_frame(&mut header(MAGIC, 70_001, FIND_TAKEN), MAX),
            Err(P2pError::FrameTooLarge {
                size: 70_001,
                max: MAX
            })
        );
        // A header cut short waits for the rest.
        for cut in 0..b.len() {
            assert_eq!(decode_frame(&mut BytesMut::from(&b[..cut]), MAX), Ok(None));
        }
    }

    fn header(magic: u32, size: u32, msg_type: u16) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u32(magic);
        b.put_u32(size);
        b.put_u16(msg_type);
        b.put_u64(1);
        b
    }

    #[test]
    fn bad_frames_are_typed_errors() {
        assert_eq!(
            decode_frame(&mut header(1, 18, PING), MAX),
            Err(P2pError::BadMagic { magic: 1 })
        );
        // A foreign magic is refused from its first 4 bytes.
        assert_eq!(
            decode_frame(&mut BytesMut::from(&b"GET "[..]), MAX),
            Err(P2pError::BadMagic { magic: 0x47455420 })
        );
        assert_eq!(
            decode_frame(&mut header(MAGIC, 17, PING), MAX),
            Err(P2pError::SizeBelowHeader { size: 17 })
        );
        assert_eq!(
            decode_frame(&mut header(MAGIC, 70_001, STORAGE_PUT), MAX),
            Err(P2pError::FrameTooLarge {
                size: 70_001,
                max: MAX
            })
        );
        assert_eq!(
            decode_frame(&mut header(MAGIC, 18, 999), MAX),
            Err(P2pError::UnknownType { msg_type: 999 })
        );
        assert_eq!(
            decode_frame(&mut header(MAGIC, 18, STORAGE_GET), MAX),
            Err(P2pError::Malformed {
                msg_type: STORAGE_GET
            })
        );
        // A fill above 100 % is no fill.
        let mut overfull = header(MAGIC, 20, INVITE);
        overfull.put_slice(&[1, 101]);
        assert_eq!(
            decode_frame(&mut overfull, MAX),
            Err(P2pError::Malformed { msg_type: INVITE })
        );
        let mut trailing = header(MAGIC, 19, PING);
        trailing.put_u8(0);
        assert_eq!(
            decode_frame(&mut trailing, MAX),
            Err(P2pError::Malformed { msg_type: PING })
        );
        // VALUE FOUND: "here is the value" with none, or an unknown status.
        for (status, body_tail) in [(1u8, 0usize), (3, 0), (0, 1)] {
            let mut found = BytesMut::new();
            let msg = PeerMsg::ValueFound {
                target: Id([1; 32]),
                hops: 1,
                nodes: vec![peer(1, 1)],
                held: Held::Missing,
            };
            Frame::new(1, msg).encode(&mut found);
            let last = found.len() - 1;
            found[last] = status;
            found.put_slice(&vec![0; body_tail]);
            let size = found.len() as u32;
            found[4..8].copy_from_slice(&size.to_be_bytes());
            assert_eq!(
                decode_frame(&mut found, MAX),
                Err(P2pError::Malformed {
                    msg_type: VALUE_FOUND
                }),
                "status {status}, {body_tail} bytes after it"
            );
        }
        let mut too_many = header(MAGIC, 18 + 32 + 1 + 1, PEER_FOUND);
        too_many.put_slice(&[0; 33]);
        too_many.put_u8(200);
        assert_eq!(
            decode_frame(&mut too_many, MAX),
            Err(P2pError::Malformed {
                msg_type: PEER_FOUND
            })
        );
    }

    #[test]
    fn truncated_frames_wait_and_arbitrary_bytes_never_panic() {
        let mut full = BytesMut::new();
        Frame::new(1, PeerMsg::Hello { node: peer(1, 2) }).encode(&mut full);
        for cut in 0..full.len() {
            assert_eq!(
                decode_frame(&mut BytesMut::from(&full[..cut]), MAX),
                Ok(None)
            );
        }
        let mut rng = crate::time::Prng::new(5);
        for _ in 0..50_000 {
            let mut b = header(MAGIC, 0, 1001 + rng.below(60) as u16);
            let body = rng.below(120) as usize;
            b[4..8].copy_from_slice(&((HEADER_BYTES + body) as u32).to_be_bytes());
            for _ in 0..body {
                b.put_u8(rng.next_u64() as u8);
            }
            let _ = decode_frame(&mut b, MAX);
        }
    }
}
