//! Ring maintenance as Zave corrected it (../shared/CHORD.md). Owns joining (contacts and backoff),
//! stabilize and its second step, notify/rectify, successor hints, finger refresh, predecessor
//! checks, a neighbour's leave, and the requests these send. It alone writes the ring view
//! (`ctx.ring`, `ctx.joined`); a new predecessor is published as a [`RingEvent`].
//!
//! Every new successor or predecessor has answered us (or spoken to us) before it is adopted.
//! Failures cannot multiply traffic: the messages maintenance originates beyond each round's own
//! request spend a per-round budget ([`SENDS_PER_ROUND`]), a node already being probed is not probed
//! twice, a failed probe of a hinted node ends nothing, and at most [`REQUESTS_MAX`] requests are
//! outstanding.
//!
//! `placement` chooses the slot a joiner takes and moves nodes to even the ring out (issue 11);
//! `merge` tries lost neighbours again so that rings split by a partition merge (issue 12).

mod merge;
mod placement;

use super::context::{Ctx, Part, Requests, RingEvent};
use super::lost::LostPeers;
use super::rebalance::Spares;
use super::ring::{FINGERS, Ring};
use super::routing;
use super::timers::Periodic;
use crate::balance::Candidate;
use crate::id::{Id, in_half_open, in_open};
use crate::msg::{Departure, Peer, PeerMsg};
use crate::time::Time;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Messages maintenance may originate per stabilize round beyond the round's own PREDECESSOR GET
/// and notify: probes of closer successors, rectify pings. Hints are not counted: each answers a
/// notify (two at most per notify received).
pub const SENDS_PER_ROUND: u32 = 16;
/// Maintenance requests outstanding at once.
pub const REQUESTS_MAX: usize = 32;
/// Failed requests to our last successor, with nobody else known, before we believe it dead.
const LAST_RESORT_CHANCES: u32 = 3;
/// Peers remembered to re-join through.
const CONTACTS_MAX: usize = 16;
/// How much more often stabilize runs while our successor or predecessor keeps changing.
const UNSETTLED_SPEEDUP: u64 = 8;
/// After this many steps of one round's walk back along predecessor pointers, stabilize also
/// looks its own id up ([`Rpc::Shortcut`]): a mass join can put hundreds of nodes between a node and
/// the successor it knows, a walk of seconds at one round trip per node.
const WALK_STEPS_BEFORE_SHORTCUT: u32 = 3;
/// The longest pause between two lookups of our own id ([`Maintenance::check_own_place`]), in
/// stabilize periods.
const OWN_PLACE_BACKOFF_MAX: u64 = 64;
/// How long (in request timeouts) a joiner retries at the normal pace after its contact last said
/// FIND TAKEN (a contact still joining itself says so, then drops the find: 4096 nodes joining
/// within 5 s, each through one added before it, wait up to about 20 s for their contacts);
/// after it the pause doubles per failed pass over the candidates, up to [`JOIN_BACKOFF_MAX_MS`].
const JOIN_PATIENCE_TIMEOUTS: u64 = 30;
/// The longest pause between join attempts: a dead contact is asked once a minute.
const JOIN_BACKOFF_MAX_MS: u64 = 60_000;
/// What a maintenance request waits for.
#[derive(Debug)]
enum Rpc {
    /// PEER FIND for our own id through a contact.
    Join,
    /// PEER FIND for `me + 2^i`.
    Finger(usize),
    /// PREDECESSOR GET to the first successor.
    Stabilize,
    /// PREDECESSOR GET to a node that may lie between us and our successor.
    Candidate { candidate: Peer, origin: Origin },
    /// PREDECESSOR GET to the notifier a lone node may take as successor.
    Adopt { candidate: Peer },
    /// PEER FIND for our own id through a neighbour we lost: does its ring hold us?
    Reunite,
    /// PEER FIND for our own id through a node a long stabilize walk reached, or through our
    /// farthest finger now and then: the node that answers is our successor as the ring sees it.
    Shortcut,
    /// PING to a successor-list entry that has not answered us yet.
    Confirm,
    /// Before joining: PEER FIND for the id of one of our slots (where would it land?).
    SlotFind { slot: u8 },
    /// ... and PREDECESSOR GET to the node found: the range the slot id would split.
    SlotPred { slot: u8, succ: Peer },
    /// Rebalancing: PEER FIND for one of our spare slot ids, to register it with its owner.
    SpareFind { slot: u8 },
    /// Invited to a slot: PEER FIND for its id (where does it land now?) ... When a nearly full
    /// node invited us to split its bytes (`split_for`, its address), the slot id must still land
    /// in its range, and we move at once.
    MoveFind {
        slot: u8,
        split_for: Option<SocketAddr>,
    },
    /// ... and PREDECESSOR GET to the node found.
    MovePred { slot: u8, succ: Peer },
    /// PREDECESSORS GET to the predecessor (periodic): does it live, and who precedes it?
    CheckPredecessor,
    /// PING to the predecessor before a notifier that loses to it is told so (Zave's rectify).
    Rectify,
    /// PING to the node our dead predecessor named as its own: adopted if it answers.
    FarPred { candidate: Peer },
}

/// What a warm start installs ([`Maintenance::warm_start`]).
pub struct WarmTables {
    /// Our id (the simulator may place nodes on the slot a join by choice would take).
    pub id: Id,
    pub pred: Peer,
    pub succs: Vec<Peer>,
    /// Our predecessor's predecessors, nearest first.
    pub far_preds: Vec<Peer>,
    /// (finger index, node): the successor of `me + 2^index`.
    pub fingers: Vec<(usize, Peer)>,
}

/// Why a candidate successor is probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// Stabilize's second step: if it fails, the round ends with its notify.
    Round,
    /// A hint, a notifier or a cached node: if it fails, nothing follows.
    Hint,
}

