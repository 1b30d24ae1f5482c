//! The sans-IO Chord node: ring maintenance, routing, client requests, storage traffic and repair,
//! as a deterministic state machine.
//!
//! One input surface and one output surface: every input is an [`Input`] given to
//! [`Node::handle_input`] with `now`; outputs are drained with [`Node::poll_output`] until `None`,
//! then the driver sleeps until [`Node::poll_timeout`]. [`drive`] is that loop, shared by the reactor
//! and the simulator so they cannot drift. Nothing in here touches a socket or reads a clock.
//!
//! The node is a shell over parts that own their state and their requests (docs/ARCHITECTURE.md
//! has the map): [`maintenance`] keeps the ring, [`clients`] serves API requests, [`values`] holds
//! values and moves them, [`repair`] keeps their copies to count. They share a narrow context
//! ([`context::Ctx`]: config, `now`, the ring view, outputs, timers, request deadlines); `clients`
//! and `repair` read and write through `values`, no part calls another otherwise, and there are no
//! cycles. What one must tell another goes through the shell as a [`context::RingEvent`].
//!
//! Peers are named by their advertised P2P address. Replies to a request go to the address the
//! request came from, with the same request id; the id's low bits say which part asked.

mod admission;
mod arena;
mod cache;
mod clients;
mod context;
mod departed;
mod forwards;
mod identity;
mod lost;
mod maintenance;
mod quorum;
mod rebalance;
mod repair;
pub mod ring;
mod routing;
mod timers;
mod values;

use crate::config::NodeConfig;
use crate::id::Id;
use crate::msg::{Frame, Peer, PeerMsg};
use crate::storage::Storage;
use crate::time::Time;
use crate::wire::api::{ApiReply, ApiRequest};
use clients::Clients;
use context::{Ctx, Part, RingEvent};
use maintenance::Maintenance;
use repair::Repair;
use std::net::SocketAddr;
use timers::Periodic;
use values::Values;

pub use context::Stats;
pub use maintenance::{REQUESTS_MAX as MAINTENANCE_REQUESTS_MAX, SENDS_PER_ROUND, WarmTables};
pub use routing::HOPS_MAX;

/// Names one API client connection; chosen by the driver, opaque to the core.
pub type ClientId = u64;

/// Everything that happens to a node, one value per event: a run recorded as `(now, Input)` pairs
/// replays exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A request from an API client.
    ClientRequest { client: ClientId, req: ApiRequest },
    /// The client will send nothing more (it half-closed): answer what it asked, then
    /// [`Output::ClientDone`].
    ClientHungUp { client: ClientId },
    /// The client's connection is gone.
    ClientGone { client: ClientId },
    /// A frame from a peer; `from` is the peer's advertised address (the address we dialled, or the
    /// one its HELLO named), else its socket address (like the `ring` command's).
    PeerFrame { from: SocketAddr, frame: Frame },
    /// The driver could not reach `peer` (connect failed, the connection broke).
    PeerUnreachable { peer: SocketAddr },
    /// Time has passed: fire what is due. Safe to give early or twice.
    Timeout,
    /// Leave the ring gracefully: tell the neighbours, hand our values on
    /// ([`Node::leave_done`] says when that is acknowledged).
    Leave,
    /// How many connections and frames the driver has refused so far (reported in INFO).
    DriverRefusals { total: u64 },
    /// The wall clock (milliseconds since the Unix epoch) at the driver's time 0: write versions
    /// come from it, so that a later write wins across nodes as long as clocks roughly agree.
    WallClock { epoch_ms: u64 },
}

/// What the node asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Transmit(Transmit),
    ClientReply {
        client: ClientId,
        reply: ApiReply,
    },
    /// The peer connection known as `conn` speaks for `node` (it said HELLO): frames to
    /// `node.addr` may go on it.
    PeerNamed {
        conn: SocketAddr,
        node: Peer,
    },
    /// A client that hung up has every answer: close it once they are sent.
    ClientDone {
        client: ClientId,
    },
}

/// A message for the driver to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub frame: Frame,
}

pub struct Node {
    ctx: Ctx,
    maintenance: Maintenance,
    clients: Clients,
    values: Values,
    repair: Repair,
}

