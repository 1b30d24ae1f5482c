//! Recursive routing, shared by the parts that look keys up: the first hop of a PEER FIND, the
//! forwarding of finds for others, and what a PEER FOUND teaches us. It reads the ring view and
//! sends; the part that asked keeps the request and handles the answer. The one thing it keeps is
//! the finds it forwarded for others (`Ctx::forwards`, see [`super::forwards`]) until the next hop
//! says FIND TAKEN: one whose next hop is reported unreachable ([`on_unreachable`]) or stays
//! silent past its per-hop timeout ([`on_timeout`]) goes on by the next-best hop.

use super::context::{Ctx, Requests, RingEvent};
use super::forwards::{self, Forward};
use crate::id::Id;
use crate::msg::{Held, PEERS_MAX, Peer, PeerMsg};
use bytes::Bytes;
use std::net::SocketAddr;

/// The most hops a PEER FIND may take before it is dropped (a loop guard: Chord needs O(log N)).
pub const HOPS_MAX: u8 = 64;

/// A last-hop find sent back to our predecessor waits this many per-hop timeouts (at most the
/// request timeout) before we answer it ourselves: taking a slow predecessor for a dead one there
/// makes two nodes answer, while elsewhere it costs a duplicate find at most.
const BACK_TIMEOUT_FACTOR: u64 = 3;

/// The largest value a VALUE FOUND carries; a larger one is fetched with STORAGE GET. A FIND VALUE
/// names its `reply_to` unchecked, so this bounds what a stranger can have sent to a third party
/// per find to about what a PEER FOUND of [`PEERS_MAX`] nodes already is.
pub const INLINE_VALUE_MAX: usize = 4096;

/// Sends PEER FIND (FIND VALUE when `read`) for `target` to the best next hop (the `skip`-th best
/// on retries) as a request of `requests`; `what` comes back when that table is full.
pub(super) fn find<T>(
    ctx: &mut Ctx,
    requests: &mut Requests<T>,
    (target, read): (Id, bool),
    skip: usize,
    what: T,
) -> Result<(), T> {
    let next = ctx
        .ring
        .closest_preceding(&target, skip)
        .unwrap_or_else(|| ctx.ring.successor());
    send_find(ctx, requests, next.addr, (target, read), what)
}

/// Sends PEER FIND for `target` to `via` (a join goes through a contact).
pub(super) fn find_via<T>(
    ctx: &mut Ctx,
    requests: &mut Requests<T>,
    via: SocketAddr,
    target: Id,
    what: T,
) -> Result<(), T> {
    send_find(ctx, requests, via, (target, false), what)
}

fn send_find<T>(
    ctx: &mut Ctx,
    requests: &mut Requests<T>,
    via: SocketAddr,
    (target, read): (Id, bool),
    what: T,
) -> Result<(), T> {
    let msg = PeerMsg::PeerFind {
        target,
        hops: 0,
        last_hop: false,
        reply_to: ctx.me().addr,
        read,
    };
    requests.send_find(ctx, via, msg, what)
}

/// A PEER FOUND from `from` for one of our finds (`target`, after `hops`): is it believable? Every
/// node named must hold an id its address may hold, in ring order from the target, and no node we
/// know ourselves may lie between the target and the one named responsible (a liar naming itself,
/// or a node that does not exist, for a key it does not own). Counts it; the responsible node
/// goes in the routing cache when it answered itself.
pub(super) fn found(
    ctx: &mut Ctx,
    from: SocketAddr,
    (target, hops): (Id, u8),
    nodes: &[Peer],
) -> bool {
    let Some(&owner) = nodes.first() else {
        return false;
    };
    let in_order = nodes
        .windows(2)
        .all(|w| target.distance_to(&w[0].id) < target.distance_to(&w[1].id));
    // The node a find reaches answers it itself.
    let believable = owner.addr == from
        && in_order
        && ctx.ids.all_fit(nodes)
        && !ctx.ring.knows_node_in(&target, &owner.id);
    if !believable {
        log::debug!(
            "[{}] PEER FOUND from {from} for {} naming {} ({}) not believed",
            ctx.short(),
            target.short(),
            owner.id.short(),
            owner.addr
        );
        return false;
    }
    ctx.stats.lookups += 1;
    ctx.stats.lookup_hops += hops as u64;
    ctx.cache.learn(owner);
    ctx.cache.answered(owner, &target);
    true
}