pub(super) struct Maintenance {
    requests: Requests<Rpc>,
    /// Peers to (re-)join through: the bootstrap list, then successors lost while alone.
    contacts: Vec<SocketAddr>,
    /// Which join candidate the next attempt uses.
    join_next: usize,
    /// Join attempts that failed since the last success (for the backoff).
    join_failures: u32,
    /// Join attempts that failed after the patience ran out (they set the backoff).
    join_impatient_failures: u32,
    /// When the node started (re)joining.
    join_started: Time,
    join_stuck_logged: bool,
    last_resort_failures: u32,
    /// Successor and predecessor at the last stabilize round: while they keep changing (a ring
    /// forming or healing) rounds come `UNSETTLED_SPEEDUP` times as often.
    pointers_at_stabilize: (Option<Id>, Option<Id>),
    /// The next finger fix_fingers refreshes.
    finger_next: usize,
    /// When [`Self::check_own_place`] looks our id up next, and the pause after that one.
    own_place_check_at: Time,
    own_place_wait_ms: u64,
    /// Steps stabilize's second step took this round (see [`WALK_STEPS_BEFORE_SHORTCUT`]).
    walk_steps: u32,
    /// What is left of this round's [`SENDS_PER_ROUND`].
    sends_left: u32,
    /// When the predecessor last spoke to us (notify, pong, adoption).
    pred_heard: Time,
    /// A notifier that lost to our predecessor while we check that the predecessor lives.
    rectify_waiting: Option<Peer>,
    /// Neighbours dropped as unreachable, tried again with backoff (a partition may have healed).
    lost: LostPeers,
    /// The slot choice before joining (no `id_slot` configured), until it is made.
    slot_choice: Option<SlotChoice>,
    /// Other nodes' spare slot ids in our range (rebalancing).
    spares: Spares,
    /// When we last moved (rebalancing), if ever.
    moved_at: Option<Time>,
    /// The spare slot the next rebalance period registers.
    spare_next: u8,
    /// Per spare slot, the node a lookup found responsible for its id, and the registrations sent
    /// straight to it since (bounded by `id_slots_per_ip`).
    spare_owners: BTreeMap<u8, (Peer, u8)>,
    /// The identities we left (the latest [`LEFT_IDS_MAX`]).
    left_ids: Vec<Peer>,
    /// Which peer was told (LEAVE) which of those identities is gone, and when.
    told_of_move: Vec<(SocketAddr, Id, Time)>,
}

/// Where our slot ids would land, learned before joining: the lookups still out, the answers.
#[derive(Default)]
struct SlotChoice {
    asking: bool,
    /// The contact the lookups go through.
    via: Option<SocketAddr>,
    /// Requests out.
    pending: usize,
    /// The contact's ring answered at least one lookup.
    answered: bool,
    found: Vec<Candidate>,
}

impl Maintenance {
    /// Starts a ring alone when `bootstrap` is empty, else joins through it at once.
    pub fn new(ctx: &mut Ctx, bootstrap: Vec<SocketAddr>) -> Maintenance {
        ctx.joined = bootstrap.is_empty();
        if !ctx.joined {
            ctx.timers.set(Periodic::Join, ctx.now);
        }
        ctx.schedule(Periodic::Stabilize, ctx.cfg.stabilize_interval_ms);
        ctx.schedule(Periodic::FixFingers, ctx.cfg.fix_fingers_interval_ms);
        ctx.schedule(
            Periodic::CheckPredecessor,
            ctx.cfg.check_predecessor_interval_ms,
        );
        // Only nodes free to choose their slot move (a pinned slot or id stays put).
        if ctx.cfg.rebalance_interval_ms > 0
            && ctx.cfg.id_slot.is_none()
            && ctx.cfg.node_id.is_none()
        {
            ctx.schedule(Periodic::Rebalance, ctx.cfg.rebalance_interval_ms);
        }
        Maintenance {
            requests: Requests::new(Part::Maintenance, REQUESTS_MAX),
            contacts: bootstrap,
            join_next: 0,
            join_failures: 0,
            join_impatient_failures: 0,
            join_started: ctx.now,
            join_stuck_logged: false,
            last_resort_failures: 0,
            pointers_at_stabilize: (None, None),
            finger_next: 0,
            sends_left: SENDS_PER_ROUND,
            walk_steps: 0,
            own_place_check_at: ctx.now,
            own_place_wait_ms: 0,
            pred_heard: ctx.now,
            rectify_waiting: None,
            lost: LostPeers::default(),
            slot_choice: (ctx.cfg.id_slot.is_none() && ctx.cfg.node_id.is_none() && !ctx.joined)
                .then(SlotChoice::default),
            spares: Spares::default(),
            moved_at: None,
            spare_next: 0,
            spare_owners: BTreeMap::new(),
            left_ids: Vec::new(),
            told_of_move: Vec::new(),
        }
    }

    pub fn requests_len(&self) -> usize {
        self.requests.len()
    }

    // ----- timers -----

    pub fn on_timer(&mut self, ctx: &mut Ctx, timer: Periodic) {
        match timer {
            Periodic::Join => self.join(ctx),
            Periodic::Stabilize => {
                self.sends_left = SENDS_PER_ROUND;
                self.walk_steps = 0;
                self.stabilize(ctx);
                self.check_own_place(ctx);
                self.try_lost(ctx);
                self.schedule_stabilize(ctx);
            }
            Periodic::FixFingers => {
                self.fix_fingers(ctx);
                ctx.schedule(Periodic::FixFingers, ctx.cfg.fix_fingers_interval_ms);
            }
            Periodic::CheckPredecessor => {
                self.check_predecessor(ctx);
                let base = ctx.cfg.check_predecessor_interval_ms;
                ctx.schedule(Periodic::CheckPredecessor, base);
            }
            Periodic::Rebalance => unreachable!("the shell's: it needs the store's load"),
            Periodic::Repair => unreachable!("repair's timer"),
        }
    }

    fn schedule_stabilize(&mut self, ctx: &mut Ctx) {
        let now = (
            ctx.ring.succs().first().map(|p| p.id),
            ctx.ring.pred.map(|p| p.id),
        );
        let settled = std::mem::replace(&mut self.pointers_at_stabilize, now) == now;
        let base = if settled {
            ctx.cfg.stabilize_interval_ms
        } else {
            ctx.cfg.stabilize_interval_ms / UNSETTLED_SPEEDUP
        };
        ctx.schedule(Periodic::Stabilize, base);
    }

    /// Sends a maintenance request; a full table (`REQUESTS_MAX`) drops it, counted: every
    /// request is periodic or a probe, and the next round asks again.
    fn ask(&mut self, ctx: &mut Ctx, to: SocketAddr, msg: PeerMsg, what: Rpc) {
        if self.requests.send(ctx, to, msg, what).is_err() {
            ctx.stats.maintenance_suppressed += 1;
        }
    }

    /// Spends one message of the round's budget; false when it is spent.
    fn spend(&mut self, ctx: &mut Ctx) -> bool {
        if self.sends_left == 0 {
            ctx.stats.maintenance_suppressed += 1;
            return false;
        }
        self.sends_left -= 1;
        true
    }

    // ----- join -----

    /// Join: look up our own id through a contact; the responsible node answers with itself and its
    /// successors, which become our successor list (Zave's join, in one recursive lookup). Also
    /// re-joins a node that lost every successor. Contacts are tried in turn, then every node we
    /// have heard of.
    fn join(&mut self, ctx: &mut Ctx) {
        let alone = ctx.joined && ctx.ring.succs().is_empty();
        if ctx.joined && !alone {
            return;
        }
        let candidates = self.join_candidates(ctx);
        if candidates.is_empty() {
            return;
        }
        let via = candidates[self.join_next % candidates.len()];
        self.join_next += 1;
        if self.slot_choice.is_some() {
            return self.ask_slots(ctx, via);
        }
        log::debug!("[{}] joining through {}", ctx.short(), via);
        let me = ctx.me().id;
        if routing::find_via(ctx, &mut self.requests, via, me, Rpc::Join).is_err() {
            self.schedule_join(ctx, candidates.len());
        }
    }

