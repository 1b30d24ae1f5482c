//! The sans-IO Chord node: ring maintenance, routing and storage, as a deterministic state machine.
//!
//! Inputs are `handle_*` calls that take `now`; outputs are drained with `poll_*` until `None`, then
//! the driver sleeps until `poll_timeout()`. [`drive`] is that loop, shared by the reactor and the
//! simulator so they cannot drift. Nothing in here touches a socket or reads a clock.
//!
//! Peers are named by their advertised P2P address. Replies to a request go to the address the
//! request came from, with the same request id.

mod cache;
mod maintenance;
mod ops;
mod repair;
pub mod ring;

use crate::config::NodeConfig;
use crate::id::{Id, Key};
use crate::storage::Storage;
use crate::time::{Prng, Time};
use crate::wheel::{TimerKey, TimerWheel};
use crate::wire::api::{ApiReply, ApiRequest};
use crate::wire::arena::ValueArena;
use crate::wire::p2p::{Frame, Peer, PeerMsg};
use bytes::Bytes;
use ring::Ring;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

pub use ops::Stats;

/// Names one API client connection; chosen by the driver, opaque to the core.
pub type ClientId = u64;

/// The most hops a PEER FIND may take before it is dropped (a loop guard: Chord needs O(log N)).
pub const HOPS_MAX: u8 = 64;

/// Failed requests to our last successor, with nobody else known, before we believe it dead.
const LAST_RESORT_CHANCES: u32 = 3;

/// Peers remembered to re-join through.
const CONTACTS_MAX: usize = 16;

/// How much more often stabilize runs while our successor or predecessor keeps changing.
const UNSETTLED_SPEEDUP: u64 = 8;

/// Periodic timer jitter, in percent either side.
const JITTER_PERCENT: u64 = 20;

/// A message for the driver to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub frame: Frame,
}

/// The periodic timers of the node. Each fires at its jittered interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Periodic {
    /// Join (or re-join) through a bootstrap peer while not joined.
    Join = 0,
    /// Zave's stabilize: ask the successor for its predecessor and list, then notify it.
    Stabilize,
    /// Refresh one finger (a lookup of `me + 2^i`).
    FixFingers,
    /// Ping the predecessor; forget it if it does not answer.
    CheckPredecessor,
    /// Compare summaries with the replica holders and push what they lack (repair.rs).
    Repair,
}

const PERIODIC_COUNT: usize = 5;

/// What an outstanding request id is waiting for.
#[derive(Debug)]
enum Pending {
    /// A PEER FIND sent on our behalf, waiting for PEER FOUND.
    Lookup { target: Id, purpose: Purpose },
    /// A request to one peer, waiting for its answer.
    Rpc { peer: SocketAddr, kind: RpcKind },
    /// A client request waiting to be routed again (backoff); no message is in flight.
    Retry(ClientOp),
}

/// Why a lookup was started.
#[derive(Debug)]
enum Purpose {
    Client(ClientOp),
    Join,
    Finger(usize),
}

/// What a request to one peer is for.
#[derive(Debug)]
enum RpcKind {
    /// PREDECESSOR GET to the first successor (stabilize).
    Stabilize,
    /// PREDECESSOR GET to a node seen between us and our successor (stabilize, second step).
    StabilizeCandidate { candidate: Peer },
    /// PREDECESSOR GET to the new successor of a lone node.
    Adopt { candidate: Peer },
    /// PING to the predecessor.
    CheckPredecessor,
    /// STORAGE GET / PUT for a client, with the replica holders still to try; `to_owner` when sent
    /// to the node believed responsible (not to a replica holder).
    Client {
        op: ClientOp,
        rest: Vec<Peer>,
        to_owner: bool,
    },
    /// STORAGE PUT of a replica or a handed-off value; the answer's hash is checked.
    Push { key: Key, value_hash: Id },
    /// SYNC to the `index`-th successor (repair).
    Sync { holder: Peer, index: usize },
    /// STORAGE GET of a value in our range that a replica holder has and we lack (repair).
    Pull { key: Key },
}

/// A client's request while it is routed.
#[derive(Debug)]
struct ClientOp {
    client: ClientId,
    key: Key,
    kind: ClientOpKind,
    deadline: Time,
    attempt: usize,
    /// Routed on the routing cache's guess: a miss then means "look it up", not "not found".
    guessed: bool,
}

#[derive(Debug)]
enum ClientOpKind {
    Get,
    Put {
        value: Bytes,
        expires: Time,
        replication: u8,
    },
}