/// Us and our successors, appended to `nodes`: the responsible node first, then the replica holders.
pub(super) fn nodes_from_me_into(ctx: &Ctx, nodes: &mut Vec<Peer>) {
    nodes.push(ctx.ring.me);
    nodes.extend(ctx.ring.succs().iter().take(PEERS_MAX - 1));
}

/// A PEER FIND (or FIND VALUE) to forward or answer, as it arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Find {
    pub request: u64,
    pub target: Id,
    pub hops: u8,
    pub last_hop: bool,
    pub reply_to: SocketAddr,
    /// FIND VALUE: the responsible node answers with the value ([`answer_read`]).
    pub read: bool,
}

/// Answers a FIND VALUE that reached the responsible node (us) with what we hold under its key:
/// the value itself when small enough, alone with us as the node; else our successors too, where
/// the asker may look next.
pub(super) fn answer_read(ctx: &mut Ctx, find: Find, value: Option<Bytes>) {
    let mut nodes = vec![ctx.ring.me];
    let held = match value {
        Some(value) if value.len() <= INLINE_VALUE_MAX => Held::Value(value),
        Some(_) => Held::TooLarge,
        None => {
            nodes.clear();
            nodes_from_me_into(ctx, &mut nodes);
            Held::Missing
        }
    };
    let msg = PeerMsg::ValueFound {
        target: find.target,
        hops: find.hops + 1,
        nodes,
        held,
    };
    ctx.send(find.reply_to, find.request, msg);
}

/// PEER FIND from `from`: FIND TAKEN to `from` at once (its per-hop timer waits for it), then
/// answer the original asker if we are responsible, else forward it unchanged but for the hop count.
/// A find sent to us as the last hop is answered unless our predecessor pointer shows a node that
/// joined in between: then it goes back to that node, again as the last hop. The forward is
/// remembered, to go on by another hop should this one be unreachable or silent.
pub(super) fn on_peer_find(ctx: &mut Ctx, from: SocketAddr, find: Find) {
    // Outside a ring the find is dropped: no FIND TAKEN, so that a sender forwarding it reroutes
    // it; but a newcomer asking us first (hops 0) learns that we live (we are joining ourselves),
    // and keeps asking at its normal pace rather than backing off as from a dead contact.
    if !ctx.joined {
        if find.hops == 0 {
            ctx.send(from, find.request, PeerMsg::FindTaken);
        }
        return;
    }
    ctx.send(from, find.request, PeerMsg::FindTaken);
    // A copy of a find we handled (same hop count: made by a spurious hop timeout) is taken, so
    // that its sender does not send it on elsewhere too, and dropped.
    if ctx.forwards.repeated(&find) {
        ctx.stats.finds_repeated += 1;
        return;
    }
    handle(ctx, find, Vec::new());
}

/// FIND TAKEN from `from`: the find we forwarded to it with id `request` is its own now. One we do
/// not know of (rerouted meanwhile, or never sent) is ignored: a liar may send many.
pub(super) fn on_find_taken(ctx: &mut Ctx, from: SocketAddr, request: u64) {
    if !ctx.forwards.take_acked(request, from, ctx.now) {
        log::trace!(
            "[{}] FIND TAKEN {request} from {from}: no such forward",
            ctx.short()
        );
    }
}

/// The driver could not reach `peer` (maintenance has dropped it from the ring view already): every
/// find we forwarded to it and not seen taken is handled again, the dead peers it met excluded: it
/// goes to the next-best hop, or is answered by us when the key is ours now; at most
/// [`forwards::reroutes_max`] times.
pub(super) fn on_unreachable(ctx: &mut Ctx, peer: SocketAddr) {
    for fwd in ctx.forwards.take_to(peer) {
        reroute(ctx, fwd);
    }
}