    /// The contacts, then the other nodes we know of (never us).
    fn join_candidates(&self, ctx: &Ctx) -> Vec<SocketAddr> {
        let me = ctx.me().addr;
        let mut all = self.contacts.clone();
        for p in ctx.cache.peers() {
            if p.addr != me && !all.contains(&p.addr) {
                all.push(p.addr);
            }
        }
        all
    }

    fn join_failed(&mut self, ctx: &mut Ctx) {
        self.join_failures += 1;
        let candidates = self.join_candidates(ctx).len().max(1);
        if self.join_failures as usize >= candidates && !self.join_stuck_logged {
            self.join_stuck_logged = true;
            log::warn!(
                "[{}] cannot join: none of the {} peers known answered; retrying with backoff",
                ctx.short(),
                candidates
            );
        }
        self.schedule_join(ctx, candidates);
    }

    /// The next attempt, through the next candidate: at the normal pace while the patience lasts,
    /// then after a pause that doubles per failed pass over the candidates.
    fn schedule_join(&mut self, ctx: &mut Ctx, candidates: usize) {
        let base = ctx.cfg.request_timeout_ms;
        let patient = ctx.now.ms_since(self.join_started) < JOIN_PATIENCE_TIMEOUTS * base;
        let wait = if patient {
            base
        } else {
            self.join_impatient_failures += 1;
            let passes = self.join_impatient_failures as usize / candidates.max(1);
            (base << passes.min(16)).min(JOIN_BACKOFF_MAX_MS)
        };
        ctx.schedule(Periodic::Join, wait);
    }

    /// FIND TAKEN for our join's lookup: the contact lives (it may be joining itself, and drop the
    /// find), so the patience starts again: we keep asking at the normal pace rather than backing
    /// off as from a dead contact.
    pub fn on_find_taken(&mut self, ctx: &mut Ctx, from: SocketAddr, request: u64) {
        let joining = matches!(
            self.requests.sent_to(request, from),
            Some(Rpc::Join | Rpc::SlotFind { .. })
        );
        if joining && !ctx.joined {
            self.join_started = ctx.now;
        }
    }

    fn joined_via(&mut self, ctx: &mut Ctx, nodes: Vec<Peer>) {
        if ctx.joined && !ctx.ring.succs().is_empty() {
            return;
        }
        let me = ctx.ring.me;
        if let Some(twin) = nodes.first().filter(|p| p.id == me.id && p.addr != me.addr) {
            // Another node of our IP (IPv6 /64) on the same slot: the ring keeps the first.
            if !self.join_stuck_logged {
                self.join_stuck_logged = true;
                log::error!(
                    "[{}] our id is held by {} (same IP or /64, same id_slot): set another \
                     id_slot, or leave it unset to have one chosen",
                    ctx.short(),
                    twin.addr
                );
            }
            return self.join_failed(ctx);
        }
        let now = ctx.now;
        let nodes = nodes.into_iter().filter(|p| !ctx.departed.contains(p, now));
        ctx.ring.set_succs(nodes);
        if ctx.ring.succs().is_empty() {
            return self.join_failed(ctx);
        }
        ctx.joined = true;
        self.join_failures = 0;
        self.join_impatient_failures = 0;
        self.join_stuck_logged = false;
        log::info!(
            "[{}] joined the ring; successor {}",
            ctx.short(),
            ctx.ring.successor().addr
        );
        // Notify at once rather than after stabilize's round trip: the successor keeps answering
        // for our keys until it takes us as predecessor (it checks we are closer than its own).
        // After stabilize's PREDECESSOR GET, so that its answer still names the node before us.
        self.stabilize(ctx);
        self.notify_successor(ctx);
    }

    /// A simulator's warm start: the tables a converged ring gives us, every entry taken as
    /// heard from (the papers' simulators start their experiments the same way).
    pub fn warm_start(&mut self, ctx: &mut Ctx, tables: WarmTables) {
        if tables.id != ctx.ring.me.id {
            let me = Peer {
                id: tables.id,
                addr: ctx.ring.me.addr,
            };
            ctx.ring = Ring::new(me, ctx.cfg.successors);
        }
        self.slot_choice = None;
        ctx.joined = true;
        ctx.ring.pred = Some(tables.pred);
        self.pred_heard = ctx.now;
        ctx.ring.set_succs(tables.succs);
        for p in ctx.ring.succs().to_vec() {
            ctx.ring.heard_from(p.addr);
        }
        ctx.ring
            .set_far_preds(tables.far_preds, pred_chain_len(ctx));
        for (i, p) in tables.fingers {
            ctx.ring.set_finger(i, p);
        }
        // Our place is the oracle's: the checks of it start backed off all the way.
        let longest = OWN_PLACE_BACKOFF_MAX * ctx.cfg.stabilize_interval_ms;
        self.own_place_wait_ms = longest;
        self.own_place_check_at = ctx.now + longest;
    }

    // ----- stabilize -----

    /// Zave's stabilize: ask the first successor for its predecessor and successor list.
    fn stabilize(&mut self, ctx: &mut Ctx) {
        // One stabilize at a time: a round that finds the last one unanswered waits for its end
        // (its failure goes on to the next successor), so silent successors cannot pile requests up.
        let stabilizing = self
            .requests
            .any(|what| matches!(what, Rpc::Stabilize | Rpc::Adopt { .. }));
        if !ctx.joined || stabilizing {
            return;
        }
        let Some(s) = ctx.ring.succs().first().copied() else {
            // Alone: a node that notified us is our successor too, once it answers.
            if let Some(p) = ctx.ring.pred {
                let what = Rpc::Adopt { candidate: p };
                self.ask(ctx, p.addr, PeerMsg::PredecessorGet, what);
            }
            return;
        };
        self.ask(ctx, s.addr, PeerMsg::PredecessorGet, Rpc::Stabilize);
        self.confirm_successors(ctx);
        // A node we know of that lies closer than our successor (while a ring forms): probe it too
        // rather than walking back one predecessor pointer per round trip.
        let closer = closest_after(ctx, &ctx.ring.me.id, s);
        if closer.id != s.id {
            self.probe_if_closer(ctx, closer, Origin::Hint);
        }
    }

    /// Pings the successor-list entries that have not answered us yet (the list is our successor's
    /// word): until they answer, lookups do not go through them. Within the round's budget.
    fn confirm_successors(&mut self, ctx: &mut Ctx) {
        let budget = self.sends_left.min(SENDS_PER_ROUND / 2) as usize;
        for p in ctx.ring.successors_to_confirm(budget) {
            if self.spend(ctx) {
                self.ask(ctx, p.addr, PeerMsg::Ping, Rpc::Confirm);
            }
        }
    }

