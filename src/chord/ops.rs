//! Routing and storage: client GET/PUT routed to the key's responsible node, recursive PEER FIND,
//! the STORAGE requests, replication along the successor list and hand-off to a new predecessor.

use super::{ClientOp, ClientOpKind, HOPS_MAX, Node, Pending, Purpose, RpcKind};
use crate::chord::ClientId;
use crate::id::{Id, Key};
use crate::storage::{StoreError, Stored};
use crate::time::Time;
use crate::wire::api::{ApiReply, ApiRequest};
use crate::wire::p2p::{COPY_FLAG, FailureReason, NodeInfo, PEERS_MAX, Peer, PeerMsg};
use bytes::Bytes;
use std::net::SocketAddr;

/// Lookups a client request may start before it is given up (each takes another first hop).
const CLIENT_ATTEMPTS_MAX: usize = 8;
/// Pause before retrying a client request, times the attempt number.
const RETRY_BACKOFF_MS: u64 = 50;

/// Counters for operators, benches and the simulator.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Lookups answered by PEER FOUND, and the hops they took in all.
    pub lookups: u64,
    pub lookup_hops: u64,
    /// Lookups this node answered without a message (it or its successor is responsible).
    pub lookups_local: u64,
    /// Client requests sent straight to the holders the routing cache named.
    pub lookups_cached: u64,
    pub client_gets: u64,
    pub client_puts: u64,
    pub get_failures: u64,
    pub put_failures: u64,
    pub repair_rounds: u64,
    /// SYNC messages sent (each answered by one SYNC REPLY).
    pub repair_messages: u64,
    pub repair_values_pushed: u64,
    /// Values fetched by a responsible node that lacked them.
    pub repair_values_pulled: u64,
    pub repair_bytes_pushed: u64,
}

impl Node {
    pub(super) fn client_request(&mut self, client: ClientId, req: ApiRequest) {
        let (key, kind) = match req {
            ApiRequest::Get { key } => {
                self.stats.client_gets += 1;
                (key, ClientOpKind::Get)
            }
            ApiRequest::Put {
                ttl_s,
                replication,
                key,
                value,
            } => {
                self.stats.client_puts += 1;
                // TTL and replication are hints: clamp them to our policy.
                let ttl_ms = ttl_s.clamp(1, self.cfg.ttl_max_s) as u64 * 1000;
                let replication =
                    replication.clamp(self.cfg.replication_min, self.cfg.replication_max);
                (
                    key,
                    ClientOpKind::Put {
                        value,
                        expires: self.now + ttl_ms,
                        replication,
                    },
                )
            }
        };
        let op = ClientOp {
            client,
            key,
            kind,
            deadline: self.now + self.cfg.lookup_timeout_ms,
            attempt: 0,
            guessed: false,
        };
        if self.pending.len() >= self.cfg.pending_requests_max {
            log::warn!(
                "[{}] {} requests pending; refusing a client request",
                self.short(),
                self.pending.len()
            );
            return self.client_failed(op);
        }
        self.route(op);
    }

    /// Sends a client request on its way: answered here, by our successor, or after a lookup.
    fn route(&mut self, mut op: ClientOp) {
        op.guessed = false;
        if !self.joined {
            return self.client_retry(op);
        }
        let key = op.key;
        let mut nodes = self.peer_lists.take();
        if self.ring.owns(&key) {
            self.stats.lookups_local += 1;
            self.nodes_from_me_into(&mut nodes);
            return self.client_at(op, nodes);
        }
        if op.attempt == 0 {
            if let Some((i, _)) = self.ring.owner_in_succs(&key) {
                self.stats.lookups_local += 1;
                nodes.extend_from_slice(&self.ring.succs()[i..]);
                // Entries past the first come from our successor's list and may be stale.
                op.guessed = i > 0;
                return self.client_at(op, nodes);
            }
            // The cache's guess at the key's holders, unless it names us (then our predecessor
            // knows better).
            let more = self.cfg.replication_max as usize - 1;
            self.cache
                .holders_into(&key, self.ring.me, more, &mut nodes);
            if nodes[0].id != self.ring.me.id {
                self.stats.lookups_cached += 1;
                op.guessed = true;
                return self.client_at(op, nodes);
            }
        }
        self.peer_lists.give(nodes);
        let skip = op.attempt;
        self.start_lookup(key, Purpose::Client(op), skip);
    }

