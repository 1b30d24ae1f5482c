//! Recursive routing, shared by the parts that look keys up: the first hop of a PEER FIND, the
//! forwarding of finds for others, and what a PEER FOUND teaches us. Stateless: it reads the ring
//! view and sends; the part that asked keeps the request and handles the answer.

use super::context::{Ctx, Requests};
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
pub(super) struct Find {
    pub request: u64,
    pub target: Id,
    pub hops: u8,
    pub last_hop: bool,
    pub reply_to: SocketAddr,
}

/// PEER FIND: answer the original asker if we are responsible, else forward it unchanged but for the
/// hop count. A find sent to us as the last hop is answered unless our predecessor pointer shows a
/// node that joined in between: then it goes back to that node, again as the last hop.
pub(super) fn on_peer_find(ctx: &mut Ctx, find: Find) {
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
    let (next, next_is_last) = next_hop(ctx, &find);
    let msg = PeerMsg::PeerFind {
        target: find.target,
        hops: find.hops + 1,
        last_hop: next_is_last,
        reply_to: find.reply_to,
    };
    ctx.send(next.addr, find.request, msg);
}

/// Where a find we do not answer goes, and whether the receiver is its last hop.
fn next_hop(ctx: &Ctx, find: &Find) -> (Peer, bool) {
    let target = &find.target;
    match (ctx.ring.pred, find.last_hop) {
        (Some(p), true) => (p, true),
        _ => match ctx.ring.owner_in_succs(target) {
            Some((_, owner)) if ctx.ring.has_answered(owner.addr) => (owner, true),
            _ => {
                let next = ctx
                    .ring
                    .closest_preceding(target, 0)
                    .unwrap_or_else(|| ctx.ring.successor());
                (next, false)
            }
        },
    }
}
