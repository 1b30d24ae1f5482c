//! The messages voidphone-dht nodes exchange, as typed values: what the core sends and receives.
//! No byte code here: [`crate::wire::p2p`] maps these to and from bytes (docs/PROTOCOL.md). Adding a
//! message type takes one variant here (with its number in [`PeerMsg::msg_type`]), one arm in each
//! direction of the codec, and its handling in the core.

use crate::id::{Id, Key};
use bytes::Bytes;
use std::net::SocketAddr;

/// STORAGE PUT `replication` bit 7: a copy (replica, repair, hand-off) rather than a write to the
/// responsible node; bits 0–6 carry the number of copies wanted either way.
pub const COPY_FLAG: u8 = 0x80;
/// The most peers one message lists (successor lists are bounded well below it by config).
pub const PEERS_MAX: usize = 64;

pub const STORAGE_GET: u16 = 1001;
pub const STORAGE_PUT: u16 = 1002;
pub const STORAGE_GET_SUCCESS: u16 = 1003;
pub const STORAGE_PUT_SUCCESS: u16 = 1004;
pub const STORAGE_FAILURE: u16 = 1005;
pub const SYNC: u16 = 1006;
pub const SYNC_REPLY: u16 = 1007;
pub const PREDECESSORS_GET: u16 = 1008;
pub const PREDECESSORS: u16 = 1009;
pub const SPARE: u16 = 1010;
pub const INVITE: u16 = 1011;
pub const FIND_TAKEN: u16 = 1012;
pub const FIND_VALUE: u16 = 1013;
pub const VALUE_FOUND: u16 = 1014;
pub const PEER_FIND: u16 = 1051;
pub const PEER_FOUND: u16 = 1052;
pub const PREDECESSOR_GET: u16 = 1053;
pub const PREDECESSOR_REPLY: u16 = 1054;
pub const PREDECESSOR_SET: u16 = 1055;
pub const HELLO: u16 = 1056;
pub const PING: u16 = 1057;
pub const PONG: u16 = 1058;
pub const INFO_GET: u16 = 1059;
pub const INFO_REPLY: u16 = 1060;
pub const LEAVE: u16 = 1061;
pub const SUCCESSOR_HINT: u16 = 1062;
/// Buckets a repair summary splits a key range into (by the key's top 6 bits).
pub const SYNC_BUCKETS: usize = 64;
/// The most keys one SYNC REPLY lists: 60,028 bytes in all, under the smallest frame limit (65,600).
pub const SYNC_KEYS_MAX: usize = 1500;

/// A node as other nodes know it: its ring id and advertised P2P address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Peer {
    pub id: Id,
    pub addr: SocketAddr,
}

/// Why a STORAGE request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    NotFound = 1,
    /// The store is full (byte quota) or the value was refused.
    Refused = 2,
    /// The receiver is not responsible for the key (the sender's view of the ring is stale) and
    /// holds no copy: look the key up again.
    NotResponsible = 3,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerMsg {
    /// Fetch the value under `key`.
    StorageGet {
        key: Key,
    },
    /// Store a value for `ttl_ms` more milliseconds, `replication` copies wanted. Without
    /// [`COPY_FLAG`] it is a write to the key's responsible node, which copies it to its next
    /// `replication - 1` successors; with it, such a copy (or a repair, a hand-off), stored unless the
    /// receiver holds a newer `version` (a write's version is set by the responsible node; 0 here).
    StoragePut {
        ttl_ms: u32,
        replication: u8,
        version: u64,
        key: Key,
        value: Bytes,
    },
    /// The value, its time left, the number of copies wanted and its version.
    StorageGetSuccess {
        ttl_ms: u32,
        replication: u8,
        version: u64,
        key: Key,
        value: Bytes,
    },
    /// Carries the SHA-256 of the stored value; the sender checks it against what it sent.
    StoragePutSuccess {
        key: Key,
        value_hash: Id,
    },
    StorageFailure {
        key: Key,
        reason: FailureReason,
    },
    /// Find the node responsible for `target`; forwarded recursively, answered to `reply_to`.
    /// `last_hop`: the sender's successor pointer says the receiver is responsible. `read` (FIND
    /// VALUE, same body): the responsible node answers with the value under `target` (VALUE FOUND)
    /// rather than PEER FOUND, a GET in one pass.
    PeerFind {
        target: Id,
        hops: u8,
        last_hop: bool,
        reply_to: SocketAddr,
        read: bool,
    },
    /// `nodes[0]` is responsible for `target`; the rest are its successors (the replica holders).
    PeerFound {
        target: Id,
        hops: u8,
        nodes: Vec<Peer>,
    },
    /// The answer to FIND VALUE: `nodes` as in PEER FOUND (the responsible node alone when the
    /// value comes along), and what it holds under `target`.
    ValueFound {
        target: Id,
        hops: u8,
        nodes: Vec<Peer>,
        held: Held,
    },
    PredecessorGet,
    /// The answerer's predecessor and successor list (Zave's stabilize asks for both at once).
    PredecessorReply {
        pred: Option<Peer>,
        succs: Vec<Peer>,
    },
    /// Our predecessor's own predecessors, asked each check_predecessor round (it also shows the
    /// predecessor lives): a node learns which nodes may send it copies (their ranges it replicates).
    PredecessorsGet,
    /// The answerer's predecessor list, its predecessor first, then going back round the ring.
    Predecessors {
        preds: Vec<Peer>,
    },
    /// "One of my slot ids lies in your range; I stand at `holder`, after `pred`, before `succ`"
    /// (rebalancing: the receiver may invite the sender there). No answer.
    Spare {
        holder: Peer,
        pred: Id,
        succ: Id,
    },
    /// "Move to your slot `slot`: its id lies in my range" (rebalancing), with how full the
    /// sender's store is (`fill`, percent of its quota, 0–100): a nearly full sender asks for its
    /// bytes to be split. The receiver checks the move itself. No answer.
    Invite {
        slot: u8,
        fill: u8,
    },
    /// "I may be your predecessor" (Chord's notify; the receiver rectifies).
    PredecessorSet {
        node: Peer,
    },
    /// "This node may lie between you and your successor": the receiver probes it at once instead
    /// of waiting for its next stabilize round (sent when a notify changes or loses to a predecessor).
    SuccessorHint {
        node: Peer,
    },
    /// "Your PEER FIND (same request id) reached me and goes on from here": the per-hop
    /// acknowledgement a forwarder waits for before it reroutes the find (`chord::forwards`).
    FindTaken,
    /// First message on every connection a node opens: who is speaking.
    Hello {
        node: Peer,
    },
    Ping,
    Pong,
    /// Repair summary from a key range's responsible node to its `index`-th successor: per bucket,
    /// the XOR digest and count of the keys in `(from, to]` that holder should keep.
    Sync {
        from: Id,
        to: Id,
        index: u8,
        buckets: Vec<(u64, u32)>,
    },
    /// The holder's answer: a bitmap of the buckets that differ and the keys it holds in them, each
    /// with the version it holds.
    SyncReply {
        differing: u64,
        keys: Vec<(Key, u64)>,
    },
    /// The sender leaves the ring: here are its predecessor and successors. (Boxed: rare and large.)
    Leave(Box<Departure>),
    /// Operator view: ask a node for its ring pointers and storage counts.
    InfoGet,
    /// Boxed: rare, and large enough to double the size of every message otherwise.
    InfoReply(Box<NodeInfo>),
}

