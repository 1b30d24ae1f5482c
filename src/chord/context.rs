//! What the parts of the node share, and nothing more: the configuration, `now`, the ring view
//! (pointers, fingers, the routing cache), the outputs, the periodic timers, request deadlines and
//! the events the parts publish for each other. Beyond `values` (which `clients` and `repair` read
//! and write through) the parts do not call each other; the shell ([`super::Node`]) reads the
//! published [`RingEvent`]s and calls whom they concern.

use super::Output;
use super::cache::PeerCache;
use super::departed::Departed;
use super::forwards::Forwards;
use super::identity::Identities;
use super::ring::Ring;
use super::timers::{Periodic, Timers};
use crate::config::NodeConfig;
use crate::msg::{Frame, Peer, PeerMsg};
use crate::time::{Prng, Time};
use crate::wheel::{TimerKey, TimerWheel};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

/// Periodic timer jitter, in percent either side.
const JITTER_PERCENT: u64 = 20;

/// Which part sent a request: the low two bits of its id, so its answer and its deadline go back to
/// that part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Part {
    Maintenance = 0,
    Clients = 1,
    Values = 2,
    Repair = 3,
}

impl Part {
    pub fn of(request: u64) -> Part {
        match request & 3 {
            0 => Part::Maintenance,
            1 => Part::Clients,
            2 => Part::Values,
            _ => Part::Repair,
        }
    }
}

/// What one part did that another must hear of (published to the shell, which routes it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RingEvent {
    /// Maintenance adopted `new` as predecessor: the values in its new range go to it.
    NewPredecessor { old: Option<Peer>, new: Peer },
    /// Our predecessor left gracefully: its range is ours now, repair it soon.
    PredecessorLeft,
    /// Rebalancing: we move to `slot`, joining again through `via`. Our values go to our
    /// successor first (as at a leave), then maintenance leaves and re-joins.
    Move { slot: u8, via: SocketAddr },
    /// A FIND VALUE reached us, responsible for its key: answer it with what we hold.
    ReadHere(super::routing::Find),
}

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
    /// Values handed to a new predecessor, or to the successor when leaving or moving.
    pub values_handed_on: u64,
    /// Copies a nearly full node dropped once it was past their holders.
    pub copies_dropped: u64,
    /// Maintenance messages not sent because the round's budget was spent.
    pub maintenance_suppressed: u64,
    /// Times a lost neighbour answered from another ring (a healed partition) and we began merging.
    pub ring_merges: u64,
    /// Rebalancing: invitations sent, and moves made (each a leave and a join at another slot).
    pub rebalance_invitations: u64,
    pub rebalance_moves: u64,
    /// STORAGE PUTs from peers refused: a copy from a non-holder, a version from the future, a
    /// peer over its stored-bytes rate.
    pub puts_refused: u64,
    /// Client requests failed at once: the client's share (`client_requests_max`) or the whole
    /// table (`pending_requests_max`) was taken.
    pub client_requests_refused: u64,
    /// What the driver refused (connections, rate limits, slow frames), as it last said.
    pub driver_refusals: u64,
    /// PEER FINDs sent on for others (reroutes included); of those, found unreachable and sent on
    /// again (or answered by us), and found unreachable with no hop left (see `forwards.rs`).
    pub finds_forwarded: u64,
    pub finds_rerouted: u64,
    pub finds_given_up: u64,
    /// Forwarded PEER FINDs whose next hop sent no FIND TAKEN within the per-hop timeout (each
    /// then rerouted or given up, and counted there too).
    pub finds_hop_timeouts: u64,
    /// PEER FINDs that reached us again with the same hop count (copies), dropped.
    pub finds_repeated: u64,
}

pub(super) struct Ctx {
    pub cfg: NodeConfig,
    pub ring: Ring,
    /// Nodes seen recently: the asker's one-hop guess at a key's holders, and hints.
    pub cache: PeerCache,
    /// The identity rule, applied to every peer we hear of.
    pub ids: Identities,
    /// Identities that announced their leave lately: not taken from second-hand lists.
    pub departed: Departed,
    /// PEER FINDs forwarded for others and not yet taken, rerouted if their next hop is
    /// unreachable or silent; with their per-hop deadlines and the peers' round trips.
    pub forwards: Forwards,
    /// Part of a ring (maintenance sets it).
    pub joined: bool,
    /// Handing values on before exiting (set by the leave input).
    pub leaving: bool,
    pub now: Time,
    pub rng: Prng,
    pub stats: Stats,
    pub timers: Timers,
    /// Wall-clock milliseconds at `now == 0` (the driver's), for write versions.
    pub epoch_ms: u64,
    out: VecDeque<Output>,
    deadlines: TimerWheel<u64>,
    next_request: u64,
    events: Vec<RingEvent>,
}

