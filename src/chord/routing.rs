//! Recursive routing, shared by the parts that look keys up: the first hop of a PEER FIND, the
//! forwarding of finds for others, and what a PEER FOUND teaches us. It reads the ring view and
//! sends; the part that asked keeps the request and handles the answer. The one thing it keeps is
//! the finds it forwarded for others (`Ctx::forwards`, see [`super::forwards`]): one whose next
//! hop is reported unreachable goes on by the next-best hop ([`on_unreachable`]).

use super::context::{Ctx, Requests};
use super::forwards::{self, Forward};
use crate::id::Id;
use crate::msg::{PEERS_MAX, Peer, PeerMsg};
use std::net::SocketAddr;

/// The most hops a PEER FIND may take before it is dropped (a loop guard: Chord needs O(log N)).
pub const HOPS_MAX: u8 = 64;

/// Sends PEER FIND for `target` to the best next hop (the `skip`-th best on retries) as a request
/// of `requests`; `what` comes back when that table is full.
pub(super) fn find<T>(
    ctx: &mut Ctx,
    requests: &mut Requests<T>,
    target: Id,
    skip: usize,
    what: T,
) -> Result<(), T> {
    let next = ctx
        .ring
        .closest_preceding(&target, skip)
        .unwrap_or_else(|| ctx.ring.successor());
    find_via(ctx, requests, next.addr, target, what)
}

/// Sends PEER FIND for `target` to `via` (a join goes through a contact).
pub(super) fn find_via<T>(
    ctx: &mut Ctx,
    requests: &mut Requests<T>,
    via: SocketAddr,
    target: Id,
    what: T,
) -> Result<(), T> {
    let msg = PeerMsg::PeerFind {
        target,
        hops: 0,
        last_hop: false,
        reply_to: ctx.me().addr,
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
    true
}

/// Us and our successors, appended to `nodes`: the responsible node first, then the replica holders.
pub(super) fn nodes_from_me_into(ctx: &Ctx, nodes: &mut Vec<Peer>) {
    nodes.push(ctx.ring.me);
    nodes.extend(ctx.ring.succs().iter().take(PEERS_MAX - 1));
}

/// A PEER FIND to forward or answer, as it arrived.
#[derive(Clone, Debug)]
pub(super) struct Find {
    pub request: u64,
    pub target: Id,
    pub hops: u8,
    pub last_hop: bool,
    pub reply_to: SocketAddr,
}

/// PEER FIND: answer the original asker if we are responsible, else forward it unchanged but for the
/// hop count. A find sent to us as the last hop is answered unless our predecessor pointer shows a
/// node that joined in between: then it goes back to that node, again as the last hop. The forward
/// is remembered, to go on by another hop should this one be unreachable.
pub(super) fn on_peer_find(ctx: &mut Ctx, find: Find) {
    handle(ctx, find, Vec::new());
}

/// The driver could not reach `peer` (maintenance has dropped it from the ring view already): every
/// find we forwarded to it lately is handled again, the dead peers it met excluded: it goes to the
/// next-best hop, or is answered by us when the key is ours now; at most
/// [`forwards::reroutes_max`] times.
pub(super) fn on_unreachable(ctx: &mut Ctx, peer: SocketAddr) {
    let window = ctx.cfg.request_timeout_ms;
    for Forward { find, mut dead, .. } in ctx.forwards.take_to(peer, ctx.now, window) {
        if dead.len() >= forwards::reroutes_max(&ctx.cfg) {
            ctx.stats.finds_given_up += 1;
            log::debug!(
                "[{}] PEER FIND for {} given up: {} hops unreachable",
                ctx.short(),
                find.target.short(),
                dead.len() + 1
            );
            continue;
        }
        ctx.stats.finds_rerouted += 1;
        dead.push(peer);
        handle(ctx, find, dead);
    }
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
    // Without a predecessor we trust a sender whose successor pointer names us.
    let answer = ctx.ring.owns(&find.target) || (find.last_hop && ctx.ring.pred.is_none());
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
    let msg = PeerMsg::PeerFind {
        target: find.target,
        hops: find.hops + 1,
        last_hop: next_is_last,
        reply_to: find.reply_to,
    };
    ctx.send(next.addr, find.request, msg);
    ctx.stats.finds_forwarded += 1;
    let fwd = Forward {
        find,
        to: next.addr,
        at: ctx.now,
        dead,
    };
    let window = ctx.cfg.request_timeout_ms;
    ctx.forwards.record(fwd, window);
}

/// Where a find we do not answer goes, and whether the receiver is its last hop; never a peer in
/// `dead`, and `None` when no other is left.
fn next_hop(ctx: &Ctx, find: &Find, dead: &[SocketAddr]) -> Option<(Peer, bool)> {
    let live = |p: &Peer| !dead.contains(&p.addr);
    let target = &find.target;
    if find.last_hop
        && let Some(p) = ctx.ring.pred.filter(live)
    {
        return Some((p, true));
    }
    if let Some((_, owner)) = ctx.ring.owner_in_succs(target)
        && ctx.ring.has_answered(owner.addr)
        && live(&owner)
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
        }
    }

    fn sent(ctx: &mut Ctx) -> Vec<Transmit> {
        std::iter::from_fn(|| ctx.poll_output())
            .filter_map(|o| match o {
                Output::Transmit(t) => Some(t),
                _ => None,
            })
            .collect()
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
                },
            ),
        }
    }

    #[test]
    fn a_find_whose_next_hop_is_refused_goes_to_the_next_successor_unchanged() {
        let mut ctx = ctx();
        on_peer_find(&mut ctx, find(140, false));
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
        on_peer_find(&mut ctx, find(85, true));
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
        on_peer_find(&mut ctx, find(140, false));
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
        on_peer_find(&mut ctx, find(140, false));
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
        // A refusal after the window concerns a find long answered or lost.
        on_peer_find(&mut ctx, find(140, false));
        assert_eq!(sent(&mut ctx), vec![peer_find(103, 140, 3, false)]);
        ctx.now = ctx.now + ctx.cfg.request_timeout_ms;
        on_unreachable(&mut ctx, peer(103).addr);
        assert!(sent(&mut ctx).is_empty());
    }
}
