//! Where a node stands on the ring (issue 11): the slot a joiner takes (where each of its slot
//! ids would land, the best split chosen), and rebalancing over time (spare slots registered,
//! invitations, moves). Part of maintenance: its requests and ring view.

use super::{CONTACTS_MAX, Maintenance, Rpc, SlotChoice, log_refused};
use crate::balance::{self, Candidate};
use crate::chord::context::{Ctx, RingEvent};
use crate::chord::lost::LostPeers;
use crate::chord::rebalance::{self, Spares, StoreLoad};
use crate::chord::ring::Ring;
use crate::chord::routing;
use crate::chord::timers::Periodic;
use crate::id::Id;
use crate::msg::{Departure, Peer, PeerMsg};
use std::net::SocketAddr;

/// Peers told of our move (rebalancing) within one [`RETELL_MS`], at most.
const TOLD_OF_MOVE_MAX: usize = 1024;

const RETELL_MS: u64 = crate::chord::departed::DEPARTED_MS / 2;

const LEFT_IDS_MAX: usize = 8;

/// Registrations of a spare slot sent straight to the node a lookup found for it before the slot is
/// looked up again: a lookup costs about 2h + 1 messages (PEER FIND and FIND TAKEN per hop), SPARE
/// one; the lookup every fourth time catches the nodes that joined or left around the id meanwhile.
const SPARE_DIRECT_PER_LOOKUP: u8 = 3;

impl Maintenance {
    /// Looks up, through `via`, where our slot ids would land: slot 0's first (a dead contact costs
    /// one message per attempt, as a plain join does), the others once `via` has answered.
    pub(super) fn ask_slots(&mut self, ctx: &mut Ctx, via: SocketAddr) {
        match self.slot_choice.as_mut() {
            Some(choice) if !choice.asking => {
                *choice = SlotChoice {
                    asking: true,
                    via: Some(via),
                    ..SlotChoice::default()
                }
            }
            _ => return,
        }
        self.ask_slot(ctx, via, 0);
        self.slot_answered(ctx, None);
    }

    pub(super) fn ask_slot(&mut self, ctx: &mut Ctx, via: SocketAddr, slot: u8) {
        let id = Id::of_addr_slot(ctx.ring.me.addr, slot);
        let what = Rpc::SlotFind { slot };
        if routing::find_via(ctx, &mut self.requests, via, id, what).is_ok()
            && let Some(choice) = self.slot_choice.as_mut()
        {
            choice.pending += 1;
        }
    }

    /// The node responsible for a slot id answered: ask it for its predecessor (and, after slot
    /// 0's answer, look the other slot ids up).
    pub(super) fn slot_found(
        &mut self,
        ctx: &mut Ctx,
        from: SocketAddr,
        slot: u8,
        found: (Id, Vec<Peer>),
    ) {
        let owner = slot_owner(ctx, from, slot, found);
        if let (Some(owner), Some(choice)) = (owner, self.slot_choice.as_mut()) {
            choice.answered = true;
            choice.pending -= 1;
            let what = Rpc::SlotPred { slot, succ: owner };
            if self
                .requests
                .send(ctx, from, PeerMsg::PredecessorGet, what)
                .is_ok()
            {
                choice.pending += 1;
            }
            if let (0, Some(via)) = (slot, choice.via) {
                for slot in 1..ctx.cfg.id_slots_per_ip {
                    self.ask_slot(ctx, via, slot);
                }
            }
            return self.slot_answered(ctx, None);
        }
        self.slot_failed(ctx);
    }

    /// The node found for a slot id told its predecessor: the range the slot id would split.
    pub(super) fn slot_pred_answered(
        &mut self,
        ctx: &mut Ctx,
        slot: u8,
        succ: Peer,
        pred: Option<Peer>,
    ) {
        let pred = pred.filter(|p| ctx.ids.fits(p)).map_or(succ.id, |p| p.id);
        let found = Candidate {
            slot,
            id: Id::of_addr_slot(ctx.ring.me.addr, slot),
            pred,
            succ: succ.id,
        };
        if let Some(choice) = self.slot_choice.as_mut() {
            choice.pending = choice.pending.saturating_sub(1);
        }
        self.slot_answered(ctx, Some(found))
    }