impl Node {
    /// A node with advertised P2P address `addr`; it starts a ring alone when `cfg.bootstrap` is
    /// empty, otherwise it joins through the bootstrap peers.
    pub fn new(cfg: NodeConfig, addr: SocketAddr, seed: u64, now: Time) -> Node {
        let me = Peer {
            id: cfg
                .node_id
                .unwrap_or_else(|| Id::of_addr_slot(addr, cfg.id_slot.unwrap_or(0))),
            addr,
        };
        let bootstrap: Vec<SocketAddr> = cfg
            .bootstrap
            .iter()
            .copied()
            .filter(|a| *a != addr)
            .collect();
        let mut ctx = Ctx::new(cfg, me, seed, now);
        let maintenance = Maintenance::new(&mut ctx, bootstrap);
        let repair = Repair::new(&mut ctx);
        log::info!(
            "[{}] node at {} ({})",
            me.id.short(),
            addr,
            if ctx.joined { "new ring" } else { "joining" }
        );
        Node {
            clients: Clients::new(&ctx),
            values: Values::new(&ctx),
            ctx,
            maintenance,
            repair,
        }
    }

    /// The frame that opens every connection this node dials (HELLO: who is speaking).
    pub fn greeting(&self) -> Frame {
        Frame::new(
            0,
            PeerMsg::Hello {
                node: self.ctx.me(),
            },
        )
    }

    // ----- the input surface -----

    pub fn handle_input(&mut self, input: Input, now: Time) {
        self.ctx.now = now;
        let ctx = &mut self.ctx;
        match input {
            Input::ClientRequest { client, req } => {
                self.clients.on_request(ctx, &mut self.values, client, req)
            }
            Input::ClientHungUp { client } => self.clients.on_hung_up(ctx, client),
            Input::ClientGone { client } => self.clients.on_gone(client),
            Input::PeerFrame { from, frame } => self.on_peer_frame(from, frame),
            Input::PeerUnreachable { peer } => self.on_peer_unreachable(peer),
            Input::Timeout => self.on_timeout(),
            Input::Leave => {
                ctx.leaving = true;
                // Values first: our successor takes copies only from its predecessor, which we
                // stop being once it reads our LEAVE (one connection keeps them in order).
                if let Some(succ) = ctx.ring.succs().first().copied() {
                    self.values.hand_over(ctx, succ);
                }
                self.maintenance.announce_leave(ctx);
            }
            Input::WallClock { epoch_ms } => ctx.epoch_ms = epoch_ms,
            Input::DriverRefusals { total } => ctx.stats.driver_refusals = total,
        }
        self.route_events();
    }

    /// A frame from a peer: requests go to the part that serves them, answers to the part whose
    /// request they answer.
    fn on_peer_frame(&mut self, from: SocketAddr, frame: Frame) {
        let Frame { request, msg } = frame;
        let ctx = &mut self.ctx;
        if asks_for_ring_pointers(&msg) {
            self.maintenance.tell_of_move(ctx, from);
        }
        match msg {
            PeerMsg::Hello { node } => self.on_hello(from, node),
            // Outside a ring we keep silent to the membership checks: a neighbour that still
            // points at our identity (we crashed or left and came back) drops it on the timeout
            // instead of routing our own join back to us.
            PeerMsg::Ping | PeerMsg::PredecessorGet | PeerMsg::PredecessorsGet
                if !ctx.in_ring() => {}
            PeerMsg::Ping => ctx.send(from, request, PeerMsg::Pong),
            PeerMsg::InfoGet => {
                let info = self.values.info(ctx);
                ctx.send(from, request, PeerMsg::InfoReply(Box::new(info)));
            }
            PeerMsg::PeerFind {
                target,
                hops,
                last_hop,
                reply_to,
                read,
            } => {
                let find = routing::Find {
                    request,
                    target,
                    hops,
                    last_hop,
                    reply_to,
                    read,
                };
                routing::on_peer_find(ctx, from, find)
            }
            PeerMsg::FindTaken => {
                routing::on_find_taken(ctx, from, request);
                self.maintenance.on_find_taken(ctx, from, request);
            }
            PeerMsg::PredecessorGet => self.maintenance.on_predecessor_get(ctx, from, request),
            PeerMsg::PredecessorsGet => self.maintenance.on_predecessors_get(ctx, from, request),
            PeerMsg::PredecessorSet { node } => self.maintenance.on_notify(ctx, from, node),
            PeerMsg::SuccessorHint { node } => self.maintenance.on_successor_hint(ctx, node),
            PeerMsg::Predecessors { preds } if request == 0 => {
                self.maintenance.predecessors_answered(ctx, from, preds)
            }
            msg @ (PeerMsg::Spare { .. } | PeerMsg::Invite { .. }) => {
                self.on_rebalancing(from, msg)
            }
            PeerMsg::Leave(departure) => self.maintenance.on_leave(ctx, from, *departure),
            msg @ (PeerMsg::StorageGet { .. } | PeerMsg::StoragePut { .. }) => {
                self.values.on_request(ctx, from, request, msg)
            }
            msg @ PeerMsg::Sync { .. } => {
                self.repair.on_sync(ctx, &self.values, from, request, msg)
            }
            answer => self.on_answer(from, request, answer),
        }
    }

