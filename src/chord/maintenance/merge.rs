//! A ring split by a network partition merges again (issue 12): neighbours dropped as unreachable
//! are tried again with backoff; one that answers from another ring starts the merge. Part of
//! maintenance: its requests and ring view.

use super::{Maintenance, Origin, Rpc, log_refused};
use crate::chord::context::Ctx;
use crate::chord::routing;
use crate::id::Id;
use crate::msg::{Peer, PeerMsg};
use std::net::SocketAddr;

/// The longest pause between tries of a lost neighbour, in stabilize periods: after a partition
/// heals, the two rings meet within about this long.
const LOST_RETRY_MAX_PERIODS: u64 = 30;

impl Maintenance {
    /// Once per stabilize round, a lost neighbour that is due is asked to look our own id up. In
    /// our ring it names us; a ring that split from ours (a partition that healed) names another
    /// node, and the two rings then weave into one.
    pub(super) fn try_lost(&mut self, ctx: &mut Ctx) {
        let trying = self.requests.any(|what| matches!(what, Rpc::Reunite));
        if !ctx.joined || ctx.leaving || trying {
            return;
        }
        let max_wait = LOST_RETRY_MAX_PERIODS * ctx.cfg.stabilize_interval_ms;
        let Some(lost) = self.lost.take_due(ctx.now, max_wait) else {
            return;
        };
        let me = ctx.ring.me.id;
        let _ = routing::find_via(ctx, &mut self.requests, lost.addr, me, Rpc::Reunite);
    }

    /// A lost neighbour's ring answered our lookup of our own id. Naming us, it is our ring: the
    /// neighbour is forgotten. Naming another node, it is another ring: we probe the named node and
    /// its successors as successors of ours (each is adopted only once it answers), and tell the
    /// named node we may be its predecessor; from there stabilize, notify and hints zip both rings
    /// together, node by node, from both ends. The neighbour is tried again until its ring names us.
    pub(super) fn reunite_answered(
        &mut self,
        ctx: &mut Ctx,
        from: SocketAddr,
        target: Id,
        nodes: Vec<Peer>,
    ) {
        let me = ctx.ring.me;
        let Some(&owner) = nodes.first() else {
            return;
        };
        let in_order = nodes
            .windows(2)
            .all(|w| target.distance_to(&w[0].id) < target.distance_to(&w[1].id));
        if target != me.id || owner.addr != from || !in_order || !ctx.ids.all_fit(&nodes) {
            return log_refused(ctx, from, "PEER FOUND", owner);
        }
        if owner.id == me.id {
            self.lost.forget(from);
            return;
        }
        log::info!(
            "[{}] {} answers from another ring (it names {} for our id): merging",
            ctx.short(),
            from,
            owner.addr
        );
        ctx.stats.ring_merges += 1;
        for node in nodes.iter().filter(|p| p.id != me.id) {
            self.probe_if_closer(ctx, *node, Origin::Hint);
        }
        ctx.send(owner.addr, 0, PeerMsg::PredecessorSet { node: me });
    }
}