/// Per-hop timeouts: each find whose next hop did not say FIND TAKEN in time goes on as on
/// [`on_unreachable`], that peer excluded for this find alone (the ring view keeps it: one missed
/// acknowledgement is no proof of death; maintenance has its own checks). Safe to call early.
pub(super) fn on_timeout(ctx: &mut Ctx) {
    for fwd in ctx.forwards.take_expired(ctx.now) {
        ctx.stats.finds_hop_timeouts += 1;
        log::debug!(
            "[{}] PEER FIND for {}: no FIND TAKEN from {} in time",
            ctx.short(),
            fwd.find.target.short(),
            fwd.to
        );
        reroute(ctx, fwd);
    }
}

/// Sends a forward whose next hop `fwd.to` is dead on by another hop, unless the loop guard is spent.
fn reroute(ctx: &mut Ctx, fwd: Forward) {
    let Forward {
        find, to, mut dead, ..
    } = fwd;
    if dead.len() >= forwards::reroutes_max(&ctx.cfg) {
        ctx.stats.finds_given_up += 1;
        log::debug!(
            "[{}] PEER FIND for {} given up: {} hops dead",
            ctx.short(),
            find.target.short(),
            dead.len() + 1
        );
        return;
    }
    ctx.stats.finds_rerouted += 1;
    dead.push(to);
    handle(ctx, find, dead);
}

/// Answers or forwards `find`, avoiding the peers in `dead`.
fn handle(ctx: &mut Ctx, find: Find, dead: Vec<SocketAddr>) {
    if !ctx.joined {
        return;
    }
    if find.hops >= HOPS_MAX {
        log::warn!(
            "[{}] PEER FIND for {} dropped after {} hops",
            ctx.short(),
            find.target.short(),
            find.hops
        );
        return;
    }
    // Without a predecessor we trust a sender whose successor pointer names us; so too when the
    // predecessor we sent its last hop back to is dead (silent: the ring view still holds it).
    // Not when we know a live node between the key and us: that one is responsible.
    let pred_gone = ctx.ring.pred.is_none_or(|p| dead.contains(&p.addr));
    let answer = ctx.ring.owns(&find.target)
        || (find.last_hop && pred_gone && nearer_holder(ctx, &find.target, &dead).is_none());
    if answer && find.read {
        // The value lives in the node's store, which routing does not reach.
        return ctx.publish(RingEvent::ReadHere(find));
    }
    if answer {
        let mut nodes = Vec::new();
        nodes_from_me_into(ctx, &mut nodes);
        let msg = PeerMsg::PeerFound {
            target: find.target,
            hops: find.hops + 1,
            nodes,
        };
        return ctx.send(find.reply_to, find.request, msg);
    }
    let Some((next, next_is_last)) = next_hop(ctx, &find, &dead) else {
        ctx.stats.finds_given_up += 1;
        log::debug!(
            "[{}] PEER FIND for {} dropped: no live hop left",
            ctx.short(),
            find.target.short()
        );
        return;
    };
    forward(ctx, find, (next, next_is_last), dead);
}

/// Sends `find` on to `next` and keeps it until `next` says FIND TAKEN or its hop timeout passes.
fn forward(ctx: &mut Ctx, find: Find, (next, next_is_last): (Peer, bool), dead: Vec<SocketAddr>) {
    let msg = PeerMsg::PeerFind {
        target: find.target,
        hops: find.hops + 1,
        last_hop: next_is_last,
        reply_to: find.reply_to,
        read: find.read,
    };
    ctx.send(next.addr, find.request, msg);
    ctx.stats.finds_forwarded += 1;
    // A last-hop find sent back to a node before us (our predecessor) is one we answer ourselves
    // should that node seem dead: a slow answer must not pass for a dead one there, or both of
    // us answer.
    let target = &find.target;
    let back = find.last_hop
        && next_is_last
        && target.distance_to(&next.id) < target.distance_to(&ctx.ring.me.id);
    let ceiling_ms = ctx.cfg.request_timeout_ms;
    let hop_timeout_ms = ctx.forwards.hop_timeout_ms(next.addr, ceiling_ms);
    let timeout_ms = if back {
        (BACK_TIMEOUT_FACTOR * hop_timeout_ms).min(ceiling_ms)
    } else {
        hop_timeout_ms
    };
    let fwd = Forward {
        find,
        to: next.addr,
        at: ctx.now,
        dead,
    };
    ctx.forwards.record(fwd, timeout_ms);
}

