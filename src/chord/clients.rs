//! Client requests: a DHT GET or PUT routed to the key's responsible node (here, through the
//! successor list, the routing cache's guess, or a lookup), the replica holders tried in turn, retries
//! through other routes, and exactly one answer per GET. Owns the client operations in flight, the
//! clients that hung up (done once none of their GETs is in flight), and a pool of holder lists. Reads and writes local values through [`Values`]; no part calls it.

use super::admission;
use super::context::{Ctx, Part, Requests};
use super::quorum::QuorumReads;
use super::routing;
use super::values::{Values, ttl_ms};
use super::{ClientId, Output};
use crate::config::ReadQuorum;
use crate::id::{Id, Key};
use crate::msg::{FailureReason, Held, Peer, PeerMsg};
use crate::storage::Writer;
use crate::time::Time;
use crate::wire::api::{ApiReply, ApiRequest};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

/// Lookups a client request may start before it is given up (each takes another first hop).
const ATTEMPTS_MAX: usize = 8;
/// Pause before retrying a client request, times the attempt number.
const RETRY_BACKOFF_MS: u64 = 50;
/// Holder lists the pool keeps at most.
const PEER_LISTS_MAX: usize = 64;

/// A client's request while it is routed.
#[derive(Debug)]
struct ClientOp {
    client: ClientId,
    key: Key,
    kind: OpKind,
    deadline: Time,
    attempt: usize,
    /// Routed on a guess (the routing cache, a successor's list): a miss then means "look it up",
    /// not "not found".
    guessed: bool,
    /// Counted among its client's requests in flight (from its first message on; a request
    /// answered here at once is never counted).
    counted: bool,
}

#[derive(Debug)]
enum OpKind {
    Get,
    Put {
        value: Bytes,
        expires: Time,
        replication: u8,
    },
}

/// Whom a STORAGE request went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asked {
    /// The node believed responsible: "not responsible" means our view is stale.
    Owner,
    /// A replica holder.
    Replica,
}

/// How a holder let us down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Miss {
    /// It answered that it has no such value.
    NotFound,
    /// It did not answer.
    NoAnswer,
}

/// What a client request waits for.
#[derive(Debug)]
enum Waiting {
    /// PEER FOUND for the op's key.
    Lookup(ClientOp),
    /// The answer of a holder, with the holders still to try.
    Holder {
        op: ClientOp,
        rest: Vec<Peer>,
        asked: Asked,
    },
    /// A pause before routing again; no message is in flight.
    Retry(ClientOp),
    /// One holder's answer to a majority read.
    Quorum { id: u64 },
}

pub(super) struct Clients {
    requests: Requests<Waiting>,
    lists: PeerLists,
    /// Clients that hung up with GETs unanswered: done once none of theirs is in flight. (Hang-ups
    /// are rare, so the requests table is searched then rather than a count kept per GET.)
    hung_up: BTreeSet<ClientId>,
    /// Requests in flight per client (no entry: none), bounded by `client_requests_max` each.
    in_flight: BTreeMap<ClientId, u32>,
    /// Majority reads waiting for their holders.
    quorums: QuorumReads<ClientOp>,
}

impl Clients {
    pub fn new(ctx: &Ctx) -> Clients {
        Clients {
            requests: Requests::new(Part::Clients, ctx.cfg.pending_requests_max),
            lists: PeerLists::default(),
            hung_up: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            quorums: QuorumReads::default(),
        }
    }

    pub fn requests_len(&self) -> usize {
        self.requests.len()
    }