impl Ctx {
    pub fn new(cfg: NodeConfig, me: Peer, seed: u64, now: Time) -> Ctx {
        Ctx {
            ring: Ring::new(me, cfg.successors),
            cache: PeerCache::new(cfg.routing_cache_max),
            ids: Identities::new(cfg.id_slots_per_ip, cfg.test_trust_any_id),
            departed: Departed::default(),
            forwards: Forwards::new(now),
            cfg,
            joined: false,
            leaving: false,
            now,
            rng: Prng::new(seed ^ u64::from_be_bytes(me.id.0[..8].try_into().unwrap())),
            stats: Stats::default(),
            timers: Timers::default(),
            epoch_ms: 0,
            out: VecDeque::new(),
            deadlines: TimerWheel::new(10, 256, now),
            next_request: 1,
            events: Vec::new(),
        }
    }

    pub fn me(&self) -> Peer {
        self.ring.me
    }

    /// Joined and not leaving: only then do we answer the checks by which neighbours keep us
    /// in their ring view (a restarted process on a stale identity must let them time out).
    pub fn in_ring(&self) -> bool {
        self.joined && !self.leaving
    }

    /// Our short id, for logs (one process may run thousands of nodes).
    pub fn short(&self) -> String {
        self.ring.me.id.short()
    }

    pub fn wall_ms(&self) -> u64 {
        self.epoch_ms + self.now.as_ms()
    }