    /// Stabilize's second step, repeated to a fixpoint within one round (as Zave's join walks to the
    /// best predecessor): while the successor's predecessor `pred` lies between us and it, ask that
    /// node, which becomes our successor once it answers. Ends by notifying the successor.
    fn stabilize_step(&mut self, ctx: &mut Ctx, succ: Peer, pred: Option<Peer>) {
        match pred {
            Some(p) if in_open(&p.id, &ctx.ring.me.id, &succ.id) => {
                self.walk_steps += 1;
                if self.walk_steps == WALK_STEPS_BEFORE_SHORTCUT {
                    self.shortcut(ctx, p);
                }
                self.probe(ctx, p, Origin::Round);
            }
            _ => self.notify_successor(ctx),
        }
    }

    /// A walk this long means many nodes lie between us and our successor (nodes joined in a
    /// burst, or we hang off the ring's side): we look our own id up through `via`, a node of the
    /// walk, whose fingers find our true successor in O(log N) hops.
    fn shortcut(&mut self, ctx: &mut Ctx, via: Peer) {
        let me = ctx.ring.me.id;
        if self.spend(ctx) {
            let _ = routing::find_via(ctx, &mut self.requests, via.addr, me, Rpc::Shortcut);
        }
    }

    /// Now and then (backing off while the answer is our successor) we look our own id up through
    /// our farthest finger: a node that formed part of a ring early in a mass join can be left
    /// hanging off its side, its successor's predecessor being itself, while the ring has grown
    /// between them. Stabilize alone never sees it; the ring's lookups do.
    fn check_own_place(&mut self, ctx: &mut Ctx) {
        let checking = self.requests.any(|what| matches!(what, Rpc::Shortcut));
        if !ctx.joined || ctx.leaving || ctx.ring.succs().is_empty() || checking {
            return;
        }
        if ctx.now < self.own_place_check_at {
            return;
        }
        // Backing off whatever the answer (none at all included): only a closer node resets it.
        let base = ctx.cfg.stabilize_interval_ms;
        let wait = self
            .own_place_wait_ms
            .clamp(base, OWN_PLACE_BACKOFF_MAX * base);
        self.own_place_check_at = ctx.now + wait;
        self.own_place_wait_ms = wait * 2;
        let me = ctx.ring.me.id;
        if self.spend(ctx) {
            let _ = routing::find(ctx, &mut self.requests, (me, false), 0, Rpc::Shortcut);
        }
    }

    /// A lookup of our own id ([`Rpc::Shortcut`]) named `owner`: a node closer than our successor
    /// is probed as one, and the checks of [`Self::check_own_place`] come at their fastest again.
    fn successor_found(&mut self, ctx: &mut Ctx, owner: Peer) {
        let me = ctx.ring.me.id;
        let closer = ctx
            .ring
            .succs()
            .first()
            .is_some_and(|s| in_open(&owner.id, &me, &s.id));
        if closer {
            self.own_place_wait_ms = 0;
            self.probe_if_closer(ctx, owner, Origin::Hint);
        }
    }

    /// Chord's notify, our PREDECESSOR SET: "I may be your predecessor". Not counted against the
    /// round's budget (Zave: a round always ends with it); it follows a round or a round's failed
    /// step, never a hint.
    fn notify_successor(&mut self, ctx: &mut Ctx) {
        if let Some(s) = ctx.ring.succs().first().copied() {
            let msg = PeerMsg::PredecessorSet { node: ctx.ring.me };
            ctx.send(s.addr, 0, msg);
        }
    }

    /// Probes `node` as a successor when it would be a closer one; it becomes one only once it
    /// answers (and stabilize's second step walks on from there, then notifies it).
    fn probe_if_closer(&mut self, ctx: &mut Ctx, node: Peer, origin: Origin) {
        let me = ctx.ring.me.id;
        let closer = match ctx.ring.succs().first() {
            Some(s) => in_open(&node.id, &me, &s.id),
            None => node.id != me,
        };
        if ctx.joined && !ctx.leaving && closer {
            self.probe(ctx, node, origin);
        }
    }

    /// PREDECESSOR GET to a candidate successor, unless it is being probed already or the round's
    /// budget is spent (a round's own step then ends with the notify).
    fn probe(&mut self, ctx: &mut Ctx, node: Peer, origin: Origin) {
        if ctx.departed.contains(&node, ctx.now) {
            return;
        }
        let probing = self.requests.any(|what| {
            matches!(what, Rpc::Candidate { candidate, .. } | Rpc::Adopt { candidate }
                if candidate.addr == node.addr)
        });
        if probing {
            return;
        }
        if !self.spend(ctx) {
            if origin == Origin::Round {
                self.notify_successor(ctx);
            }
            return;
        }
        let what = Rpc::Candidate {
            candidate: node,
            origin,
        };
        self.ask(ctx, node.addr, PeerMsg::PredecessorGet, what);
    }

    /// A PREDECESSOR REPLY to stabilize: the successor's list becomes ours, then the second step.
    fn successor_answered(
        &mut self,
        ctx: &mut Ctx,
        from: SocketAddr,
        reply: (Option<Peer>, Vec<Peer>),
    ) {
        let s = ctx.ring.successor();
        if s.addr != from {
            return; // the list changed meanwhile; the next round asks the new successor
        }
        // Our successor applies its own tombstones: it names a departed identity again only once
        // that spoke to it itself (a node back after a leave).
        let (pred, succs) = reply;
        pred.iter()
            .chain(&succs)
            .for_each(|p| ctx.departed.revive(p));
        let (pred, succs) = believable(ctx, pred, succs);
        // A node before us is one routing may refer our predecessor's finds to while we have
        // none (see `routing::nearer_holder`).
        if let Some(p) = pred.filter(|p| p.id != ctx.ring.me.id) {
            ctx.cache.learn(p);
        }
        ctx.ring.set_succs(std::iter::once(s).chain(succs));
        ctx.ring.heard_from(s.addr);
        self.stabilize_step(ctx, s, pred);
    }

    /// A candidate answered: only now does it become our successor, unless a closer one answered
    /// meanwhile (hints race with stabilize).
    fn candidate_answered(
        &mut self,
        ctx: &mut Ctx,
        candidate: Peer,
        reply: (Option<Peer>, Vec<Peer>),
    ) {
        let me = ctx.ring.me.id;
        if ctx.departed.contains(&candidate, ctx.now) {
            return;
        }
        if let Some(s) = ctx.ring.succs().first()
            && !in_open(&candidate.id, &me, &s.id)
        {
            return;
        }
        let (pred, succs) = reply;
        let rest: Vec<Peer> = ctx.ring.succs().to_vec();
        ctx.ring
            .set_succs(std::iter::once(candidate).chain(succs).chain(rest));
        ctx.ring.heard_from(candidate.addr);
        self.stabilize_step(ctx, candidate, pred);
    }