    /// A request from an API client. TTL and replication are hints: clamped to our policy.
    pub fn on_request(
        &mut self,
        ctx: &mut Ctx,
        values: &mut Values,
        client: ClientId,
        req: ApiRequest,
    ) {
        let (key, kind) = match req {
            ApiRequest::Get { key } => {
                ctx.stats.client_gets += 1;
                (key, OpKind::Get)
            }
            ApiRequest::Put {
                ttl_s,
                replication,
                key,
                value,
            } => {
                ctx.stats.client_puts += 1;
                let ttl_ms = ttl_s.clamp(1, ctx.cfg.ttl_max_s) as u64 * 1000;
                let replication =
                    replication.clamp(ctx.cfg.replication_min, ctx.cfg.replication_max);
                let expires = ctx.now + ttl_ms;
                (
                    key,
                    OpKind::Put {
                        value,
                        expires,
                        replication,
                    },
                )
            }
        };
        let op = ClientOp {
            client,
            key,
            kind,
            deadline: ctx.now + ctx.cfg.lookup_timeout_ms,
            attempt: 0,
            guessed: false,
            counted: false,
        };
        // One client may not take every slot: past its share its requests fail at once.
        let busy = self.in_flight.get(&client).copied().unwrap_or(0) as usize;
        if self.requests.is_full() || busy >= ctx.cfg.client_requests_max {
            ctx.stats.client_requests_refused += 1;
            log::debug!(
                "[{}] client {client}: {busy} requests in flight, {} in all; refusing one",
                ctx.short(),
                self.requests.len()
            );
            return self.failed(ctx, op);
        }
        self.route(ctx, values, op);
    }

    /// The op is about to wait for a peer: it counts among its client's requests in flight.
    fn count(&mut self, op: &mut ClientOp) {
        if !op.counted {
            op.counted = true;
            *self.in_flight.entry(op.client).or_default() += 1;
        }
    }