/// What the responsible node holds under a FIND VALUE's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held {
    /// No value: its replicas (the other `nodes`) may still hold one stored before it took over.
    Missing,
    Value(Bytes),
    /// A value larger than a VALUE FOUND carries: ask with STORAGE GET.
    TooLarge,
}

/// A node leaving the ring, and the neighbours that take its place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Departure {
    pub node: Peer,
    pub pred: Option<Peer>,
    pub succs: Vec<Peer>,
}

/// What a node says of itself (INFO REPLY): its ring pointers and how many values it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub node: Peer,
    pub pred: Option<Peer>,
    pub succs: Vec<Peer>,
    /// Values in its own range (pred, node].
    pub values_primary: u32,
    pub values_replica: u32,
    pub bytes_stored: u64,
    /// Its quota (`storage_bytes_max`): how near it is to refusing writes.
    pub bytes_max: u64,
    /// What the node refused of strangers so far: STORAGE PUTs, client requests past their share,
    /// and its driver's refusals (connections, rate limits, slow frames).
    pub refusals: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub request: u64,
    pub msg: PeerMsg,
}

impl PeerMsg {
    pub fn msg_type(&self) -> u16 {
        match self {
            PeerMsg::StorageGet { .. } => STORAGE_GET,
            PeerMsg::StoragePut { .. } => STORAGE_PUT,
            PeerMsg::StorageGetSuccess { .. } => STORAGE_GET_SUCCESS,
            PeerMsg::StoragePutSuccess { .. } => STORAGE_PUT_SUCCESS,
            PeerMsg::StorageFailure { .. } => STORAGE_FAILURE,
            PeerMsg::PeerFind { read: false, .. } => PEER_FIND,
            PeerMsg::PeerFind { read: true, .. } => FIND_VALUE,
            PeerMsg::ValueFound { .. } => VALUE_FOUND,
            PeerMsg::PeerFound { .. } => PEER_FOUND,
            PeerMsg::FindTaken => FIND_TAKEN,
            PeerMsg::PredecessorGet => PREDECESSOR_GET,
            PeerMsg::PredecessorReply { .. } => PREDECESSOR_REPLY,
            PeerMsg::PredecessorsGet => PREDECESSORS_GET,
            PeerMsg::Predecessors { .. } => PREDECESSORS,
            PeerMsg::Spare { .. } => SPARE,
            PeerMsg::Invite { .. } => INVITE,
            PeerMsg::PredecessorSet { .. } => PREDECESSOR_SET,
            PeerMsg::SuccessorHint { .. } => SUCCESSOR_HINT,
            PeerMsg::Hello { .. } => HELLO,
            PeerMsg::Ping => PING,
            PeerMsg::Pong => PONG,
            PeerMsg::InfoGet => INFO_GET,
            PeerMsg::InfoReply(_) => INFO_REPLY,
            PeerMsg::Sync { .. } => SYNC,
            PeerMsg::SyncReply { .. } => SYNC_REPLY,
            PeerMsg::Leave(_) => LEAVE,
        }
    }
}

impl Frame {
    pub fn new(request: u64, msg: PeerMsg) -> Frame {
        Frame { request, msg }
    }
}