    /// Sends PEER FIND for `target` to the best next hop (the `skip`-th best on retries).
    pub(super) fn start_lookup(&mut self, target: Id, purpose: Purpose, skip: usize) {
        let next = self
            .ring
            .closest_preceding(&target, skip)
            .unwrap_or_else(|| self.ring.successor());
        let me = self.ring.me;
        let msg = PeerMsg::PeerFind {
            target,
            hops: 0,
            last_hop: false,
            reply_to: me.addr,
        };
        self.request(
            next.addr,
            msg,
            Pending::Lookup { target, purpose },
            self.cfg.request_timeout_ms,
        );
    }

    /// PEER FIND: answer the original asker if we are responsible, else forward it unchanged but for
    /// the hop count. A find sent to us as the last hop is answered unless our predecessor pointer
    /// shows a node that joined in between: then it goes back to that node, again as the last hop.
    pub(super) fn on_peer_find(
        &mut self,
        request: u64,
        target: Id,
        hops: u8,
        last_hop: bool,
        reply_to: SocketAddr,
    ) {
        if !self.joined {
            return;
        }
        if hops >= HOPS_MAX {
            log::warn!(
                "[{}] PEER FIND for {} dropped after {} hops",
                self.short(),
                target.short(),
                hops
            );
            return;
        }
        // Without a predecessor we trust a sender whose successor pointer names us.
        let answer = self.ring.owns(&target) || (last_hop && self.ring.pred.is_none());
        let (next, next_is_last) = match self.ring.pred {
            _ if answer => {
                let mut nodes = Vec::new();
                self.nodes_from_me_into(&mut nodes);
                return self.send(
                    reply_to,
                    request,
                    PeerMsg::PeerFound {
                        target,
                        hops: hops + 1,
                        nodes,
                    },
                );
            }
            Some(p) if last_hop => (p, true),
            _ => match self.ring.owner_in_succs(&target) {
                Some((_, owner)) => (owner, true),
                None => (
                    self.ring
                        .closest_preceding(&target, 0)
                        .unwrap_or_else(|| self.ring.successor()),
                    false,
                ),
            },
        };
        let msg = PeerMsg::PeerFind {
            target,
            hops: hops + 1,
            last_hop: next_is_last,
            reply_to,
        };
        self.send(next.addr, request, msg);
    }

    /// Us and our successors, appended to `nodes`: the responsible node first, then the replica
    /// holders.
    fn nodes_from_me_into(&self, nodes: &mut Vec<Peer>) {
        nodes.push(self.ring.me);
        nodes.extend(self.ring.succs().iter().take(PEERS_MAX - 1));
    }

    pub(super) fn lookup_done(&mut self, purpose: Purpose, nodes: Vec<Peer>) {
        for p in &nodes {
            self.cache.learn(*p);
        }
        match purpose {
            Purpose::Client(op) => self.client_at(op, nodes),
            Purpose::Join => self.joined_via(nodes),
            Purpose::Finger(i) => self.finger_found(i, nodes[0]),
        }
    }

    /// The responsible node and its successors are known: read or write there.
    /// `nodes` (a pooled list) goes back to the pool, or on with the request as its fallbacks.
    fn client_at(&mut self, op: ClientOp, mut nodes: Vec<Peer>) {
        if nodes.is_empty() {
            self.peer_lists.give(nodes);
            return self.client_retry(op);
        }
        let owner = nodes.remove(0);
        let rest = nodes;
        let me = self.ring.me;
        match &op.kind {
            ClientOpKind::Get if owner.id == me.id => match self.storage.get(&op.key, self.now) {
                Some(s) => {
                    let reply = ApiReply::Success {
                        key: op.key,
                        value: self.values_out.copy(s.value),
                    };
                    self.replies.push_back((op.client, reply));
                    self.peer_lists.give(rest);
                }
                // A value stored just before we took over may still sit on the next replicas.
                None => {
                    log::debug!(
                        "[{}] GET {}: not here; asking {} replica holders",
                        self.short(),
                        op.key.short(),
                        rest.len()
                    );
                    self.client_next_replica(op, rest, true)
                }
            },
            ClientOpKind::Get => self.storage_get_at(owner, op, rest, true),
            ClientOpKind::Put {
                value,
                expires,
                replication,
            } if owner.id == me.id => {
                let (value, expires, replication) = (value.clone(), *expires, *replication);
                self.peer_lists.give(rest);
                if self.store(op.key, &value, expires, replication).is_err() {
                    self.stats.put_failures += 1;
                }
            }
            ClientOpKind::Put {
                value,
                expires,
                replication,
            } => {
                let msg = PeerMsg::StoragePut {
                    ttl_ms: ttl_ms(*expires, self.now),
                    replication: *replication,
                    version: 0, // the responsible node sets it
                    key: op.key,
                    value: value.clone(),
                };
                // A write goes to the responsible node only: no fallbacks.
                self.peer_lists.give(rest);
                let what = Pending::Rpc {
                    peer: owner.addr,
                    kind: RpcKind::Client {
                        op,
                        rest: Vec::new(),
                        to_owner: true,
                    },
                };
                self.request(owner.addr, msg, what, self.cfg.request_timeout_ms);
            }
        }
    }