    /// The op has ended.
    fn uncount(&mut self, op: &ClientOp) {
        if op.counted
            && let Some(n) = self.in_flight.get_mut(&op.client)
        {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(&op.client);
            }
        }
    }

    /// The client will send nothing more: it is done once every GET it sent is answered.
    pub fn on_hung_up(&mut self, ctx: &mut Ctx, client: ClientId) {
        if self.gets_in_flight(client) {
            self.hung_up.insert(client);
        } else {
            ctx.output(Output::ClientDone { client });
        }
    }

    /// The client's connection is gone: its answers, if any still come, go nowhere.
    pub fn on_gone(&mut self, client: ClientId) {
        self.hung_up.remove(&client);
    }

    fn gets_in_flight(&self, client: ClientId) -> bool {
        let mine = |op: &ClientOp| op.client == client && matches!(op.kind, OpKind::Get);
        self.quorums.ops().any(mine)
            || self.requests.any(|what| match what {
                Waiting::Lookup(op) | Waiting::Holder { op, .. } | Waiting::Retry(op) => mine(op),
                Waiting::Quorum { .. } => false,
            })
    }

    /// Sends a request on its way: answered here, by a node we know to be responsible, by the
    /// routing cache's guess, or after a lookup.
    fn route(&mut self, ctx: &mut Ctx, values: &mut Values, mut op: ClientOp) {
        op.guessed = false;
        if !ctx.joined {
            return self.retry(ctx, op);
        }
        let key = op.key;
        let mut nodes = self.lists.take();
        if ctx.ring.owns(&key) {
            ctx.stats.lookups_local += 1;
            routing::nodes_from_me_into(ctx, &mut nodes);
            return self.at_holders(ctx, values, op, nodes);
        }
        if op.attempt == 0 && guess_holders(ctx, &mut op, &mut nodes) {
            return self.at_holders(ctx, values, op, nodes);
        }
        self.lists.give(nodes);
        self.count(&mut op);
        let skip = op.attempt;
        // A GET rides on the lookup (FIND VALUE): the responsible node answers with the value. A
        // majority read needs every holder's answer, so it looks the holders up first.
        let read = matches!(op.kind, OpKind::Get) && ctx.cfg.read_quorum != ReadQuorum::Majority;
        let what = Waiting::Lookup(op);
        if let Err(Waiting::Lookup(op)) =
            routing::find(ctx, &mut self.requests, (key, read), skip, what)
        {
            self.failed(ctx, op);
        }
    }

    /// The responsible node (`nodes[0]`) and its successors are known: read or write there.
    /// `nodes` (a pooled list) goes back to the pool, or on with the request as its fallbacks.
    fn at_holders(
        &mut self,
        ctx: &mut Ctx,
        values: &mut Values,
        op: ClientOp,
        mut nodes: Vec<Peer>,
    ) {
        if nodes.is_empty() {
            self.lists.give(nodes);
            return self.retry(ctx, op);
        }
        let is_get = matches!(op.kind, OpKind::Get);
        if is_get && ctx.cfg.read_quorum == ReadQuorum::Majority {
            return self.read_majority(ctx, values, op, nodes);
        }
        let owner = nodes.remove(0);
        let rest = nodes;
        let here = owner.id == ctx.ring.me.id;
        match &op.kind {
            OpKind::Get if here => match values.read(ctx, &op.key) {
                Some(value) => {
                    let reply = ApiReply::Success { key: op.key, value };
                    self.answer(ctx, &op, reply);
                    self.lists.give(rest);
                }
                // A value stored just before we took over may still sit on the next replicas.
                None => self.next_holder(ctx, op, rest, Miss::NotFound),
            },
            OpKind::Get => self.ask_holder(ctx, owner, op, rest, Asked::Owner),
            OpKind::Put {
                value,
                expires,
                replication,
            } if here => {
                self.lists.give(rest);
                if values
                    .write(ctx, op.key, value, (*expires, *replication), Writer::ANY)
                    .is_err()
                {
                    ctx.stats.put_failures += 1;
                }
                self.uncount(&op);
            }
            OpKind::Put { .. } => {
                // A write goes to the responsible node only: no fallbacks.
                self.lists.give(rest);
                self.write_at(ctx, owner, op);
            }
        }
    }

    /// STORAGE PUT of a client's write to the responsible node (which sets the version).
    fn write_at(&mut self, ctx: &mut Ctx, owner: Peer, mut op: ClientOp) {
        self.count(&mut op);
        let OpKind::Put {
            value,
            expires,
            replication,
        } = &op.kind
        else {
            unreachable!("a write")
        };
        let msg = PeerMsg::StoragePut {
            ttl_ms: ttl_ms(*expires, ctx.now),
            replication: *replication,
            version: 0,
            key: op.key,
            value: value.clone(),
        };
        let what = Waiting::Holder {
            op,
            rest: Vec::new(),
            asked: Asked::Owner,
        };
        if let Err(Waiting::Holder { op, .. }) = self.requests.send(ctx, owner.addr, msg, what) {
            self.failed(ctx, op);
        }
    }

    fn ask_holder(
        &mut self,
        ctx: &mut Ctx,
        holder: Peer,
        mut op: ClientOp,
        rest: Vec<Peer>,
        asked: Asked,
    ) {
        self.count(&mut op);
        let msg = PeerMsg::StorageGet { key: op.key };
        let what = Waiting::Holder { op, rest, asked };
        if let Err(Waiting::Holder { op, .. }) = self.requests.send(ctx, holder.addr, msg, what) {
            self.failed(ctx, op);
        }
    }

    /// The holder did not have the value or did not answer: try the next replica holder; when none
    /// is left, a miss on a sure route is final, anything else is retried through another route.
    fn next_holder(&mut self, ctx: &mut Ctx, op: ClientOp, mut rest: Vec<Peer>, miss: Miss) {
        let is_get = matches!(op.kind, OpKind::Get);
        while is_get && ctx.now < op.deadline && !rest.is_empty() {
            let next = rest.remove(0);
            if next.id != ctx.ring.me.id {
                return self.ask_holder(ctx, next, op, rest, Asked::Replica);
            }
        }
        self.lists.give(rest);
        if miss == Miss::NotFound && !op.guessed {
            self.failed(ctx, op)
        } else {
            self.retry(ctx, op)
        }
    }

    /// Try again through another route after a short pause, unless the deadline has passed.
    fn retry(&mut self, ctx: &mut Ctx, mut op: ClientOp) {
        op.attempt += 1;
        if op.attempt >= ATTEMPTS_MAX || ctx.now >= op.deadline {
            return self.failed(ctx, op);
        }
        let wait = (RETRY_BACKOFF_MS * op.attempt as u64).min(op.deadline.ms_since(ctx.now));
        self.count(&mut op);
        self.requests.pause(ctx, wait, Waiting::Retry(op));
    }

    /// The request has run out of routes or time: a GET gets DHT FAILURE, a PUT a log line.
    fn failed(&mut self, ctx: &mut Ctx, op: ClientOp) {
        match op.kind {
            OpKind::Get => {
                ctx.stats.get_failures += 1;
                self.answer(ctx, &op, ApiReply::Failure { key: op.key });
            }
            OpKind::Put { .. } => {
                ctx.stats.put_failures += 1;
                self.uncount(&op);
                log::warn!(
                    "[{}] PUT of {} failed: no responsible node answered in time",
                    ctx.short(),
                    op.key.short()
                );
            }
        }
    }

    /// The one answer to a GET (its op has left the requests table).
    fn answer(&mut self, ctx: &mut Ctx, op: &ClientOp, reply: ApiReply) {
        self.uncount(op);
        let client = op.client;
        ctx.output(Output::ClientReply { client, reply });
        if self.hung_up.contains(&client) && !self.gets_in_flight(client) {
            self.hung_up.remove(&client);
            ctx.output(Output::ClientDone { client });
        }
    }

    // ----- answers and failures -----

    /// An answer to one of our requests.
    pub fn on_reply(
        &mut self,
        ctx: &mut Ctx,
        values: &mut Values,
        from: SocketAddr,
        request: u64,
        msg: PeerMsg,
    ) {
        let Some(what) = self.requests.take_answer(ctx, request, from) else {
            return;
        };
        match what {
            Waiting::Lookup(op) => match msg {
                PeerMsg::PeerFound {
                    target,
                    hops,
                    nodes,
                } if target == op.key => {
                    if routing::found(ctx, from, (target, hops), &nodes) {
                        self.at_holders(ctx, values, op, nodes);
                    } else {
                        self.retry(ctx, op);
                    }
                }
                PeerMsg::ValueFound {
                    target,
                    hops,
                    nodes,
                    held,
                } if target == op.key && matches!(op.kind, OpKind::Get) => {
                    if routing::found(ctx, from, (target, hops), &nodes) {
                        self.value_found(ctx, values, op, nodes, held);
                    } else {
                        self.retry(ctx, op);
                    }
                }
                other => self.unexpected(ctx, values, from, other, Waiting::Lookup(op)),
            },
            Waiting::Holder { op, rest, asked } => {
                self.holder_answered(ctx, values, from, (op, rest, asked), msg)
            }
            Waiting::Retry(op) => self.route(ctx, values, op),
            Waiting::Quorum { id } => {
                let value = match msg {
                    PeerMsg::StorageGetSuccess {
                        key,
                        version,
                        value,
                        ..
                    } if self.quorums.op(id).is_some_and(|op| op.key == key) => {
                        Some((from.ip(), version, value))
                    }
                    _ => None,
                };
                self.quorum_answer(ctx, id, value)
            }
        }
    }

    /// The responsible node's answer to our FIND VALUE (`nodes`: it, then where to look next).
    fn value_found(
        &mut self,
        ctx: &mut Ctx,
        values: &mut Values,
        op: ClientOp,
        mut nodes: Vec<Peer>,
        held: Held,
    ) {
        match held {
            Held::Value(value) => {
                self.answer(ctx, &op, ApiReply::Success { key: op.key, value });
                self.lists.give(nodes);
            }
            // A value stored just before it took over may still sit on the next replicas.
            Held::Missing => {
                nodes.remove(0);
                self.next_holder(ctx, op, nodes, Miss::NotFound)
            }
            Held::TooLarge => self.at_holders(ctx, values, op, nodes),
        }
    }

    /// A majority read: the responsible node and its next `replication_max − 1` successors are
    /// asked at once (`holders`, a pooled list, the responsible node first).
    fn read_majority(
        &mut self,
        ctx: &mut Ctx,
        values: &mut Values,
        mut op: ClientOp,
        mut holders: Vec<Peer>,
    ) {
        holders.truncate(ctx.cfg.replication_max as usize);
        self.count(&mut op);
        let key = op.key;
        let id = self.quorums.start(op, holders.len());
        for h in &holders {
            if h.id == ctx.ring.me.id {
                let ip = ctx.me().addr.ip();
                let value = values.read_versioned(ctx, &key);
                self.quorum_answer(ctx, id, value.map(|(v, value)| (ip, v, value)));
            } else if self
                .requests
                .send(
                    ctx,
                    h.addr,
                    PeerMsg::StorageGet { key },
                    Waiting::Quorum { id },
                )
                .is_err()
            {
                self.quorum_answer(ctx, id, None);
            }
        }
        self.lists.give(holders);
    }

    /// One holder's part of a majority read (its IP, version and value); the last one answers the
    /// client. A version from the future does not vote.
    fn quorum_answer(&mut self, ctx: &mut Ctx, id: u64, value: Option<(IpAddr, u64, Bytes)>) {
        let value = value.filter(|(_, version, _)| admission::version_believable(ctx, *version));
        let Some((op, value)) = self.quorums.answer(id, value) else {
            return;
        };
        match value {
            Some(value) => {
                let reply = ApiReply::Success { key: op.key, value };
                self.answer(ctx, &op, reply);
            }
            // The holders came from a guess: look the key up before calling it missing.
            None if op.guessed => self.retry(ctx, op),
            None => self.failed(ctx, op),
        }
    }

    /// A holder's answer to STORAGE GET or PUT.
    fn holder_answered(
        &mut self,
        ctx: &mut Ctx,
        values: &mut Values,
        from: SocketAddr,
        (op, rest, asked): (ClientOp, Vec<Peer>, Asked),
        msg: PeerMsg,
    ) {
        use FailureReason::{NotFound, NotResponsible, Refused};
        match msg {
            PeerMsg::StorageGetSuccess { key, value, .. }
                if key == op.key && matches!(op.kind, OpKind::Get) =>
            {
                self.answer(ctx, &op, ApiReply::Success { key, value });
                self.lists.give(rest);
            }
            PeerMsg::StorageFailure {
                reason: NotFound, ..
            } => self.next_holder(ctx, op, rest, Miss::NotFound),
            // Our view of the ring was stale: look the key up properly, and stop guessing that node.
            PeerMsg::StorageFailure {
                reason: NotResponsible,
                ..
            } if asked == Asked::Owner => {
                ctx.cache.forget(from);
                self.retry(ctx, op)
            }
            PeerMsg::StorageFailure {
                reason: NotResponsible,
                ..
            } => self.next_holder(ctx, op, rest, Miss::NotFound),
            PeerMsg::StoragePutSuccess { key, value_hash }
                if key == op.key && matches!(op.kind, OpKind::Put { .. }) =>
            {
                self.write_acknowledged(ctx, from, op, value_hash)
            }
            PeerMsg::StorageFailure {
                reason: Refused, ..
            } => {
                log::warn!(
                    "[{}] {} refused to store {} (full)",
                    ctx.short(),
                    from,
                    op.key.short()
                );
                self.failed(ctx, op);
            }
            other => {
                let what = Waiting::Holder { op, rest, asked };
                self.unexpected(ctx, values, from, other, what)
            }
        }
    }

    /// The responsible node took the write; a wrong hash means it stored something else.
    fn write_acknowledged(
        &mut self,
        ctx: &mut Ctx,
        from: SocketAddr,
        op: ClientOp,
        value_hash: Id,
    ) {
        if let OpKind::Put { value, .. } = &op.kind
            && Id::hash(value) != value_hash
        {
            log::warn!(
                "[{}] {} stored {} with a wrong hash; retrying",
                ctx.short(),
                from,
                op.key.short()
            );
            return self.retry(ctx, op);
        }
        self.uncount(&op);
    }

    fn unexpected(
        &mut self,
        ctx: &mut Ctx,
        values: &mut Values,
        from: SocketAddr,
        msg: PeerMsg,
        what: Waiting,
    ) {
        log::warn!(
            "[{}] {} answered {:?} with type {}",
            ctx.short(),
            from,
            what,
            msg.msg_type()
        );
        self.gave_up(ctx, values, what);
    }

    /// A request's deadline passed (or a retry's pause is over).
    /// A holder that did not answer leaves the routing cache: the next request for its keys takes
    /// a lookup rather than the same silent guess (a node gone for good stays cached otherwise).
    pub fn on_timeout(&mut self, ctx: &mut Ctx, values: &mut Values, request: u64) {
        if let Some((what, peer)) = self.requests.take_with_peer(ctx, request) {
            if let (Waiting::Holder { .. }, Some(peer)) = (&what, peer) {
                ctx.cache.forget(peer);
            }
            self.gave_up(ctx, values, what);
        }
    }

    pub fn on_unreachable(&mut self, ctx: &mut Ctx, values: &mut Values, peer: SocketAddr) {
        for what in self.requests.take_to(ctx, peer) {
            self.gave_up(ctx, values, what);
        }
    }

    /// What follows a request that got no usable answer.
    fn gave_up(&mut self, ctx: &mut Ctx, values: &mut Values, what: Waiting) {
        match what {
            Waiting::Lookup(op) => self.retry(ctx, op),
            Waiting::Holder { op, rest, .. } => self.next_holder(ctx, op, rest, Miss::NoAnswer),
            Waiting::Retry(op) => self.route(ctx, values, op),
            Waiting::Quorum { id } => self.quorum_answer(ctx, id, None),
        }
    }
}