/// Reused `Vec<Peer>` buffers for the holder lists client requests carry, so that routing a request
/// allocates nothing once the pool is warm.
#[derive(Default)]
struct PeerLists {
    free: Vec<Vec<Peer>>,
}

/// Lists the pool keeps at most.
const PEER_LISTS_MAX: usize = 64;

impl PeerLists {
    /// An empty list (with capacity when one was given back).
    fn take(&mut self) -> Vec<Peer> {
        self.free.pop().unwrap_or_default()
    }

    fn give(&mut self, mut list: Vec<Peer>) {
        if list.capacity() > 0 && self.free.len() < PEER_LISTS_MAX {
            list.clear();
            self.free.push(list);
        }
    }
}

struct PendingEntry {
    what: Pending,
    timer: TimerKey,
}

pub struct Node {
    cfg: NodeConfig,
    ring: Ring,
    joined: bool,
    storage: Storage,
    /// Where values leave the store for messages (no allocation per message).
    values_out: ValueArena,
    rng: Prng,
    periodic: [Option<Time>; PERIODIC_COUNT],
    deadlines: TimerWheel<u64>,
    pending: BTreeMap<u64, PendingEntry>,
    next_request: u64,
    /// Peers to (re-)join through: the bootstrap list, then successors lost while alone.
    contacts: Vec<SocketAddr>,
    /// Which contact the next join attempt uses.
    bootstrap_next: usize,
    last_resort_failures: u32,
    /// Successor and predecessor at the last stabilize round: while they keep changing (a ring
    /// forming or healing) rounds come `UNSETTLED_SPEEDUP` times as often.
    pointers_at_stabilize: (Option<Id>, Option<Id>),
    /// Nodes seen recently: the asker's one-hop guess at a key's holders.
    cache: cache::PeerCache,
    peer_lists: PeerLists,
    /// Bytes a repair round may still push.
    repair_budget: usize,
    /// Set by `handle_leave`: the node is handing its values on before it exits.
    leaving: bool,
    /// The next finger index fix_fingers refreshes.
    finger_next: usize,
    transmits: VecDeque<Transmit>,
    replies: VecDeque<(ClientId, ApiReply)>,
    stats: Stats,
    now: Time,
    /// Wall-clock milliseconds at `now == 0` (the driver's), for write versions.
    epoch_ms: u64,
}

impl Node {
    /// A node with advertised P2P address `addr`; it starts a ring alone when `cfg.bootstrap` is
    /// empty, otherwise it joins through the bootstrap peers.
    pub fn new(cfg: NodeConfig, addr: SocketAddr, seed: u64, now: Time) -> Node {
        let id = cfg.node_id.unwrap_or_else(|| Id::of_addr(addr));
        let me = Peer { id, addr };
        let bootstrap: Vec<SocketAddr> = cfg
            .bootstrap
            .iter()
            .copied()
            .filter(|a| *a != addr)
            .collect();
        let joined = bootstrap.is_empty();
        let cache = cache::PeerCache::new(cfg.routing_cache_max);
        let mut node = Node {
            ring: Ring::new(me, cfg.successors),
            storage: Storage::new(cfg.storage_bytes_max),
            values_out: ValueArena::default(),
            cfg,
            joined,
            rng: Prng::new(seed ^ u64::from_be_bytes(id.0[..8].try_into().unwrap())),
            periodic: [None; PERIODIC_COUNT],
            deadlines: TimerWheel::new(10, 256, now),
            pending: BTreeMap::new(),
            next_request: 1,
            contacts: bootstrap,
            bootstrap_next: 0,
            last_resort_failures: 0,
            pointers_at_stabilize: (None, None),
            epoch_ms: 0,
            repair_budget: 0,
            cache,
            peer_lists: PeerLists::default(),
            leaving: false,
            finger_next: 0,
            transmits: VecDeque::new(),
            replies: VecDeque::new(),
            stats: Stats::default(),
            now,
        };
        if !joined {
            node.periodic[Periodic::Join as usize] = Some(now);
        }
        node.schedule(Periodic::Stabilize);
        node.schedule(Periodic::FixFingers);
        node.schedule(Periodic::CheckPredecessor);
        node.schedule(Periodic::Repair);
        log::info!(
            "[{}] node at {} ({})",
            id.short(),
            addr,
            if joined { "new ring" } else { "joining" }
        );
        node
    }

    // ----- inputs -----