    fn storage_get_at(&mut self, holder: Peer, op: ClientOp, rest: Vec<Peer>, to_owner: bool) {
        let key = op.key;
        let what = Pending::Rpc {
            peer: holder.addr,
            kind: RpcKind::Client { op, rest, to_owner },
        };
        self.request(
            holder.addr,
            PeerMsg::StorageGet { key },
            what,
            self.cfg.request_timeout_ms,
        );
    }

    /// The owner did not have the value (`not_found`) or did not answer: try the next replica holder;
    /// when none is left, a miss is final and a timeout starts a new lookup.
    pub(super) fn client_next_replica(
        &mut self,
        op: ClientOp,
        mut rest: Vec<Peer>,
        not_found: bool,
    ) {
        let is_get = matches!(op.kind, ClientOpKind::Get);
        while is_get && self.now < op.deadline && !rest.is_empty() {
            let next = rest.remove(0);
            if next.id != self.ring.me.id {
                return self.storage_get_at(next, op, rest, false);
            }
        }
        self.peer_lists.give(rest);
        if not_found && !op.guessed {
            self.client_failed(op)
        } else {
            self.client_retry(op)
        }
    }

    /// Try again through another route after a short pause, unless the deadline has passed.
    pub(super) fn client_retry(&mut self, mut op: ClientOp) {
        op.attempt += 1;
        if op.attempt >= CLIENT_ATTEMPTS_MAX || self.now >= op.deadline {
            return self.client_failed(op);
        }
        let wait = (RETRY_BACKOFF_MS * op.attempt as u64).min(op.deadline.ms_since(self.now));
        let request = self.next_request;
        self.next_request += 1;
        let timer = self.deadlines.insert(self.now + wait, request);
        self.pending.insert(
            request,
            super::PendingEntry {
                what: Pending::Retry(op),
                timer,
            },
        );
    }

    pub(super) fn client_resume(&mut self, op: ClientOp) {
        self.route(op);
    }

    fn client_failed(&mut self, op: ClientOp) {
        match op.kind {
            ClientOpKind::Get => {
                self.stats.get_failures += 1;
                self.replies
                    .push_back((op.client, ApiReply::Failure { key: op.key }));
            }
            ClientOpKind::Put { .. } => {
                self.stats.put_failures += 1;
                log::warn!(
                    "[{}] PUT of {} failed: no responsible node answered in time",
                    self.short(),
                    op.key.short()
                );
            }
        }
    }