/// Does the routing cache know the nodes on either side of `key` closely enough that the first
/// after it is likely its holder? Only if they lie no further apart than twice the mean spacing of
/// our own successors: a wider gap most likely hides nodes we never heard of, and a wrong guess
/// costs a round trip before the lookup (measured on a simulated WAN: GET p50 above h + 3 delays).
fn cache_dense_at(ctx: &Ctx, key: &Id) -> bool {
    let (succs, me) = (ctx.ring.succs(), ctx.ring.me.id);
    let (Some(last), Some(before), Some(after)) = (
        succs.last(),
        ctx.cache.last_before(key),
        ctx.cache.first_after(key),
    ) else {
        return false;
    };
    let twice_the_spacing = me.distance_to(&last.id).scaled(2, succs.len() as u128);
    before.id.distance_to(&after.id) <= twice_the_spacing
}

/// A first attempt's shortcut to the key's holders: our successor list when it covers the key,
/// else the routing cache's guess where it is dense around the key (unless it names us: then our
/// predecessor knows better). Marks the op guessed where the holders may be stale.
fn guess_holders(ctx: &mut Ctx, op: &mut ClientOp, nodes: &mut Vec<Peer>) -> bool {
    if let Some((i, _)) = ctx.ring.owner_in_succs(&op.key) {
        ctx.stats.lookups_local += 1;
        nodes.extend_from_slice(&ctx.ring.succs()[i..]);
        // Entries past the first come from our successor's list and may be stale.
        op.guessed = i > 0;
        return true;
    }
    // A majority read takes its holders from a real lookup, never from the cache's guess.
    if matches!(op.kind, OpKind::Get) && ctx.cfg.read_quorum == ReadQuorum::Majority {
        return false;
    }
    if !cache_dense_at(ctx, &op.key) && !ctx.cache.known_responsible(&op.key) {
        return false;
    }
    let more = ctx.cfg.replication_max as usize - 1;
    ctx.cache.holders_into(&op.key, ctx.ring.me, more, nodes);
    if nodes[0].id != ctx.ring.me.id {
        ctx.stats.lookups_cached += 1;
        op.guessed = true;
        return true;
    }
    nodes.clear();
    false
}