    pub(super) fn slot_failed(&mut self, ctx: &mut Ctx) {
        if let Some(choice) = self.slot_choice.as_mut() {
            choice.pending = choice.pending.saturating_sub(1);
        }
        self.slot_answered(ctx, None);
    }

    /// Adds what a slot lookup found; once nothing is out, the slot is chosen and the join goes on
    /// with its id through the same contact. A contact that answered nothing fails the attempt; one
    /// whose ring told us too little to choose leaves us on slot 0 (joining matters more).
    pub(super) fn slot_answered(&mut self, ctx: &mut Ctx, found: Option<Candidate>) {
        let Some(choice) = self.slot_choice.as_mut() else {
            return;
        };
        choice.found.extend(found);
        if choice.pending > 0 {
            return;
        }
        choice.asking = false;
        if !choice.answered {
            return self.join_failed(ctx);
        }
        let slot = balance::choose_slot(&choice.found).unwrap_or(0);
        let landed = choice.found.len();
        self.slot_choice = None;
        ctx.ring.me.id = Id::of_addr_slot(ctx.ring.me.addr, slot);
        log::info!(
            "[{}] takes slot {slot} of {}, the best split of the ranges {landed} of its slot ids land in",
            ctx.short(),
            ctx.cfg.id_slots_per_ip,
        );
        self.join_next = self.join_next.saturating_sub(1); // the same contact again
        self.join(ctx);
    }

    /// Once per rebalance period: register the next of our spare slot ids in turn with the node
    /// whose range it falls in (one a period: registering all of them every period made rebalancing
    /// cost six times the ring's maintenance traffic; that node as last looked up, see
    /// [`SPARE_DIRECT_PER_LOOKUP`]), and, with a range above the mean we estimate, invite the
    /// registered node whose move evens the ring most; or else, with a nearly full store, the one
    /// whose slot id lies nearest the middle of our bytes.
    pub fn on_rebalance_timer(&mut self, ctx: &mut Ctx, load: StoreLoad) {
        self.rebalance(ctx, load);
        ctx.schedule(Periodic::Rebalance, ctx.cfg.rebalance_interval_ms);
    }

    fn rebalance(&mut self, ctx: &mut Ctx, load: StoreLoad) {
        if !ctx.joined || ctx.leaving || ctx.ring.succs().is_empty() {
            return;
        }
        let me = ctx.ring.me;
        let slots = ctx.cfg.id_slots_per_ip;
        for _ in 0..slots {
            let slot = self.spare_next % slots;
            self.spare_next = (slot + 1) % slots;
            let id = Id::of_addr_slot(me.addr, slot);
            if id == me.id {
                continue;
            }
            match self.spare_owners.get_mut(&slot) {
                Some((owner, sent)) if *sent < SPARE_DIRECT_PER_LOOKUP => {
                    *sent += 1;
                    let owner = *owner;
                    register_spare(ctx, owner);
                }
                _ => {
                    self.spare_owners.remove(&slot);
                    let what = Rpc::SpareFind { slot };
                    let _ = routing::find(ctx, &mut self.requests, (id, false), 0, what);
                }
            }
            break;
        }
        let Some(pred) = ctx.ring.pred else {
            return;
        };
        let fill = load.fill_percent;
        let succ_ids: Vec<Id> = ctx.ring.succs().iter().map(|p| p.id).collect();
        let wide = balance::mean_arc_estimate(&me.id, &succ_ids).and_then(|mean| {
            let (holder, slot) = self.spares.invitation(&pred.id, &me.id, mean, ctx.now)?;
            let times = balance::arc_fraction(&pred.id, &me.id) / mean;
            Some((holder, slot, format!("our range is {times:.1}x the mean")))
        });
        // A wide range is split where the range is; a hot one where its bytes are.
        let hot = || {
            let middle = load.middle?;
            let (holder, slot) = self
                .spares
                .invitation_to_split(&pred.id, &me.id, &middle, ctx.now)?;
            Some((holder, slot, format!("our store is {fill}% full")))
        };
        if let Some((holder, slot, why)) = wide.or_else(hot) {
            log::info!(
                "[{}] invites {} to its slot {slot} in our range ({why})",
                ctx.short(),
                holder.addr,
            );
            ctx.stats.rebalance_invitations += 1;
            ctx.send(holder.addr, 0, PeerMsg::Invite { slot, fill });
        }
    }