    /// SPARE and INVITE (rebalancing): an invitation is weighed against our store's fill.
    fn on_rebalancing(&mut self, from: SocketAddr, msg: PeerMsg) {
        let ctx = &mut self.ctx;
        match msg {
            PeerMsg::Spare { holder, pred, succ } => {
                self.maintenance.on_spare(ctx, from, holder, (pred, succ))
            }
            PeerMsg::Invite { slot, fill } => {
                let own_fill = self.values.fill_percent(ctx);
                self.maintenance
                    .on_invite(ctx, from, (slot, fill), own_fill)
            }
            _ => {}
        }
    }

    /// HELLO names the peer at the other end of a connection: believed only with an id its
    /// address may hold.
    fn on_hello(&mut self, from: SocketAddr, node: Peer) {
        let ctx = &mut self.ctx;
        if !ctx.ids.hello_fits(from, &node) {
            return log::warn!(
                "[{}] {} said HELLO as {} ({}): not an id its address may hold; not believed",
                ctx.short(),
                from,
                node.id.short(),
                node.addr
            );
        }
        ctx.departed.revive(&node);
        ctx.output(Output::PeerNamed { conn: from, node })
    }

    /// An answer to one of our requests, for the part that sent it.
    fn on_answer(&mut self, from: SocketAddr, request: u64, msg: PeerMsg) {
        let ctx = &mut self.ctx;
        match Part::of(request) {
            Part::Maintenance => self.maintenance.on_reply(ctx, from, request, msg),
            Part::Clients => self
                .clients
                .on_reply(ctx, &mut self.values, from, request, msg),
            Part::Values => self.values.on_reply(ctx, from, request, msg),
            Part::Repair => self
                .repair
                .on_reply(ctx, &mut self.values, from, request, msg),
        }
    }

    fn on_peer_unreachable(&mut self, peer: SocketAddr) {
        let ctx = &mut self.ctx;
        self.maintenance.on_unreachable(ctx, peer);
        // After maintenance: the dead peer is out of the ring view, so rerouted finds avoid it.
        routing::on_unreachable(ctx, peer);
        self.clients.on_unreachable(ctx, &mut self.values, peer);
        self.values.on_unreachable(ctx, peer);
        self.repair.on_unreachable(ctx, peer);
    }

    /// Periodic timers, then request deadlines, then a slice of the expiry sweep.
    fn on_timeout(&mut self) {
        let now = self.ctx.now;
        for timer in timers::ALL {
            if !self.ctx.timers.take_due(timer, now) {
                continue;
            }
            match timer {
                // A leaver only hands its values on: a stabilize round would notify its successor
                // and have the LEAVE'd identity adopted again.
                _ if self.ctx.leaving => {}
                Periodic::Repair => {
                    self.repair.on_timer(&mut self.ctx, &self.values);
                    self.values.doom_extra_copies(&self.ctx);
                }
                Periodic::Rebalance => {
                    let load = self.values.load(&self.ctx);
                    self.maintenance.on_rebalance_timer(&mut self.ctx, load)
                }
                _ => self.maintenance.on_timer(&mut self.ctx, timer),
            }
        }
        for request in self.ctx.expired_requests() {
            let ctx = &mut self.ctx;
            match Part::of(request) {
                Part::Maintenance => self.maintenance.on_timeout(ctx, request),
                Part::Clients => self.clients.on_timeout(ctx, &mut self.values, request),
                Part::Values => self.values.on_timeout(ctx, request),
                Part::Repair => self.repair.on_timeout(ctx, request),
            }
        }
        routing::on_timeout(&mut self.ctx);
        self.values.sweep(&mut self.ctx);
    }