    // ----- notify, rectify, hints -----

    /// PREDECESSOR GET from a peer: our predecessor and successor list.
    pub fn on_predecessor_get(&mut self, ctx: &mut Ctx, from: SocketAddr, request: u64) {
        let msg = PeerMsg::PredecessorReply {
            pred: ctx.ring.pred,
            succs: ctx.ring.succs().to_vec(),
        };
        ctx.send(from, request, msg);
    }

    /// Rectify: adopt the notifier when we have no predecessor or it lies between the old one and
    /// us (it just spoke to us, so it is alive). A notifier that loses to our predecessor is told of
    /// it (SUCCESSOR HINT), once we know that predecessor lives (Zave pings it first). Either way one
    /// side learns of a closer successor at once rather than at its next stabilize round.
    /// Only the speaker itself may claim to be our predecessor, with an id its address may hold.
    pub fn on_notify(&mut self, ctx: &mut Ctx, from: SocketAddr, node: Peer) {
        let me = ctx.ring.me.id;
        if node.id == me || node.addr != from || !ctx.ids.fits(&node) {
            return log_refused(ctx, from, "PREDECESSOR SET", node);
        }
        ctx.departed.revive(&node);
        ctx.cache.learn(node);
        // While a ring forms the notifier may also lie just after us (its successor pointer
        // overshoots): then it is a closer successor too.
        self.probe_if_closer(ctx, node, Origin::Hint);
        match ctx.ring.pred {
            Some(p) if p.id == node.id => self.pred_heard = ctx.now,
            Some(p) if !in_open(&node.id, &p.id, &me) => self.notifier_lost(ctx, node, p),
            _ => self.adopt_predecessor(ctx, node),
        }
    }

    /// Our predecessor `pred` lies between the notifier and us: it, or a node we know closer still,
    /// is the notifier's successor, if it lives.
    fn notifier_lost(&mut self, ctx: &mut Ctx, node: Peer, pred: Peer) {
        let fresh = ctx.now.ms_since(self.pred_heard) <= 2 * ctx.cfg.stabilize_interval_ms;
        if fresh {
            return self.hint(ctx, node, pred);
        }
        // Zave's rectify remembers the closest notifier (to us) while the predecessor is checked.
        let me = ctx.ring.me.id;
        if self
            .rectify_waiting
            .is_none_or(|w| in_open(&node.id, &w.id, &me))
        {
            self.rectify_waiting = Some(node);
        }
        let checking = self.requests.any(|what| matches!(what, Rpc::Rectify));
        if !checking && self.spend(ctx) {
            self.ask(ctx, pred.addr, PeerMsg::Ping, Rpc::Rectify);
        }
    }

    /// The predecessor answered the rectify ping: tell the waiting notifier of it.
    fn rectify_answered(&mut self, ctx: &mut Ctx, from: SocketAddr) {
        let Some(pred) = ctx.ring.pred.filter(|p| p.addr == from) else {
            return;
        };
        self.pred_heard = ctx.now;
        if let Some(node) = self.rectify_waiting.take()
            && node.id != pred.id
        {
            self.hint(ctx, node, pred);
        }
    }

    fn adopt_predecessor(&mut self, ctx: &mut Ctx, node: Peer) {
        let old = ctx.ring.pred;
        log::info!(
            "[{}] predecessor is now {} ({})",
            ctx.short(),
            node.id.short(),
            node.addr
        );
        ctx.ring.pred = Some(node);
        self.pred_heard = ctx.now;
        ctx.publish(RingEvent::NewPredecessor { old, new: node });
        self.push_pred_chain(ctx);
        // The old predecessor's successor is the notifier now (or a node we know closer still).
        if let Some(p) = old {
            self.hint(ctx, p, node);
        }
    }

    /// Tells `to` of `live` (which just spoke to us) as its closer successor, and of a node from our
    /// cache closer still, if we know one (it may be gone: the live one is named too).
    fn hint(&mut self, ctx: &mut Ctx, to: Peer, live: Peer) {
        ctx.send(to.addr, 0, PeerMsg::SuccessorHint { node: live });
        let closer = closest_after(ctx, &to.id, live);
        if closer.id != live.id {
            ctx.send(to.addr, 0, PeerMsg::SuccessorHint { node: closer });
        }
    }

    /// SUCCESSOR HINT: probe the node when it would be a closer successor.
    pub fn on_successor_hint(&mut self, ctx: &mut Ctx, node: Peer) {
        if ctx.ids.fits(&node) {
            self.probe_if_closer(ctx, node, Origin::Hint);
        }
    }

    // ----- predecessor check, fingers -----

    /// Ask the predecessor for its predecessors; if it does not answer in time it is forgotten.
    fn check_predecessor(&mut self, ctx: &mut Ctx) {
        if let Some(p) = ctx.ring.pred {
            self.ask(ctx, p.addr, PeerMsg::PredecessorsGet, Rpc::CheckPredecessor);
        }
    }

    /// Our successor learns our new predecessor now, not at its next check: should we crash, it
    /// knows whom to adopt (a node that has just joined behind us is known to no one else yet).
    fn push_pred_chain(&mut self, ctx: &mut Ctx) {
        if let Some(s) = ctx.ring.succs().first().copied() {
            let preds = ctx.ring.pred_chain(pred_chain_len(ctx)).nodes;
            ctx.send(s.addr, 0, PeerMsg::Predecessors { preds });
        }
    }

    /// Our predecessor is dead: the first live node of the chain it told us of is our predecessor
    /// now, unless a closer one notifies us first. Asked at once rather than waiting for its next
    /// stabilize round (the papers' 30 s), in which we would answer for its keys.
    fn seek_far_pred(&mut self, ctx: &mut Ctx) {
        let seeking = self
            .requests
            .any(|what| matches!(what, Rpc::FarPred { .. }));
        if seeking || ctx.ring.pred.is_some() {
            return;
        }
        if let Some(candidate) = ctx.ring.pred_chain(1).nodes.first().copied() {
            self.ask(
                ctx,
                candidate.addr,
                PeerMsg::Ping,
                Rpc::FarPred { candidate },
            );
        }
    }

    fn far_pred_answered(&mut self, ctx: &mut Ctx, candidate: Peer) {
        let me = ctx.ring.me.id;
        if ctx
            .ring
            .pred
            .is_none_or(|p| in_open(&candidate.id, &p.id, &me))
        {
            self.adopt_predecessor(ctx, candidate);
        }
    }

    /// PREDECESSORS GET: our predecessor chain, as far as copies of values travel.
    pub fn on_predecessors_get(&mut self, ctx: &mut Ctx, from: SocketAddr, request: u64) {
        let preds = ctx.ring.pred_chain(pred_chain_len(ctx)).nodes;
        ctx.send(from, request, PeerMsg::Predecessors { preds });
    }