    /// The owner of one of our spare slot ids answered: register the slot with it.
    pub(super) fn spare_found(
        &mut self,
        ctx: &mut Ctx,
        from: SocketAddr,
        slot: u8,
        found: (Id, Vec<Peer>),
    ) {
        let me = ctx.ring.me;
        let Some(owner) = slot_owner(ctx, from, slot, found).filter(|o| o.id != me.id) else {
            return;
        };
        self.spare_owners.insert(slot, (owner, 0));
        register_spare(ctx, owner);
    }

    /// SPARE from a peer: keep its slot ids that fall in our range, for a while.
    pub fn on_spare(&mut self, ctx: &mut Ctx, from: SocketAddr, holder: Peer, ends: (Id, Id)) {
        if holder.addr != from || !ctx.ids.fits(&holder) {
            return log_refused(ctx, from, "SPARE", holder);
        }
        let Some(pred) = ctx.ring.pred else {
            return;
        };
        let life =
            rebalance::spare_life_periods(ctx.cfg.id_slots_per_ip) * ctx.cfg.rebalance_interval_ms;
        let ours = (pred.id, ctx.ring.me.id);
        let slots = ctx.cfg.id_slots_per_ip;
        self.spares
            .register(holder, ends, ours, slots, ctx.now + life);
    }

    /// INVITE: look up where that slot id of ours lands now, unless we moved lately (or may not).
    /// Only when our store (`own_fill` percent full) is not much fuller than the inviter's, or,
    /// invited by a nearly full node, has room for about half of its bytes
    /// ([`balance::takes_invitation`]).
    pub fn on_invite(&mut self, ctx: &mut Ctx, from: SocketAddr, invite: (u8, u8), own_fill: u8) {
        let (slot, fill) = invite;
        let split = fill >= balance::FULL_PERCENT;
        let me = ctx.ring.me;
        let period = ctx.cfg.rebalance_interval_ms;
        let rested = self
            .moved_at
            .is_none_or(|t| ctx.now.ms_since(t) >= rebalance::MOVE_EVERY * period);
        let may_move = period > 0 && ctx.cfg.id_slot.is_none() && ctx.cfg.node_id.is_none();
        let id = Id::of_addr_slot(me.addr, slot);
        let moving = self
            .requests
            .any(|w| matches!(w, Rpc::MoveFind { .. } | Rpc::MovePred { .. }));
        if !may_move
            || !rested
            || moving
            || !ctx.joined
            || ctx.leaving
            || slot >= ctx.cfg.id_slots_per_ip
            || id == me.id
            || !balance::takes_invitation(fill, own_fill)
        {
            return log::debug!(
                "[{}] invitation from {from} to slot {slot} declined",
                ctx.short()
            );
        }
        let _ = routing::find(
            ctx,
            &mut self.requests,
            (id, false),
            0,
            Rpc::MoveFind {
                slot,
                split_for: split.then_some(from),
            },
        );
    }

    pub(super) fn move_found(
        &mut self,
        ctx: &mut Ctx,
        from: SocketAddr,
        invited: (u8, Option<SocketAddr>),
        found: (Id, Vec<Peer>),
    ) {
        let (slot, split_for) = invited;
        let Some(owner) = slot_owner(ctx, from, slot, found) else {
            return;
        };
        match split_for {
            // Splitting a full node's bytes: the slot must still lie in its range.
            Some(inviter) if owner.addr == inviter => ctx.publish(RingEvent::Move {
                slot,
                via: owner.addr,
            }),
            Some(_) => log::debug!("[{}] slot {slot} left the full node's range", ctx.short()),
            None => {
                let what = Rpc::MovePred { slot, succ: owner };
                self.ask(ctx, from, PeerMsg::PredecessorGet, what);
            }
        }
    }