    /// A request from an API client.
    pub fn handle_client_req(&mut self, client: ClientId, req: ApiRequest, now: Time) {
        self.now = now;
        self.client_request(client, req);
    }

    /// A frame from a peer; `from` is the peer's advertised address (or its socket address when it
    /// has not said hello, like the `ring` command).
    pub fn handle_peer_msg(&mut self, from: SocketAddr, frame: Frame, now: Time) {
        self.now = now;
        let Frame { request, msg } = frame;
        match msg {
            PeerMsg::StorageGet { key } => self.on_storage_get(from, request, key),
            PeerMsg::StoragePut {
                ttl_ms,
                replication,
                version,
                key,
                value,
            } => self.on_storage_put(from, request, key, value, ttl_ms, (replication, version)),
            PeerMsg::PeerFind {
                target,
                hops,
                last_hop,
                reply_to,
            } => self.on_peer_find(request, target, hops, last_hop, reply_to),
            PeerMsg::PredecessorGet => {
                let msg = PeerMsg::PredecessorReply {
                    pred: self.ring.pred,
                    succs: self.ring.succs().to_vec(),
                };
                self.send(from, request, msg);
            }
            PeerMsg::PredecessorSet { node } => self.on_notify(node),
            PeerMsg::SuccessorHint { node } => self.on_successor_hint(node),
            PeerMsg::Ping => self.send(from, request, PeerMsg::Pong),
            PeerMsg::InfoGet => {
                let msg = self.info();
                self.send(from, request, msg);
            }
            PeerMsg::Sync {
                from: f,
                to,
                index,
                buckets,
            } => self.on_sync(from, request, (f, to), index, buckets),
            PeerMsg::Leave { node, pred, succs } => self.on_leave(node, pred, succs),
            PeerMsg::Hello { .. } => {}
            reply => self.on_reply(from, request, reply),
        }
    }