    /// Refresh the next finger that is not simply our successor: one lookup per round.
    fn fix_fingers(&mut self, ctx: &mut Ctx) {
        if !ctx.joined || ctx.ring.succs().is_empty() {
            return;
        }
        let succ = ctx.ring.successor();
        let me = ctx.ring.me.id;
        let mut i = self.finger_next % FINGERS;
        // Fingers whose start lies before our successor all point at it: no lookup needed.
        while i < FINGERS && in_half_open(&me.add_pow2(i), &me, &succ.id) {
            ctx.ring.set_finger(i, succ);
            i += 1;
        }
        if i == FINGERS {
            self.finger_next = 0;
            return;
        }
        self.finger_next = i;
        if routing::find(
            ctx,
            &mut self.requests,
            (me.add_pow2(i), false),
            0,
            Rpc::Finger(i),
        )
        .is_err()
        {
            ctx.stats.maintenance_suppressed += 1;
        }
    }

    /// A finger lookup answered: `owner` follows `me + 2^i`, and every later finger whose start lies
    /// before `owner` points at it too.
    fn finger_found(&mut self, ctx: &mut Ctx, i: usize, owner: Peer) {
        let me = ctx.ring.me.id;
        let start = me.add_pow2(i);
        let mut j = i;
        while j < FINGERS
            && in_half_open(&me.add_pow2(j), &me, &owner.id)
            && (j == i || in_half_open(&me.add_pow2(j), &start, &owner.id))
        {
            ctx.ring.set_finger(j, owner);
            j += 1;
        }
        self.finger_next = if j >= FINGERS { 0 } else { j.max(i + 1) };
    }

    // ----- answers and failures -----

    /// An answer to one of our requests.
    pub fn on_reply(&mut self, ctx: &mut Ctx, from: SocketAddr, request: u64, msg: PeerMsg) {
        let Some(what) = self.requests.take_answer(ctx, request, from) else {
            return log_late(ctx, from, request);
        };
        match (what, msg) {
            (
                what @ (Rpc::Join | Rpc::Finger(_) | Rpc::Shortcut),
                PeerMsg::PeerFound {
                    target,
                    hops,
                    nodes,
                },
            ) => self.lookup_answered(ctx, from, what, (target, hops), nodes),
            (Rpc::SlotFind { slot }, PeerMsg::PeerFound { target, nodes, .. }) => {
                self.slot_found(ctx, from, slot, (target, nodes))
            }
            (Rpc::SlotPred { slot, succ }, PeerMsg::PredecessorReply { pred, .. }) => {
                self.slot_pred_answered(ctx, slot, succ, pred)
            }
            (Rpc::SpareFind { slot }, PeerMsg::PeerFound { target, nodes, .. }) => {
                self.spare_found(ctx, from, slot, (target, nodes))
            }
            (Rpc::MoveFind { slot, split_for }, PeerMsg::PeerFound { target, nodes, .. }) => {
                self.move_found(ctx, from, (slot, split_for), (target, nodes))
            }
            (Rpc::MovePred { slot, succ }, PeerMsg::PredecessorReply { pred, .. }) => {
                self.move_checked(ctx, slot, pred, succ)
            }
            (Rpc::Reunite, PeerMsg::PeerFound { target, nodes, .. }) => {
                self.reunite_answered(ctx, from, target, nodes)
            }
            (Rpc::Stabilize, PeerMsg::PredecessorReply { pred, succs }) => {
                self.successor_answered(ctx, from, (pred, succs))
            }
            (
                Rpc::Candidate { candidate, .. } | Rpc::Adopt { candidate },
                PeerMsg::PredecessorReply { pred, succs },
            ) => {
                ctx.cache.learn(candidate);
                let reply = believable(ctx, pred, succs);
                self.candidate_answered(ctx, candidate, reply)
            }
            (Rpc::CheckPredecessor, PeerMsg::Predecessors { preds }) => {
                self.predecessors_answered(ctx, from, preds)
            }
            (Rpc::Rectify, PeerMsg::Pong) => self.rectify_answered(ctx, from),
            (Rpc::FarPred { candidate }, PeerMsg::Pong) => self.far_pred_answered(ctx, candidate),
            (Rpc::Confirm, PeerMsg::Pong) => ctx.ring.heard_from(from),
            (what, other) => {
                log::warn!(
                    "[{}] {} answered {:?} with type {}",
                    ctx.short(),
                    from,
                    what,
                    other.msg_type()
                );
                self.gave_up(ctx, what, from);
            }
        }
    }

    /// Our predecessor answered the periodic check, or pushed its new chain unasked (request 0):
    /// it lives, and these precede it.
    pub fn predecessors_answered(&mut self, ctx: &mut Ctx, from: SocketAddr, preds: Vec<Peer>) {
        if ctx.ring.pred.is_some_and(|p| p.addr == from) {
            self.pred_heard = ctx.now;
            // Identities are checked; order is checked by `pred_chain` on every use.
            if ctx.ids.all_fit(&preds) {
                ctx.ring.set_far_preds(preds, pred_chain_len(ctx));
            }
        }
    }

    /// A PEER FOUND for our join or a finger: believed only for the target asked and when
    /// [`routing::found`] finds it believable (a join that is not goes on to the next contact).
    fn lookup_answered(
        &mut self,
        ctx: &mut Ctx,
        from: SocketAddr,
        what: Rpc,
        found: (Id, u8),
        nodes: Vec<Peer>,
    ) {
        let me = ctx.ring.me.id;
        let asked = match what {
            Rpc::Finger(i) => me.add_pow2(i),
            _ => me,
        };
        if found.0 != asked || !routing::found(ctx, from, found, &nodes) {
            return self.gave_up(ctx, what, from);
        }
        match what {
            Rpc::Finger(i) => self.finger_found(ctx, i, nodes[0]),
            Rpc::Shortcut => self.successor_found(ctx, nodes[0]),
            _ => self.joined_via(ctx, nodes),
        }
    }

    /// A request's deadline passed.
    pub fn on_timeout(&mut self, ctx: &mut Ctx, request: u64) {
        if let Some((what, Some(peer))) = self.requests.take_with_peer(ctx, request) {
            log::debug!("[{}] {:?} to {} timed out", ctx.short(), what, peer);
            self.request_failed(ctx, what, peer);
        }
    }

    /// The driver could not reach `peer`: it leaves the ring view, and our requests to it fail.
    pub fn on_unreachable(&mut self, ctx: &mut Ctx, peer: SocketAddr) {
        if self.peer_failed(ctx, peer) {
            log::info!(
                "[{}] peer {} unreachable; dropped from the routing table",
                ctx.short(),
                peer
            );
        }
        for what in self.requests.take_to(ctx, peer) {
            self.request_failed(ctx, what, peer);
        }
    }