    pub fn output(&mut self, o: Output) {
        self.out.push_back(o);
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Sends `msg`; `request` 0 asks for no answer, an answer carries the request's id.
    pub fn send(&mut self, to: SocketAddr, request: u64, msg: PeerMsg) {
        self.output(Output::Transmit(super::Transmit {
            to,
            frame: Frame { request, msg },
        }));
    }

    /// Arms `timer` to fire `base_ms` from now, jittered.
    pub fn schedule(&mut self, timer: Periodic, base_ms: u64) {
        let at = self.now + self.rng.jitter(base_ms, JITTER_PERCENT);
        self.timers.set(timer, at);
    }

    pub fn publish(&mut self, e: RingEvent) {
        self.events.push(e);
    }

    pub fn take_events(&mut self) -> Vec<RingEvent> {
        std::mem::take(&mut self.events)
    }

    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// A new request id for `part` with a deadline at `at`.
    /// A request id: a counter (unique) with 22 random bits below it (a stranger cannot guess the
    /// id of a request to answer it falsely), and the part in the lowest two bits.
    fn new_request(&mut self, part: Part, at: Time) -> (u64, TimerKey) {
        let unguessable = self.rng.next_u64() & 0x3f_ffff;
        let request = self.next_request << 24 | unguessable << 2 | part as u64;
        self.next_request += 1;
        (request, self.deadlines.insert(at, request))
    }

    /// Request ids whose deadline has passed.
    pub fn expired_requests(&mut self) -> Vec<u64> {
        let mut expired = Vec::new();
        self.deadlines.expire(self.now, &mut expired);
        expired
    }

    /// The next request deadline or per-hop forward deadline.
    pub fn next_deadline(&self) -> Option<Time> {
        [
            self.deadlines.next_deadline(),
            self.forwards.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn deadlines_len(&self) -> usize {
        self.deadlines.len()
    }
}

/// One part's outstanding requests: what each waits for, to whom it went, and its deadline.
pub(super) struct Requests<T> {
    part: Part,
    max: usize,
    open: BTreeMap<u64, Open<T>>,
}

struct Open<T> {
    what: T,
    /// `None` for a pause (a retry's backoff), which waits on nobody.
    peer: Option<SocketAddr>,
    /// Who may answer: the peer asked, or (a PEER FIND, answered by the node it reaches) anyone.
    answered_by: AnsweredBy,
    timer: TimerKey,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AnsweredBy {
    ThePeerAsked,
    Anyone,
}

impl<T> Requests<T> {
    pub fn new(part: Part, max: usize) -> Requests<T> {
        Requests {
            part,
            max,
            open: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_full(&self) -> bool {
        self.open.len() >= self.max
    }

    /// Sends `msg` to `to` and remembers `what` until the answer or `request_timeout_ms`. When
    /// this part's table is full nothing is sent and `what` comes back.
    pub fn send(&mut self, ctx: &mut Ctx, to: SocketAddr, msg: PeerMsg, what: T) -> Result<(), T> {
        self.send_answered_by(ctx, (to, msg), what, AnsweredBy::ThePeerAsked)
    }

    /// [`Self::send`] for a PEER FIND, whose answer comes from whichever node it reaches.
    pub fn send_find(
        &mut self,
        ctx: &mut Ctx,
        to: SocketAddr,
        msg: PeerMsg,
        what: T,
    ) -> Result<(), T> {
        self.send_answered_by(ctx, (to, msg), what, AnsweredBy::Anyone)
    }

    fn send_answered_by(
        &mut self,
        ctx: &mut Ctx,
        (to, msg): (SocketAddr, PeerMsg),
        what: T,
        answered_by: AnsweredBy,
    ) -> Result<(), T> {
        if self.is_full() {
            return Err(what);
        }
        let at = ctx.now + ctx.cfg.request_timeout_ms;
        let (request, timer) = ctx.new_request(self.part, at);
        let open = Open {
            what,
            peer: Some(to),
            answered_by,
            timer,
        };
        self.open.insert(request, open);
        ctx.send(to, request, msg);
        Ok(())
    }

    /// Waits `ms` with `what` and no message (it comes back through the part's timeout).
    pub fn pause(&mut self, ctx: &mut Ctx, ms: u64, what: T) {
        let (request, timer) = ctx.new_request(self.part, ctx.now + ms);
        let open = Open {
            what,
            peer: None,
            answered_by: AnsweredBy::ThePeerAsked,
            timer,
        };
        self.open.insert(request, open);
    }

    /// The entry for `request` answered by `from`, removed with its deadline; `None` (and the
    /// entry stays) when `from` may not answer it: an answer counts only from the peer asked.
    pub fn take_answer(&mut self, ctx: &mut Ctx, request: u64, from: SocketAddr) -> Option<T> {
        let open = self.open.get(&request)?;
        let may_answer = match open.answered_by {
            AnsweredBy::Anyone => true,
            AnsweredBy::ThePeerAsked => open.peer == Some(from),
        };
        if !may_answer {
            log::debug!(
                "[{}] answer to {request} from {from}, not the peer asked",
                ctx.short()
            );
            return None;
        }
        self.take(ctx, request)
    }

    /// The entry for `request`, removed with its deadline.
    pub fn take(&mut self, ctx: &mut Ctx, request: u64) -> Option<T> {
        let open = self.open.remove(&request)?;
        ctx.deadlines.cancel(open.timer);
        Some(open.what)
    }

    /// The entry for `request` and the peer it went to, removed with its deadline.
    pub fn take_with_peer(
        &mut self,
        ctx: &mut Ctx,
        request: u64,
    ) -> Option<(T, Option<SocketAddr>)> {
        let open = self.open.remove(&request)?;
        ctx.deadlines.cancel(open.timer);
        Some((open.what, open.peer))
    }

    /// Removes every request waiting on `peer`.
    pub fn take_to(&mut self, ctx: &mut Ctx, peer: SocketAddr) -> Vec<T> {
        let ids: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, o)| o.peer == Some(peer))
            .map(|(r, _)| *r)
            .collect();
        ids.into_iter().filter_map(|r| self.take(ctx, r)).collect()
    }

    /// The entry for `request` if it went to `peer`.
    pub fn sent_to(&self, request: u64, peer: SocketAddr) -> Option<&T> {
        self.open
            .get(&request)
            .filter(|o| o.peer == Some(peer))
            .map(|o| &o.what)
    }

    /// Is a request `matching` outstanding?
    pub fn any(&self, matching: impl Fn(&T) -> bool) -> bool {
        self.open.values().any(|o| matching(&o.what))
    }

    /// Forgets every outstanding request (their answers will be late ones).
    pub fn clear(&mut self, ctx: &mut Ctx) {
        for open in std::mem::take(&mut self.open).into_values() {
            ctx.deadlines.cancel(open.timer);
        }
    }
}