    /// The driver could not reach `peer` (connect failed, connection broke, or it timed out).
    pub fn handle_peer_unreachable(&mut self, peer: SocketAddr, now: Time) {
        self.now = now;
        if self.peer_failed(peer) {
            log::info!(
                "[{}] peer {} unreachable; dropped from the routing table",
                self.short(),
                peer
            );
        }
        let failed: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, e)| matches!(e.what, Pending::Rpc { peer: p, .. } if p == peer))
            .map(|(r, _)| *r)
            .collect();
        for request in failed {
            self.request_failed(request);
        }
    }

    /// Timers: safe to call early or twice.
    pub fn handle_timeout(&mut self, now: Time) {
        self.now = now;
        for timer in PERIODIC_ORDER {
            if self.periodic[timer as usize].is_some_and(|t| t <= now) {
                self.periodic[timer as usize] = None;
                self.fire(timer);
            }
        }
        let mut expired = Vec::new();
        self.deadlines.expire(now, &mut expired);
        for request in expired {
            if let Some(entry) = self.pending.get(&request) {
                if let Pending::Rpc { peer, .. } = entry.what {
                    log::debug!(
                        "[{}] request {} to {} timed out",
                        self.short(),
                        request,
                        peer
                    );
                }
                self.request_failed(request);
            }
        }
        self.storage.sweep(now);
    }

    // ----- outputs -----

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    #[must_use]
    pub fn poll_client_reply(&mut self) -> Option<(ClientId, ApiReply)> {
        self.replies.pop_front()
    }

    /// When `handle_timeout` should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        let periodic = self.periodic.iter().flatten().min().copied();
        [
            periodic,
            self.deadlines.next_deadline(),
            self.storage.next_sweep(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ----- views -----

    /// The wall clock (milliseconds since the Unix epoch) at the driver's time 0. Write versions
    /// come from it, so that a later write wins across nodes as long as clocks roughly agree.
    pub fn set_wall_clock_epoch(&mut self, epoch_ms: u64) {
        self.epoch_ms = epoch_ms;
    }

    fn wall_ms(&self) -> u64 {
        self.epoch_ms + self.now.as_ms()
    }

    pub fn me(&self) -> Peer {
        self.ring.me
    }

    pub fn joined(&self) -> bool {
        self.joined
    }

    pub fn predecessor(&self) -> Option<Peer> {
        self.ring.pred
    }

    pub fn successors(&self) -> &[Peer] {
        self.ring.succs()
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The executable spec, checked by the simulator after every event.
    pub fn check_invariants(&self) {
        self.ring.check_invariants();
        assert!(
            self.pending.len()
                <= self.cfg.pending_requests_max + PERIODIC_COUNT + 2 * self.cfg.successors
        );
        assert_eq!(
            self.pending.len(),
            self.deadlines.len(),
            "every pending request has one deadline"
        );
        assert!(self.storage.bytes_used() <= self.cfg.storage_bytes_max);
    }

    // ----- helpers shared by the submodules -----

    fn short(&self) -> String {
        self.ring.me.id.short()
    }

    fn send(&mut self, to: SocketAddr, request: u64, msg: PeerMsg) {
        self.transmits.push_back(Transmit {
            to,
            frame: Frame { request, msg },
        });
    }

    /// Sends a request and remembers what it waits for, with a deadline of `timeout_ms`.
    fn request(&mut self, to: SocketAddr, msg: PeerMsg, what: Pending, timeout_ms: u64) -> u64 {
        let request = self.next_request;
        self.next_request += 1;
        let timer = self.deadlines.insert(self.now + timeout_ms, request);
        self.pending.insert(request, PendingEntry { what, timer });
        self.send(to, request, msg);
        request
    }

    fn take_pending(&mut self, request: u64) -> Option<Pending> {
        let entry = self.pending.remove(&request)?;
        self.deadlines.cancel(entry.timer);
        Some(entry.what)
    }

    fn schedule(&mut self, timer: Periodic) {
        let base = match timer {
            Periodic::Join => self.cfg.request_timeout_ms,
            Periodic::Stabilize => {
                let now = (
                    self.ring.succs().first().map(|p| p.id),
                    self.ring.pred.map(|p| p.id),
                );
                let settled = std::mem::replace(&mut self.pointers_at_stabilize, now) == now;
                if settled {
                    self.cfg.stabilize_interval_ms
                } else {
                    self.cfg.stabilize_interval_ms / UNSETTLED_SPEEDUP
                }
            }
            Periodic::FixFingers => self.cfg.fix_fingers_interval_ms,
            Periodic::CheckPredecessor => self.cfg.check_predecessor_interval_ms,
            Periodic::Repair => self.cfg.repair_interval_ms,
        };
        let at = self.now + self.rng.jitter(base, JITTER_PERCENT);
        self.periodic[timer as usize] = Some(at);
    }

    fn fire(&mut self, timer: Periodic) {
        match timer {
            Periodic::Join => self.join(),
            Periodic::Stabilize => self.stabilize(),
            Periodic::FixFingers => self.fix_fingers(),
            Periodic::CheckPredecessor => self.check_predecessor(),
            Periodic::Repair => self.repair(),
        }
        if timer != Periodic::Join {
            self.schedule(timer);
        }
    }

    /// A reply to one of our requests.
    fn on_reply(&mut self, from: SocketAddr, request: u64, msg: PeerMsg) {
        let Some(what) = self.take_pending(request) else {
            log::debug!(
                "[{}] late or unknown reply {} from {}",
                self.short(),
                request,
                from
            );
            return;
        };
        match what {
            Pending::Lookup { target, purpose } => match msg {
                PeerMsg::PeerFound {
                    target: t,
                    hops,
                    nodes,
                } if t == target => {
                    self.stats.lookups += 1;
                    self.stats.lookup_hops += hops as u64;
                    self.lookup_done(purpose, nodes)
                }
                other => self.unexpected(from, other, Pending::Lookup { target, purpose }),
            },
            Pending::Rpc {
                kind: RpcKind::Pull { key },
                ..
            } => self.pulled(key, msg),
            Pending::Rpc {
                kind: RpcKind::Sync { holder, index },
                ..
            } => match msg {
                PeerMsg::SyncReply { differing, keys } => {
                    self.sync_reply(holder, index, differing, keys)
                }
                other => self.unexpected(
                    from,
                    other,
                    Pending::Rpc {
                        peer: from,
                        kind: RpcKind::Sync { holder, index },
                    },
                ),
            },
            Pending::Rpc {
                kind: kind @ (RpcKind::Client { .. } | RpcKind::Push { .. }),
                ..
            } => self.storage_reply(from, kind, msg),
            Pending::Rpc { kind, .. } => self.maintenance_reply(from, kind, msg),
            Pending::Retry(op) => self.client_resume(op),
        }
    }

    fn unexpected(&mut self, from: SocketAddr, msg: PeerMsg, what: Pending) {
        log::warn!(
            "[{}] {} answered {:?} with type {}",
            self.short(),
            from,
            what,
            msg.msg_type()
        );
        self.fail(what);
    }

    /// A request got no usable answer (timeout, unreachable peer, wrong reply).
    fn request_failed(&mut self, request: u64) {
        if let Some(what) = self.take_pending(request) {
            if let Pending::Rpc {
                peer,
                kind: RpcKind::Stabilize | RpcKind::CheckPredecessor,
            } = &what
            {
                // Zave: a successor or predecessor that does not answer is dead to us.
                let peer = *peer;
                self.peer_failed(peer);
            }
            if let Pending::Rpc {
                peer,
                kind: RpcKind::StabilizeCandidate { .. },
            } = &what
            {
                // A hinted or cached candidate that does not answer is not probed again.
                self.cache.forget(*peer);
            }
            self.fail(what);
        }
    }

    /// Drops a peer that failed us. Our last successor, with nobody else known, gets a few more
    /// chances first: dropping it makes us a ring of one, which a lossy link must not cause lightly.
    /// Once alone, we keep trying to re-join through the peers we lost (and the bootstrap list).
    fn peer_failed(&mut self, peer: SocketAddr) -> bool {
        if self.ring.is_last_resort(peer) {
            self.last_resort_failures += 1;
            if self.last_resort_failures < LAST_RESORT_CHANCES {
                return false;
            }
            log::warn!(
                "[{}] last successor {} is gone; alone until a re-join succeeds",
                self.short(),
                peer
            );
            self.contacts.retain(|a| *a != peer);
            self.contacts.push(peer);
            if self.contacts.len() > CONTACTS_MAX {
                self.contacts.remove(0);
            }
            self.schedule(Periodic::Join);
        }
        self.last_resort_failures = 0;
        self.cache.forget(peer);
        self.ring.remove(peer)
    }

    fn fail(&mut self, what: Pending) {
        match what {
            Pending::Lookup {
                purpose: Purpose::Client(op),
                ..
            } => self.client_retry(op),
            Pending::Lookup {
                purpose: Purpose::Join,
                ..
            } => self.schedule(Periodic::Join),
            Pending::Rpc {
                kind: RpcKind::Client { op, rest, .. },
                ..
            } => self.client_next_replica(op, rest, false),
            Pending::Retry(op) => self.client_resume(op),
            // Go on with the next successor at once; a kept successor waits for the next round.
            Pending::Rpc {
                kind: RpcKind::Stabilize,
                peer,
            } if self.ring.successor().addr != peer => self.stabilize(),
            Pending::Rpc {
                kind: RpcKind::StabilizeCandidate { .. },
                ..
            } => self.notify_successor(),
            _ => {}
        }
    }
}

const PERIODIC_ORDER: [Periodic; PERIODIC_COUNT] = [
    Periodic::Join,
    Periodic::Stabilize,
    Periodic::FixFingers,
    Periodic::CheckPredecessor,
    Periodic::Repair,
];

/// A peer for unit tests: id `b · 0…0`, address 127.0.0.1:(1000 + b).
#[cfg(test)]
pub(crate) fn test_peer(b: u8) -> Peer {
    let mut id = [0u8; 32];
    id[0] = b;
    Peer {
        id: Id(id),
        addr: SocketAddr::from(([127, 0, 0, 1], 1000 + b as u16)),
    }
}

/// Where [`drive`] puts a node's outputs.
pub trait Outputs {
    fn transmit(&mut self, t: Transmit);
    fn client_reply(&mut self, client: ClientId, reply: ApiReply);
}

/// Outputs kept in two lists, for drivers that deliver them later (the simulator, tests).
#[derive(Default)]
pub struct Collected {
    pub transmits: Vec<Transmit>,
    pub replies: Vec<(ClientId, ApiReply)>,
}

impl Outputs for Collected {
    fn transmit(&mut self, t: Transmit) {
        self.transmits.push(t);
    }
    fn client_reply(&mut self, client: ClientId, reply: ApiReply) {
        self.replies.push((client, reply));
    }
}

/// Drains every output of `node` into `out` and returns when to call `handle_timeout` next. Call it
/// after every `handle_*`.
pub fn drive(node: &mut Node, out: &mut impl Outputs) -> Option<Time> {
    drain(node, out);
    node.poll_timeout()
}

/// Drains the messages and replies only: for a driver that handles a batch of inputs and asks for
/// the next timeout once at the end of the batch (the reactor, per frame read).
pub fn drain(node: &mut Node, out: &mut impl Outputs) {
    while let Some(t) = node.poll_transmit() {
        out.transmit(t);
    }
    while let Some((c, r)) = node.poll_client_reply() {
        out.client_reply(c, r);
    }
}