    /// Delivers what the parts published to the parts it concerns.
    fn route_events(&mut self) {
        while self.ctx.has_events() {
            for event in self.ctx.take_events() {
                match event {
                    RingEvent::NewPredecessor { old, new } => {
                        let from = old.map_or(self.ctx.me().id, |p| p.id);
                        self.values.hand_off(&mut self.ctx, from, new);
                        self.repair.deep_soon(&mut self.ctx);
                    }
                    RingEvent::PredecessorLeft => self.repair.soon(&mut self.ctx),
                    RingEvent::Move { slot, via } => {
                        let ctx = &mut self.ctx;
                        if let Some(succ) = ctx.ring.succs().first().copied() {
                            self.values.hand_over(ctx, succ);
                        }
                        self.values.forget_all(ctx);
                        self.maintenance.move_to(ctx, slot, via);
                    }
                    RingEvent::ReadHere(find) => {
                        let value = self.values.read(&self.ctx, &find.target);
                        routing::answer_read(&mut self.ctx, find, value);
                    }
                }
            }
        }
    }

    // ----- the output surface -----

    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.ctx.poll_output()
    }

    /// When [`Input::Timeout`] should next be given.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        [
            self.ctx.timers.next(),
            self.ctx.next_deadline(),
            self.values.next_sweep(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ----- views -----

    pub fn me(&self) -> Peer {
        self.ctx.me()
    }

    pub fn joined(&self) -> bool {
        self.ctx.joined
    }

    pub fn predecessor(&self) -> Option<Peer> {
        self.ctx.ring.pred
    }

    pub fn successors(&self) -> &[Peer] {
        self.ctx.ring.succs()
    }

    pub fn storage(&self) -> &Storage {
        self.values.storage()
    }

    pub fn stats(&self) -> &Stats {
        &self.ctx.stats
    }

    /// Installs converged tables at once (a simulator's warm start), before any input.
    pub fn warm_start(&mut self, tables: WarmTables) {
        self.maintenance.warm_start(&mut self.ctx, tables);
    }

    /// True once a leave has started.
    pub fn leaving(&self) -> bool {
        self.ctx.leaving
    }

    /// True once a leave has started and every value handed on is acknowledged (or timed out).
    pub fn leave_done(&self) -> bool {
        self.ctx.leaving && self.values.copies_done()
    }

    /// Requests outstanding, per part: maintenance, clients, values, repair.
    pub fn requests_outstanding(&self) -> [usize; 4] {
        [
            self.maintenance.requests_len(),
            self.clients.requests_len(),
            self.values.requests_len(),
            self.repair.requests_len(),
        ]
    }

    /// The executable spec, checked by the simulator after every event.
    pub fn check_invariants(&self) {
        self.ctx.ring.check_invariants();
        let [maintenance, clients, values, repair] = self.requests_outstanding();
        assert!(
            maintenance <= MAINTENANCE_REQUESTS_MAX,
            "maintenance requests unbounded"
        );
        let max = self.ctx.cfg.pending_requests_max;
        assert!(
            clients <= max && values <= max && repair <= max,
            "requests unbounded"
        );
        assert_eq!(
            maintenance + clients + values + repair,
            self.ctx.deadlines_len(),
            "every outstanding request has one deadline"
        );
        assert!(self.values.storage().bytes_used() <= self.ctx.cfg.storage_bytes_max);
    }
}

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
    /// Drivers without connections (the simulator names links by address) ignore it.
    fn peer_named(&mut self, _conn: SocketAddr, _node: Peer) {}
    /// Drivers without connections ignore it.
    fn client_done(&mut self, _client: ClientId) {}
}

/// Outputs kept in lists, for drivers that deliver them later (the simulator, tests).
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

/// Drains every output of `node` into `out` and returns when to give [`Input::Timeout`] next. Call
/// it after every input.
pub fn drive(node: &mut Node, out: &mut impl Outputs) -> Option<Time> {
    drain(node, out);
    node.poll_timeout()
}

/// Drains the outputs only: for a driver that handles a batch of inputs and asks for the next
/// timeout once at the end of the batch (the reactor, per frame read).
pub fn drain(node: &mut Node, out: &mut impl Outputs) {
    while let Some(o) = node.poll_output() {
        match o {
            Output::Transmit(t) => out.transmit(t),
            Output::ClientReply { client, reply } => out.client_reply(client, reply),
            Output::PeerNamed { conn, node } => out.peer_named(conn, node),
            Output::ClientDone { client } => out.client_done(client),
        }
    }
}

/// Does a peer sending `msg` take the receiver for a ring neighbour (it may credit the answer to an
/// identity the receiver left: see `Maintenance::tell_of_move`)?
fn asks_for_ring_pointers(msg: &PeerMsg) -> bool {
    matches!(
        msg,
        PeerMsg::PredecessorGet
            | PeerMsg::PredecessorsGet
            | PeerMsg::Ping
            | PeerMsg::PredecessorSet { .. }
    )
}