    /// Answers to STORAGE requests we sent.
    pub(super) fn storage_reply(&mut self, from: SocketAddr, kind: RpcKind, msg: PeerMsg) {
        match (kind, msg) {
            (RpcKind::Client { op, rest, .. }, PeerMsg::StorageGetSuccess { key, value, .. })
                if key == op.key =>
            {
                self.replies
                    .push_back((op.client, ApiReply::Success { key, value }));
                self.peer_lists.give(rest);
            }
            (
                RpcKind::Client { op, rest, .. },
                PeerMsg::StorageFailure {
                    reason: FailureReason::NotFound,
                    ..
                },
            ) => self.client_next_replica(op, rest, true),
            // Our view of the ring was stale: look the key up properly.
            (
                RpcKind::Client {
                    op, to_owner: true, ..
                },
                PeerMsg::StorageFailure {
                    reason: FailureReason::NotResponsible,
                    ..
                },
            ) => self.client_retry(op),
            (
                RpcKind::Client { op, rest, .. },
                PeerMsg::StorageFailure {
                    reason: FailureReason::NotResponsible,
                    ..
                },
            ) => self.client_next_replica(op, rest, true),
            (RpcKind::Client { op, .. }, PeerMsg::StoragePutSuccess { key, value_hash })
                if key == op.key =>
            {
                if let ClientOpKind::Put { value, .. } = &op.kind
                    && Id::hash(value) != value_hash
                {
                    log::warn!(
                        "[{}] {} stored {} with a wrong hash; retrying",
                        self.short(),
                        from,
                        key.short()
                    );
                    self.client_retry(op);
                }
            }
            (
                RpcKind::Client { op, .. },
                PeerMsg::StorageFailure {
                    reason: FailureReason::Refused,
                    ..
                },
            ) => {
                log::warn!(
                    "[{}] {} refused to store {} (full)",
                    self.short(),
                    from,
                    op.key.short()
                );
                self.client_failed(op);
            }
            (
                RpcKind::Push { key, value_hash },
                PeerMsg::StoragePutSuccess {
                    key: k,
                    value_hash: h,
                },
            ) => {
                if k != key || h != value_hash {
                    log::warn!(
                        "[{}] {} acknowledged {} with a wrong key or hash",
                        self.short(),
                        from,
                        key.short()
                    );
                }
            }
            (RpcKind::Push { key, .. }, PeerMsg::StorageFailure { .. }) => {
                log::warn!(
                    "[{}] {} refused a copy of {}",
                    self.short(),
                    from,
                    key.short()
                );
            }
            (kind, msg) => self.unexpected(from, msg, Pending::Rpc { peer: from, kind }),
        }
    }

    pub(super) fn on_storage_get(&mut self, from: SocketAddr, request: u64, key: Key) {
        let msg = match self.storage.get(&key, self.now) {
            Some(s) => PeerMsg::StorageGetSuccess {
                ttl_ms: ttl_ms(s.expires, self.now),
                replication: s.replication,
                version: s.version,
                key,
                value: self.values_out.copy(s.value),
            },
            None if self.not_responsible(&key) => PeerMsg::StorageFailure {
                key,
                reason: FailureReason::NotResponsible,
            },
            None => PeerMsg::StorageFailure {
                key,
                reason: FailureReason::NotFound,
            },
        };
        self.send(from, request, msg);
    }

    /// STORAGE PUT: a write to the responsible node (stored, then copied to the next successors),
    /// or a copy (`COPY_FLAG`: a replica, a repair or a hand-off, stored as it is).
    pub(super) fn on_storage_put(
        &mut self,
        from: SocketAddr,
        request: u64,
        key: Key,
        value: Bytes,
        ttl: u32,
        (replication, version): (u8, u64),
    ) {
        let ttl = (ttl as u64).min(self.cfg.ttl_max_s as u64 * 1000);
        let expires = self.now + ttl;
        let copy = replication & COPY_FLAG != 0;
        let replication = (replication & !COPY_FLAG).max(1);
        if !copy && self.not_responsible(&key) {
            let reason = FailureReason::NotResponsible;
            return self.send(from, request, PeerMsg::StorageFailure { key, reason });
        }
        // A copy older than what we hold is acknowledged and dropped: the newer write stands.
        let stored = if copy {
            self.storage
                .put(key, &value, expires, replication, version, self.now)
                .map(|_| ())
                .map_err(|e| self.refused(key, &value, e))
        } else {
            self.store(key, &value, expires, replication)
        };
        // Request id 0 asks for no answer.
        if request == 0 {
            return;
        }
        let msg = match stored {
            Ok(()) => PeerMsg::StoragePutSuccess {
                key,
                value_hash: Id::hash(&value),
            },
            Err(()) => PeerMsg::StorageFailure {
                key,
                reason: FailureReason::Refused,
            },
        };
        self.send(from, request, msg);
    }

    fn refused(&self, key: Key, value: &Bytes, e: StoreError) {
        log::warn!(
            "[{}] refused to store {} ({} bytes): {:?}",
            self.short(),
            key.short(),
            value.len(),
            e
        );
    }

    /// Our predecessor shows the key belongs to another node (without one we cannot tell, and accept).
    fn not_responsible(&self, key: &Key) -> bool {
        self.ring.pred.is_some() && !self.ring.owns(key)
    }