/// Reused `Vec<Peer>` buffers for the holder lists client requests carry, so that routing a request
/// allocates nothing once the pool is warm.
#[derive(Default)]
struct PeerLists {
    free: Vec<Vec<Peer>>,
}

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

#[cfg(test)]
mod tests {
    use super::super::{Input, Node, Output};
    use crate::config::Config;
    use crate::id::Id;
    use crate::time::Time;
    use crate::wire::api::ApiRequest;
    use std::net::SocketAddr;

    /// A node joining through a peer that never answers: its GETs wait in retries.
    fn joining_node() -> Node {
        let mut cfg = Config::default().node;
        cfg.bootstrap = vec!["127.0.0.9:9".parse().unwrap()];
        let addr: SocketAddr = "127.0.0.2:7000".parse().unwrap();
        Node::new(cfg, addr, 1, Time(0))
    }

    fn outputs(node: &mut Node) -> Vec<Output> {
        std::iter::from_fn(|| node.poll_output()).collect()
    }

    fn get(client: u64) -> Input {
        let key = Id::hash(b"k");
        Input::ClientRequest {
            client,
            req: ApiRequest::Get { key },
        }
    }

    #[test]
    fn a_hung_up_client_is_done_only_after_its_last_answer() {
        let mut node = joining_node();
        node.handle_input(get(7), Time(1));
        node.handle_input(Input::ClientHungUp { client: 7 }, Time(2));
        let out = outputs(&mut node);
        assert!(
            !out.iter().any(|o| matches!(o, Output::ClientDone { .. })),
            "{out:?}"
        );
        // The GET runs out of time: its failure comes first, then the client is done.
        let mut now = Time(2);
        let mut seen = Vec::new();
        while now < Time(10_000) {
            now = node.poll_timeout().unwrap().max(now);
            node.handle_input(Input::Timeout, now);
            seen.extend(
                outputs(&mut node).into_iter().filter(|o| {
                    matches!(o, Output::ClientReply { .. } | Output::ClientDone { .. })
                }),
            );
        }
        assert!(
            matches!(
                seen.as_slice(),
                [
                    Output::ClientReply { client: 7, .. },
                    Output::ClientDone { client: 7 }
                ]
            ),
            "{seen:?}"
        );
    }