    /// No answer: a successor or predecessor that does not answer is dead to us (Zave); a candidate
    /// that does not answer is not probed again.
    fn request_failed(&mut self, ctx: &mut Ctx, what: Rpc, peer: SocketAddr) {
        match what {
            Rpc::Stabilize | Rpc::CheckPredecessor | Rpc::FarPred { .. } => {
                self.peer_failed(ctx, peer);
            }
            Rpc::Rectify => {
                self.peer_failed(ctx, peer);
                // Zave's rectify: with the predecessor dead, the notifier that lost to it wins.
                if ctx.ring.pred.is_none()
                    && let Some(node) = self.rectify_waiting.take()
                {
                    self.adopt_predecessor(ctx, node);
                }
            }
            Rpc::Candidate { .. } => ctx.cache.forget(peer),
            _ => {}
        }
        self.gave_up(ctx, what, peer);
    }

    /// What follows a request that got no usable answer.
    fn gave_up(&mut self, ctx: &mut Ctx, what: Rpc, peer: SocketAddr) {
        match what {
            Rpc::Join => self.join_failed(ctx),
            Rpc::SlotFind { .. } | Rpc::SlotPred { .. } => self.slot_failed(ctx),
            // Go on with the next successor at once; a kept successor waits for the next round.
            Rpc::Stabilize if ctx.ring.successor().addr != peer => self.stabilize(ctx),
            Rpc::Candidate {
                origin: Origin::Round,
                ..
            } => self.notify_successor(ctx),
            _ => {}
        }
    }

    /// Drops a peer that failed us. Our last successor, with nobody else known, gets a few more
    /// chances first: dropping it makes us a ring of one, which a lossy link must not cause lightly.
    /// Once alone, we keep trying to re-join through the peers we lost (and the bootstrap list).
    fn peer_failed(&mut self, ctx: &mut Ctx, peer: SocketAddr) -> bool {
        if ctx.ring.is_last_resort(peer) {
            self.last_resort_failures += 1;
            if self.last_resort_failures < LAST_RESORT_CHANCES {
                return false;
            }
            log::warn!(
                "[{}] last successor {} is gone; alone until a re-join succeeds",
                ctx.short(),
                peer
            );
            self.contacts.retain(|a| *a != peer);
            self.contacts.push(peer);
            if self.contacts.len() > CONTACTS_MAX {
                self.contacts.remove(0);
            }
            self.join_started = ctx.now;
            ctx.schedule(Periodic::Join, ctx.cfg.request_timeout_ms);
        }
        self.last_resort_failures = 0;
        ctx.cache.forget(peer);
        if let Some(neighbour) = ctx.ring.neighbour(peer) {
            let wait = ctx.cfg.stabilize_interval_ms;
            self.lost.remember(neighbour, ctx.now, wait);
        }
        let known = ctx.ring.remove(peer);
        self.seek_far_pred(ctx);
        known
    }

    // ----- leaving -----

    /// We leave: tell our successor and predecessor (Chord ToN).
    pub fn announce_leave(&mut self, ctx: &mut Ctx) {
        if ctx.ring.succs().is_empty() {
            return;
        }
        let leave = PeerMsg::Leave(Box::new(Departure {
            node: ctx.ring.me,
            pred: ctx.ring.pred,
            succs: ctx.ring.succs().to_vec(),
        }));
        // Our successor and every predecessor we know: their successor lists name us.
        let mut told: Vec<SocketAddr> = Vec::new();
        let mut to_tell = ctx.ring.pred_chain(pred_chain_len(ctx)).nodes;
        to_tell.insert(0, ctx.ring.successor());
        for p in &to_tell {
            if !told.contains(&p.addr) {
                told.push(p.addr);
                ctx.send(p.addr, 0, leave.clone());
            }
        }
    }

    /// A neighbour leaves: our successor's place goes to its successors, our predecessor's to its
    /// predecessor (whose range is ours now: published, so that repair runs soon).
    pub fn on_leave(&mut self, ctx: &mut Ctx, from: SocketAddr, departure: Departure) {
        let Departure { node, pred, succs } = departure;
        if node.addr != from {
            return log_refused(ctx, from, "LEAVE", node);
        }
        ctx.departed.add(node, ctx.now);
        ctx.cache.forget_peer(node);
        let (pred, succs) = believable(ctx, pred, succs);
        // By id and address: the address may already speak for another id (a node that moved).
        let was_pred = ctx.ring.pred == Some(node);
        let was_succ = ctx.ring.succs().contains(&node);
        if !was_pred && !was_succ {
            ctx.ring.remove_peer(node); // a finger, perhaps
            return;
        }
        log::info!("[{}] {} leaves the ring", ctx.short(), node.addr);
        let me = ctx.ring.me.id;
        let mut merged: Vec<Peer> = ctx
            .ring
            .succs()
            .iter()
            .chain(succs.iter())
            .filter(|p| **p != node)
            .copied()
            .collect();
        merged.sort_by_key(|p| me.distance_to(&p.id));
        merged.dedup_by_key(|p| p.id);
        ctx.ring.remove_peer(node);
        if was_succ {
            ctx.ring.set_succs(merged);
        }
        if was_pred {
            ctx.ring.pred = pred.filter(|p| p.id != me);
            ctx.publish(RingEvent::PredecessorLeft);
        }
    }
}

/// The node we know that follows `id` most closely, if it comes before `bound`; else `bound`.
/// While a ring forms, the node everyone notifies knows them all: one hint then suffices where
/// walking predecessor pointers would take a round trip per node.
fn closest_after(ctx: &Ctx, id: &Id, bound: Peer) -> Peer {
    ctx.cache
        .first_after(id)
        .filter(|c| in_open(&c.id, id, &bound.id))
        .unwrap_or(bound)
}

/// A peer's predecessor and successor list, without the entries whose ids their addresses may not
/// hold.
fn believable(
    ctx: &mut Ctx,
    pred: Option<Peer>,
    mut succs: Vec<Peer>,
) -> (Option<Peer>, Vec<Peer>) {
    let now = ctx.now;
    let mut ok = |p: &Peer| ctx.ids.fits(p) && !ctx.departed.contains(p, now);
    succs.retain(&mut ok);
    let pred = pred.filter(&mut ok);
    (pred, succs)
}

/// How many predecessors a node learns: those that may send it copies (`replication_max`) and
/// those whose successor lists name it (`successors`), told at once when it leaves.
fn pred_chain_len(ctx: &Ctx) -> usize {
    (ctx.cfg.replication_max as usize)
        .max(ctx.cfg.successors)
        .min(crate::msg::PEERS_MAX)
}

/// A claim we do not believe: logged at debug level (a liar may repeat it at will).
fn log_refused(ctx: &Ctx, from: SocketAddr, what: &str, node: Peer) {
    log::debug!(
        "[{}] {what} from {from} naming {} ({}) refused: not the speaker, or an id its address may not hold",
        ctx.short(),
        node.id.short(),
        node.addr
    );
}