    /// Stores locally as the responsible node and copies to the next `replication - 1` successors.
    /// The write gets a version past any held for the key (the wall clock, normally).
    fn store(&mut self, key: Key, value: &Bytes, expires: Time, replication: u8) -> Result<(), ()> {
        let version = self.storage.next_version(&key, self.wall_ms());
        if let Err(e) = self
            .storage
            .put(key, value, expires, replication, version, self.now)
        {
            self.refused(key, value, e);
            return Err(());
        }
        let copies = (replication as usize).saturating_sub(1);
        let copy = Outgoing {
            key,
            value: value.clone(),
            expires,
            replication,
            version,
        };
        for i in 0..copies.min(self.ring.succs().len()) {
            let p = self.ring.succs()[i];
            self.push_copy(p, &copy, false);
        }
        Ok(())
    }

    /// Sends one value to `to` as a copy; the answer's hash is checked while there is room to track it.
    pub(super) fn push(&mut self, to: Peer, copy: &Outgoing) {
        self.push_copy(to, copy, true);
    }

    /// Sends a copy; `acked` asks for an answer (hand-offs and repair, which a leave waits for).
    /// The copies a write makes go unanswered (request id 0): two messages less per PUT, and the
    /// repair rounds restore any copy that did not arrive.
    fn push_copy(&mut self, to: Peer, copy: &Outgoing, acked: bool) {
        let key = copy.key;
        let msg = PeerMsg::StoragePut {
            ttl_ms: ttl_ms(copy.expires, self.now),
            replication: copy.replication | COPY_FLAG,
            version: copy.version,
            key,
            value: copy.value.clone(),
        };
        if acked && self.pending.len() < self.cfg.pending_requests_max {
            let what = Pending::Rpc {
                peer: to.addr,
                kind: RpcKind::Push {
                    key,
                    value_hash: Id::hash(&copy.value),
                },
            };
            self.request(to.addr, msg, what, self.cfg.request_timeout_ms);
        } else {
            self.send(to.addr, 0, msg);
        }
    }

    /// A new predecessor took over the keys in `(from, new]`: give it copies (we keep ours as a replica).
    pub(super) fn hand_off(&mut self, from: Id, new: Peer) {
        let moved = self.push_range(from, new.id, new);
        if moved > 0 {
            log::info!(
                "[{}] handing {} values to {}",
                self.short(),
                moved,
                new.addr
            );
        }
    }

    /// Pushes a copy of every value with a key in `(from, to]` to `target`; returns how many.
    pub(super) fn push_range(&mut self, from: Id, to: Id, target: Peer) -> usize {
        let copies = self.copy_out(from, to, usize::MAX, |_, _| true);
        for copy in &copies {
            self.push(target, copy);
        }
        copies.len()
    }

    /// The live values with a key in `(from, to]` that `keep` selects, in ring order while their
    /// value bytes stay within `bytes_max`, copied out for sending.
    pub(super) fn copy_out(
        &mut self,
        from: Id,
        to: Id,
        bytes_max: usize,
        keep: impl Fn(&Key, &Stored) -> bool,
    ) -> Vec<Outgoing> {
        let mut budget = bytes_max;
        self.storage
            .range(from, to, self.now)
            .filter(|(k, s)| keep(k, s))
            .map_while(|(k, s)| {
                budget = budget.checked_sub(s.value.len())?;
                Some((k, s))
            })
            .map(|(key, s)| Outgoing {
                key,
                value: self.values_out.copy(s.value),
                expires: s.expires,
                replication: s.replication,
                version: s.version,
            })
            .collect()
    }

    /// The operator view (INFO REPLY).
    pub(super) fn info(&self) -> PeerMsg {
        let primary = match self.ring.pred {
            Some(p) => self.storage.range(p.id, self.ring.me.id, self.now).count(),
            None => self.storage.len(),
        };
        PeerMsg::InfoReply(NodeInfo {
            node: self.ring.me,
            pred: self.ring.pred,
            succs: self.ring.succs().to_vec(),
            values_primary: primary as u32,
            values_replica: (self.storage.len() - primary) as u32,
            bytes_stored: self.storage.bytes_used() as u64,
        })
    }
}

/// A stored value copied out of the store, on its way to another node.
pub(super) struct Outgoing {
    pub key: Key,
    pub value: Bytes,
    pub expires: Time,
    pub replication: u8,
    pub version: u64,
}

fn ttl_ms(expires: Time, now: Time) -> u32 {
    expires.ms_since(now).min(u32::MAX as u64) as u32
}