    #[test]
    fn one_client_cannot_take_every_request_slot() {
        let mut node = joining_node();
        let max = Config::default().node.client_requests_max;
        for _ in 0..max + 5 {
            node.handle_input(get(1), Time(1));
        }
        let failed_at_once = outputs(&mut node)
            .iter()
            .filter(|o| matches!(o, Output::ClientReply { client: 1, .. }))
            .count();
        assert_eq!(failed_at_once, 5);
        node.handle_input(get(2), Time(2));
        let out = outputs(&mut node);
        assert!(
            out.is_empty(),
            "another client's GET waits its turn: {out:?}"
        );
    }

    #[test]
    fn a_client_with_nothing_in_flight_is_done_at_once_and_a_gone_one_is_forgotten() {
        let mut node = joining_node();
        node.handle_input(Input::ClientHungUp { client: 3 }, Time(1));
        assert!(outputs(&mut node).contains(&Output::ClientDone { client: 3 }));
        node.handle_input(get(4), Time(2));
        node.handle_input(Input::ClientHungUp { client: 4 }, Time(3));
        node.handle_input(Input::ClientGone { client: 4 }, Time(4));
        let _ = outputs(&mut node);
        let mut now = Time(4);
        while now < Time(10_000) {
            now = node.poll_timeout().unwrap().max(now);
            node.handle_input(Input::Timeout, now);
            let out = outputs(&mut node);
            assert!(!out.contains(&Output::ClientDone { client: 4 }), "{out:?}");
        }
    }
}