/// The known node nearest at or after `key` and before us, not in `dead`, from our predecessor
/// chain and the routing cache: with our predecessor gone, a last-hop find goes there, for a
/// node that has just joined behind our dead predecessor, or that predecessor's predecessor, is
/// responsible for the key, not we.
fn nearer_holder(ctx: &Ctx, key: &Id, dead: &[SocketAddr]) -> Option<Peer> {
    let me = ctx.ring.me;
    let before_me = |p: &Peer| p.id != me.id && key.distance_to(&p.id) < key.distance_to(&me.id);
    let usable = |p: &Peer| before_me(p) && !dead.contains(&p.addr);
    let chain = ctx.ring.pred_chain(PEERS_MAX).nodes;
    let cached = ctx.cache.clockwise_from(key).take_while(before_me);
    chain
        .into_iter()
        .chain(cached)
        .filter(usable)
        .min_by_key(|p| key.distance_to(&p.id))
}

/// Where a find we do not answer goes, and whether the receiver is its last hop; never a peer in
/// `dead`, and `None` when no other is left.
fn next_hop(ctx: &Ctx, find: &Find, dead: &[SocketAddr]) -> Option<(Peer, bool)> {
    let live = |p: &Peer| !dead.contains(&p.addr);
    let target = &find.target;
    if find.last_hop
        && let Some(p) = ctx
            .ring
            .pred
            .filter(live)
            .or_else(|| nearer_holder(ctx, target, dead))
    {
        return Some((p, true));
    }
    // The successor-list entry responsible, else (it is dead: a silent peer stays in the view)
    // the first live entry after it, which has taken its range over.
    if let Some((i, _)) = ctx.ring.owner_in_succs(target)
        && let Some(owner) = ctx.ring.succs()[i..].iter().copied().find(live)
        && ctx.ring.has_answered(owner.addr)
    {
        return Some((owner, true));
    }
    // The closest preceding node not found dead; `closest_preceding` repeats its last candidate
    // once `skip` passes the end.
    let mut last = None;
    for skip in 0.. {
        let Some(next) = ctx.ring.closest_preceding(target, skip) else {
            break;
        };
        if live(&next) {
            return Some((next, false));
        }
        if last == Some(next.addr) {
            break;
        }
        last = Some(next.addr);
    }
    Some((ctx.ring.successor(), false)).filter(|(s, _)| live(s) && s.addr != ctx.ring.me.addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chord::test_peer as peer;
    use crate::chord::{Output, Transmit};
    use crate::msg::Frame;
    use crate::time::Time;

    /// Node 100 in a ring: predecessor 50, successors 120, 150 and 200 (all answered us).
    fn ctx() -> Ctx {
        let mut cfg = crate::config::Config::default().node;
        cfg.successors = 3;
        let mut ctx = Ctx::new(cfg, peer(100), 1, Time::from_ms(1000));
        ctx.joined = true;
        ctx.ring.pred = Some(peer(50));
        ctx.ring.set_succs([peer(120), peer(150), peer(200)]);
        for b in [120, 150, 200] {
            ctx.ring.heard_from(peer(b).addr);
        }
        ctx
    }

    fn find(target: u8, last_hop: bool) -> Find {
        Find {
            request: 77,
            target: peer(target).id,
            hops: 2,
            last_hop,
            reply_to: peer(1).addr,
            read: false,
        }
    }

    /// What `ctx` sent, FIND TAKEN to the previous hop (peer 2) left out.
    fn sent(ctx: &mut Ctx) -> Vec<Transmit> {
        std::iter::from_fn(|| ctx.poll_output())
            .filter_map(|o| match o {
                Output::Transmit(t) if t.frame.msg != PeerMsg::FindTaken => Some(t),
                _ => None,
            })
            .collect()
    }

    /// `find` arrives from peer 2.
    fn on_find(ctx: &mut Ctx, find: Find) {
        on_peer_find(ctx, peer(2).addr, find);
    }

    fn peer_find(to: u8, target: u8, hops: u8, last_hop: bool) -> Transmit {
        Transmit {
            to: peer(to).addr,
            frame: Frame::new(
                77,
                PeerMsg::PeerFind {
                    target: peer(target).id,
                    hops,
                    last_hop,
                    reply_to: peer(1).addr,
                    read: false,
                },
            ),
        }
    }

    #[test]
    fn a_find_whose_next_hop_is_refused_goes_to_the_next_successor_unchanged() {
        let mut ctx = ctx();
        on_find(&mut ctx, find(140, false));
        assert_eq!(sent(&mut ctx), vec![peer_find(150, 140, 3, true)]);
        // Maintenance drops the dead peer first; the find then goes to the entry now responsible,
        // with the same request id, reply_to and hop count.
        ctx.ring.remove(peer(150).addr);
        on_unreachable(&mut ctx, peer(150).addr);
        assert_eq!(sent(&mut ctx), vec![peer_find(200, 140, 3, true)]);
        assert_eq!(
            (ctx.stats.finds_forwarded, ctx.stats.finds_rerouted),
            (2, 1)
        );
        // Another peer's failure, or the same one reported twice, reroutes nothing more.
        on_unreachable(&mut ctx, peer(120).addr);
        on_unreachable(&mut ctx, peer(150).addr);
        assert!(sent(&mut ctx).is_empty());
    }

    #[test]
    fn a_last_hop_sent_back_to_a_dead_predecessor_is_answered_by_us() {
        let mut ctx = ctx();
        ctx.ring.pred = Some(peer(90));
        on_find(&mut ctx, find(85, true));
        assert_eq!(sent(&mut ctx), vec![peer_find(90, 85, 3, true)]);
        ctx.ring.remove(peer(90).addr);
        on_unreachable(&mut ctx, peer(90).addr);
        let answer = sent(&mut ctx);
        assert_eq!(answer.len(), 1);
        assert_eq!((answer[0].to, answer[0].frame.request), (peer(1).addr, 77));
        let PeerMsg::PeerFound { hops, nodes, .. } = &answer[0].frame.msg else {
            panic!("not a PEER FOUND: {answer:?}");
        };
        assert_eq!((*hops, nodes[0]), (3, peer(100)));
    }

    #[test]
    fn a_find_never_goes_back_past_the_key_and_gives_up_when_no_hop_is_left() {
        let mut ctx = ctx();
        ctx.ring.set_succs([peer(150)]);
        on_find(&mut ctx, find(140, false));
        assert_eq!(sent(&mut ctx), vec![peer_find(150, 140, 3, true)]);
        // Our last successor: maintenance keeps it a while; the find does not go to it again,
        // nor to the predecessor behind us.
        on_unreachable(&mut ctx, peer(150).addr);
        assert!(sent(&mut ctx).is_empty());
        assert_eq!(ctx.stats.finds_given_up, 1);
    }

    #[test]
    fn a_find_is_rerouted_at_most_r_times_and_not_after_the_window() {
        let mut ctx = ctx();
        ctx.ring.set_succs([peer(101), peer(102), peer(103)]);
        (101..=103).for_each(|b| ctx.ring.heard_from(peer(b).addr));
        for (i, b) in [(250, 108), (251, 109), (252, 110)] {
            ctx.ring.set_finger(i, peer(b));
        }
        on_find(&mut ctx, find(140, false));
        // r = 3: the dead 110, 109 and 108 are passed, the fourth refusal ends it.
        for dead in [110, 109, 108] {
            assert_eq!(sent(&mut ctx), vec![peer_find(dead, 140, 3, false)]);
            ctx.ring.remove(peer(dead).addr);
            on_unreachable(&mut ctx, peer(dead).addr);
        }
        assert_eq!(sent(&mut ctx), vec![peer_find(103, 140, 3, false)]);
        on_unreachable(&mut ctx, peer(103).addr);
        assert!(sent(&mut ctx).is_empty());
        assert_eq!((ctx.stats.finds_rerouted, ctx.stats.finds_given_up), (3, 1));
        // A refusal after the next hop took the find concerns another find.
        on_find(&mut ctx, find(141, false));
        assert_eq!(sent(&mut ctx), vec![peer_find(103, 141, 3, false)]);
        on_find_taken(&mut ctx, peer(103).addr, 77);
        on_unreachable(&mut ctx, peer(103).addr);
        assert!(sent(&mut ctx).is_empty());
    }

    #[test]
    fn a_find_is_acknowledged_to_the_previous_hop_at_once() {
        let mut ctx = ctx();
        on_peer_find(&mut ctx, peer(2).addr, find(140, false));
        let out: Vec<Transmit> = std::iter::from_fn(|| ctx.poll_output())
            .filter_map(|o| match o {
                Output::Transmit(t) => Some(t),
                _ => None,
            })
            .collect();
        let ack = Transmit {
            to: peer(2).addr,
            frame: Frame::new(77, PeerMsg::FindTaken),
        };
        assert_eq!(out, vec![ack.clone(), peer_find(150, 140, 3, true)]);
        // The same find again, with the same hop count (a copy): taken, not sent on.
        on_peer_find(&mut ctx, peer(3).addr, find(140, false));
        let again = Transmit {
            to: peer(3).addr,
            ..ack.clone()
        };
        assert_eq!(ctx.poll_output(), Some(Output::Transmit(again)));
        assert!(ctx.poll_output().is_none());
        assert_eq!(ctx.stats.finds_repeated, 1);
        // Outside a ring a find is dropped unacknowledged (the sender reroutes it), unless we are
        // its first hop: the asker then knows we live.
        ctx.joined = false;
        on_peer_find(&mut ctx, peer(2).addr, find(141, false));
        assert!(ctx.poll_output().is_none());
        let first = Find {
            hops: 0,
            ..find(142, false)
        };
        on_peer_find(&mut ctx, peer(2).addr, first);
        assert_eq!(ctx.poll_output(), Some(Output::Transmit(ack)));
        assert!(ctx.poll_output().is_none());
    }

    #[test]
    fn a_silent_next_hop_is_passed_for_that_find_alone_and_a_late_ack_ignored() {
        let mut ctx = ctx();
        on_find(&mut ctx, find(140, false));
        assert_eq!(sent(&mut ctx), vec![peer_find(150, 140, 3, true)]);
        // Never measured: half of request_timeout_ms.
        let timeout = ctx.cfg.request_timeout_ms / 2;
        ctx.now = ctx.now + (timeout - 1);
        on_timeout(&mut ctx);
        assert!(sent(&mut ctx).is_empty(), "early");
        ctx.now = ctx.now + 1;
        on_timeout(&mut ctx);
        // The ring view keeps 150; the find goes to the next entry, unchanged.
        assert_eq!(sent(&mut ctx), vec![peer_find(200, 140, 3, true)]);
        assert!(ctx.ring.succs().contains(&peer(150)));
        assert_eq!(
            (ctx.stats.finds_hop_timeouts, ctx.stats.finds_rerouted),
            (1, 1)
        );
        // 150's late ACK is ignored; 200's ends the forward: nothing fires later.
        on_find_taken(&mut ctx, peer(150).addr, 77);
        on_find_taken(&mut ctx, peer(200).addr, 77);
        ctx.now = ctx.now + ctx.cfg.request_timeout_ms;
        on_timeout(&mut ctx);
        assert!(sent(&mut ctx).is_empty());
        assert_eq!(ctx.forwards.next_deadline(), None);
        // Another find still goes to 150 first.
        on_find(&mut ctx, find(141, false));
        assert_eq!(sent(&mut ctx), vec![peer_find(150, 141, 3, true)]);
    }

    #[test]
    fn a_find_value_goes_on_as_one_and_is_answered_with_the_value_where_it_lands() {
        let mut ctx = ctx();
        let read = |target| Find {
            read: true,
            ..find(target, false)
        };
        on_find(&mut ctx, read(140));
        let mut on = peer_find(150, 140, 3, true);
        if let PeerMsg::PeerFind { read, .. } = &mut on.frame.msg {
            *read = true;
        }
        assert_eq!(sent(&mut ctx), vec![on]);
        // Ours: the node's store is asked (an event), not the ring view.
        on_find(&mut ctx, read(80));
        assert!(sent(&mut ctx).is_empty());
        assert!(matches!(ctx.take_events()[..], [RingEvent::ReadHere(f)] if f == read(80)));
        let answer = |ctx: &mut Ctx, value: Option<Bytes>| {
            answer_read(ctx, read(80), value);
            let out = sent(ctx);
            assert_eq!(
                (out.len(), out[0].to, out[0].frame.request),
                (1, peer(1).addr, 77)
            );
            match out[0].frame.msg.clone() {
                PeerMsg::ValueFound {
                    nodes, held, hops, ..
                } => (nodes, held, hops),
                other => panic!("not a VALUE FOUND: {other:?}"),
            }
        };
        let small = Bytes::from_static(b"v");
        assert_eq!(
            answer(&mut ctx, Some(small.clone())),
            (vec![peer(100)], Held::Value(small), 3)
        );
        let large = Bytes::from(vec![0; INLINE_VALUE_MAX + 1]);
        assert_eq!(
            answer(&mut ctx, Some(large)),
            (vec![peer(100)], Held::TooLarge, 3)
        );
        // Missing: the replica holders come along, for the asker to try.
        let holders = vec![peer(100), peer(120), peer(150), peer(200)];
        assert_eq!(answer(&mut ctx, None), (holders, Held::Missing, 3));
    }

    #[test]
    fn without_a_predecessor_a_last_hop_goes_to_a_known_node_nearer_the_key() {
        let mut ctx = ctx();
        ctx.ring.pred = None;
        ctx.cache.learn(peer(90));
        ctx.cache.learn(peer(80));
        on_find(&mut ctx, find(85, true));
        assert_eq!(sent(&mut ctx), vec![peer_find(90, 85, 3, true)]);
        // 90 is dead: nobody else we know lies between the key and us.
        on_unreachable(&mut ctx, peer(90).addr);
        let answer = sent(&mut ctx);
        assert_eq!(answer.len(), 1);
        assert!(matches!(answer[0].frame.msg, PeerMsg::PeerFound { .. }));
    }

    #[test]
    fn a_slow_predecessor_gets_three_hop_timeouts_before_we_answer() {
        let mut ctx = ctx();
        ctx.ring.pred = Some(peer(90));
        on_find(&mut ctx, find(85, true));
        assert_eq!(sent(&mut ctx), vec![peer_find(90, 85, 3, true)]);
        // Never measured: three times half the request timeout, capped at the request timeout.
        ctx.now = ctx.now + ctx.cfg.request_timeout_ms - 1;
        on_timeout(&mut ctx);
        assert!(
            sent(&mut ctx).is_empty(),
            "a second answer would race the predecessor's"
        );
    }

    #[test]
    fn a_last_hop_sent_back_to_a_silent_predecessor_is_answered_by_us() {
        let mut ctx = ctx();
        ctx.ring.pred = Some(peer(90));
        on_find(&mut ctx, find(85, true));
        assert_eq!(sent(&mut ctx), vec![peer_find(90, 85, 3, true)]);
        ctx.now = ctx.now + ctx.cfg.request_timeout_ms;
        on_timeout(&mut ctx);
        let answer = sent(&mut ctx);
        assert_eq!(answer.len(), 1);
        assert_eq!((answer[0].to, answer[0].frame.request), (peer(1).addr, 77));
        assert!(matches!(answer[0].frame.msg, PeerMsg::PeerFound { .. }));
        assert_eq!(ctx.ring.pred, Some(peer(90)), "kept in the ring view");
    }
}