    /// Where the invited slot id lands is known: move when it is a gain (`balance::best_move`,
    /// which counts our leaving too). The shell hands our values on, then [`Self::move_to`].
    pub(super) fn move_checked(&mut self, ctx: &mut Ctx, slot: u8, pred: Option<Peer>, succ: Peer) {
        let pred = pred.filter(|p| ctx.ids.fits(p)).map_or(succ.id, |p| p.id);
        let me = ctx.ring.me;
        let (Some(my_pred), Some(my_succ)) = (ctx.ring.pred, ctx.ring.succs().first().copied())
        else {
            return;
        };
        let candidate = Candidate {
            slot,
            id: Id::of_addr_slot(me.addr, slot),
            pred,
            succ: succ.id,
        };
        let gain = rebalance::POLICY.gain;
        if balance::best_move(gain, &me.id, &my_pred.id, &my_succ.id, &[candidate]) != Some(slot) {
            return log::debug!("[{}] slot {slot} is no gain; staying", ctx.short());
        }
        ctx.publish(RingEvent::Move {
            slot,
            via: succ.addr,
        });
    }

    /// We move to `slot` (our values are handed on): leave, then join again with that slot's id
    /// through the node that owns it now.
    pub fn move_to(&mut self, ctx: &mut Ctx, slot: u8, via: SocketAddr) {
        let old = ctx.ring.me;
        self.announce_leave(ctx);
        let me = Peer {
            id: Id::of_addr_slot(old.addr, slot),
            addr: old.addr,
        };
        log::info!(
            "[{}] moves to slot {slot} (id {}) to even the ring out",
            old.id.short(),
            me.id.short()
        );
        ctx.ring = Ring::new(me, ctx.cfg.successors);
        ctx.joined = false;
        ctx.stats.rebalance_moves += 1;
        self.requests.clear(ctx);
        self.contacts.retain(|a| *a != via);
        self.contacts.insert(0, via);
        self.contacts.truncate(CONTACTS_MAX);
        self.join_next = 0;
        self.join_failures = 0;
        self.join_started = ctx.now;
        self.pointers_at_stabilize = (None, None);
        self.rectify_waiting = None;
        self.lost = LostPeers::default();
        self.spares = Spares::default();
        self.spare_owners.clear();
        self.moved_at = Some(ctx.now);
        self.left_ids.retain(|p| p.id != me.id);
        self.left_ids.push(old);
        if self.left_ids.len() > LEFT_IDS_MAX {
            self.left_ids.remove(0);
        }
        ctx.timers.set(Periodic::Join, ctx.now);
    }

    /// A peer asks us something after we moved: it may take us for an identity we left (second-
    /// hand lists and caches keep them), so it is told that that identity left before our answer,
    /// which it would otherwise credit to the old id. Answers do not name the answerer, so this
    /// holds as long as we live; once per [`RETELL_MS`] per peer and identity (its tombstone lasts
    /// twice that).
    pub fn tell_of_move(&mut self, ctx: &mut Ctx, from: SocketAddr) {
        if self.left_ids.is_empty() {
            return;
        }
        let now = ctx.now;
        self.told_of_move
            .retain(|(_, _, t)| now.ms_since(*t) < RETELL_MS);
        for &old in &self.left_ids {
            let told = self
                .told_of_move
                .iter()
                .any(|(a, id, _)| *a == from && *id == old.id);
            if told || self.told_of_move.len() >= TOLD_OF_MOVE_MAX {
                continue;
            }
            self.told_of_move.push((from, old.id, now));
            let leave = PeerMsg::Leave(Box::new(Departure {
                node: old,
                pred: None,
                succs: Vec::new(),
            }));
            ctx.send(from, 0, leave);
        }
    }
}

/// The node a PEER FOUND for our slot id `slot` names responsible, if the answer is for that id and
/// comes from that node itself, with an id its address may hold.
/// SPARE to `owner`: one of our slot ids lies in its range; here is where we stand.
fn register_spare(ctx: &mut Ctx, owner: Peer) {
    let (Some(pred), Some(succ)) = (ctx.ring.pred, ctx.ring.succs().first()) else {
        return;
    };
    let msg = PeerMsg::Spare {
        holder: ctx.ring.me,
        pred: pred.id,
        succ: succ.id,
    };
    ctx.send(owner.addr, 0, msg);
}

fn slot_owner(ctx: &mut Ctx, from: SocketAddr, slot: u8, found: (Id, Vec<Peer>)) -> Option<Peer> {
    let (target, nodes) = found;
    let id = Id::of_addr_slot(ctx.ring.me.addr, slot);
    nodes
        .first()
        .copied()
        .filter(|o| target == id && o.addr == from && ctx.ids.fits(o))
}