fn log_late(ctx: &Ctx, from: SocketAddr, request: u64) {
    log::debug!(
        "[{}] late or unknown reply {} from {}",
        ctx.short(),
        request,
        from
    );
}

#[cfg(test)]
mod tests {
    use super::super::{Input, Node, Output, Transmit, test_peer};
    use crate::config::Config;
    use crate::msg::{Frame, Peer, PeerMsg};
    use crate::time::Time;

    fn sent(node: &mut Node) -> Vec<Transmit> {
        std::iter::from_fn(|| node.poll_output())
            .filter_map(|o| match o {
                Output::Transmit(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    fn frame(node: &mut Node, from: Peer, frame: Frame, now: u64) {
        let input = Input::PeerFrame {
            from: from.addr,
            frame,
        };
        node.handle_input(input, Time(now));
    }

    /// A lone node `me` whose predecessor and successor becomes B, with B's successors after it.
    fn lone_node_with_successor(me: Peer, b: Peer, b_succs: Vec<Peer>) -> Node {
        let mut cfg = Config::default().node;
        cfg.node_id = Some(me.id);
        cfg.test_trust_any_id = true;
        let mut node = Node::new(cfg, me.addr, 1, Time(0));
        // B notifies the lone node: it becomes the predecessor and, once it answers, the successor.
        frame(
            &mut node,
            b,
            Frame::new(0, PeerMsg::PredecessorSet { node: b }),
            1,
        );
        let probe = sent(&mut node)
            .into_iter()
            .find(|t| t.to == b.addr && t.frame.msg == PeerMsg::PredecessorGet)
            .expect("the notifier is probed as a successor");
        let reply = PeerMsg::PredecessorReply {
            pred: Some(me),
            succs: b_succs,
        };
        frame(&mut node, b, Frame::new(probe.frame.request, reply), 2);
        assert_eq!(node.successors().first(), Some(&b));
        node
    }

    #[test]
    fn a_hinted_node_that_never_answers_is_not_probed_again() {
        let (me, b, dead) = (test_peer(10), test_peer(100), test_peer(50));
        let mut node = lone_node_with_successor(me, b, vec![]);
        let timeout = Config::default().node.request_timeout_ms;
        // A hint names a node between us and B that never answers.
        frame(
            &mut node,
            b,
            Frame::new(0, PeerMsg::SuccessorHint { node: dead }),
            3,
        );
        let out = sent(&mut node);
        assert!(out.iter().any(|t| t.to == dead.addr), "{out:?}");
        node.handle_input(Input::Timeout, Time(3 + timeout));
        // Stabilize rounds from now on ask B (which, silent in this test, is dropped in the end), never
        // the dead node.
        let mut now = Time(3 + timeout);
        for _ in 0..20 {
            now = node.poll_timeout().expect("periodic timers").max(now);
            node.handle_input(Input::Timeout, now);
            assert!(sent(&mut node).iter().all(|t| t.to != dead.addr));
        }
    }

    /// The storm's loop: each failed probe of a hinted node notified the successor again, whose
    /// answer hinted twice. Now hints to a node already probed, and past the round's budget, are
    /// not sent, and a failed hint probe ends nothing.
    #[test]
    fn hints_flooding_in_cost_at_most_the_round_budget() {
        let (me, b) = (test_peer(10), test_peer(200));
        let mut node = lone_node_with_successor(me, b, vec![]);
        let mut probes = 0;
        for i in 0..100u8 {
            let hinted = test_peer(20 + i);
            frame(
                &mut node,
                b,
                Frame::new(0, PeerMsg::SuccessorHint { node: hinted }),
                3,
            );
            frame(
                &mut node,
                b,
                Frame::new(0, PeerMsg::SuccessorHint { node: hinted }),
                3,
            );
            probes += sent(&mut node)
                .iter()
                .filter(|t| t.frame.msg == PeerMsg::PredecessorGet)
                .count();
        }
        assert!(probes as u32 <= super::SENDS_PER_ROUND, "{probes} probes");
        // They all time out: nothing more is sent for them (no notify, no new probe).
        let timeout = Config::default().node.request_timeout_ms;
        node.handle_input(Input::Timeout, Time(3 + timeout));
        let after = sent(&mut node);
        assert!(
            after
                .iter()
                .all(|t| !matches!(t.frame.msg, PeerMsg::PredecessorSet { .. })),
            "{after:?}"
        );
        node.check_invariants();
    }

    #[test]
    fn a_dead_predecessor_is_followed_by_the_node_it_said_precedes_it() {
        let (me, b, d) = (test_peer(10), test_peer(100), test_peer(150));
        let mut node = lone_node_with_successor(me, b, vec![d]);
        // B took C as its predecessor and says so unasked.
        let c = test_peer(80);
        let chain = PeerMsg::Predecessors { preds: vec![c] };
        frame(&mut node, b, Frame::new(0, chain), 3);
        sent(&mut node);
        node.handle_input(Input::PeerUnreachable { peer: b.addr }, Time(4));
        assert_eq!(node.predecessor(), None);
        let ping = sent(&mut node)
            .into_iter()
            .find(|t| t.to == c.addr && t.frame.msg == PeerMsg::Ping)
            .expect("the node before the dead predecessor is asked at once");
        frame(
            &mut node,
            c,
            Frame::new(ping.frame.request, PeerMsg::Pong),
            5,
        );
        assert_eq!(node.predecessor(), Some(c));
        // Our successor learns of it at once too.
        let pushed = PeerMsg::Predecessors { preds: vec![c] };
        assert!(
            sent(&mut node)
                .iter()
                .any(|t| t.to == d.addr && t.frame == Frame::new(0, pushed.clone()))
        );
    }

    /// Zave's rectify: a notifier that loses to a predecessor not heard from lately waits for a ping
    /// of that predecessor; if the ping fails, the notifier becomes the predecessor.
    #[test]
    fn a_notifier_losing_to_a_silent_predecessor_wins_once_it_fails_a_ping() {
        let (me, b) = (test_peer(10), test_peer(100));
        // B's successor D keeps the ring when B is dropped.
        let mut node = lone_node_with_successor(me, b, vec![test_peer(150)]);
        let interval = Config::default().node.stabilize_interval_ms;
        let late = 3 * interval;
        // C lies before B (our predecessor): it loses, and B has been silent for three rounds.
        let c = test_peer(60);
        frame(
            &mut node,
            c,
            Frame::new(0, PeerMsg::PredecessorSet { node: c }),
            late,
        );
        let out = sent(&mut node);
        assert!(
            out.iter()
                .any(|t| t.to == b.addr && t.frame.msg == PeerMsg::Ping),
            "{out:?}"
        );
        assert!(
            out.iter()
                .all(|t| t.to != c.addr || t.frame.msg == PeerMsg::PredecessorGet)
        );
        node.handle_input(Input::PeerUnreachable { peer: b.addr }, Time(late + 1));
        assert_eq!(node.predecessor(), Some(c));
    }
}
