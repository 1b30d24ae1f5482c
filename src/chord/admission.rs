//! Which STORAGE PUTs from peers a node takes (issue 10): a copy only for a key it replicates and
//! only from a predecessor placed to send it, no version from the future, and no more stored bytes per
//! second from one peer IP than its token bucket holds. Pure decisions over the ring view and the
//! identity rule; `values` asks, and refuses what fails.

use super::context::Ctx;
use crate::id::{Key, in_half_open, in_open, shared_by_the_host};
use crate::time::Time;
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

/// Why a STORAGE PUT from a peer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// A copy of a key we do not replicate, or from a peer that is none of its holders.
    NotAHolder,
    /// A version further ahead of our clock than `clock_skew_max_ms`.
    FromTheFuture,
    /// The peer's stored-bytes bucket is empty.
    TooFast,
    /// A value larger than a client could write (it could not be answered to one).
    TooLarge,
}

/// Slack on the estimated stretch of ring a node replicates (node spacing varies widely).
const SPAN_SLACK: u128 = 4;

/// Is the sender of a copy of `key` placed to send it? Either it is one of our predecessors as our
/// predecessor chain names them (learned from the predecessor itself, not from the sender), at or
/// past the key (its responsible node, an earlier holder, a leaving predecessor), and the key lies
/// within the ranges of our `replication_max` closest predecessors; or it is our successor handing
/// us keys of our own range. A stranger whose slots happen to lie before us is neither.
pub(super) fn copy_welcome(ctx: &mut Ctx, from: SocketAddr, key: &Key) -> bool {
    let me = ctx.ring.me.id;
    if ctx.ring.succs().is_empty() {
        return true; // alone: every key is ours
    }
    let ours = ctx.ring.pred.is_none_or(|p| in_half_open(key, &p.id, &me));
    if ours && ctx.ring.successor().addr == from {
        return true;
    }
    if ctx.ids.ids_of_sender(from).is_none() {
        return true; // ids are not checked (test-only setting)
    }
    let max = ctx.cfg.replication_max as usize;
    let chain = ctx.ring.pred_chain(max);
    let Some(sender) = chain.nodes.iter().find(|p| p.addr == from) else {
        return false;
    };
    let on_arc = sender.id == *key || in_open(&sender.id, key, &me);
    let near = if chain.whole_ring {
        true
    } else if let Some(farthest) = chain.nodes.get(max - 1) {
        in_half_open(key, &farthest.id, &me)
    } else {
        // The chain is still being learned: the stretch estimated from our successors' spacing.
        key.distance_to(&me) <= replicated_span(ctx)
    };
    on_arc && near
}

/// The stretch of ring behind us whose keys we may hold copies of: `replication_max` nodes'
/// ranges, estimated from our successor list's spacing, with slack.
fn replicated_span(ctx: &Ctx) -> crate::id::Id {
    let succs = ctx.ring.succs();
    let last = succs.last().expect("not alone");
    let covered = ctx.ring.me.id.distance_to(&last.id);
    let nodes = (ctx.cfg.replication_max as u128 + 1) * SPAN_SLACK;
    covered.scaled(nodes, succs.len() as u128)
}

/// A version is believable while it lies no further ahead of our clock than the allowed skew.
pub(super) fn version_believable(ctx: &Ctx, version: u64) -> bool {
    version <= ctx.wall_ms().saturating_add(ctx.cfg.clock_skew_max_ms)
}

/// Per peer IP (per IPv6 /64), a token bucket of stored bytes: `peer_store_bytes_per_s`, with a
/// burst of two seconds' worth. Bounded: the least recently added IP is forgotten first.
#[derive(Default)]
pub(super) struct StoreBuckets {
    buckets: BTreeMap<IpAddr, (u64, Time)>,
    order: VecDeque<IpAddr>,
}

/// Peer IPs with a bucket at once.
const BUCKETS_MAX: usize = 4096;

impl StoreBuckets {
    /// Takes `bytes` from the bucket of `from`'s IP; false when it has not got them.
    pub fn take(&mut self, ctx: &Ctx, from: SocketAddr, bytes: usize) -> bool {
        if shared_by_the_host(from.ip()) {
            return true; // this host's own processes (see `Id::of_addr_slot`)
        }
        let rate = ctx.cfg.peer_store_bytes_per_s as u64;
        let burst = 2 * rate;
        let ip = bucket_ip(from.ip());
        if !self.buckets.contains_key(&ip) {
            if self.order.len() >= BUCKETS_MAX
                && let Some(old) = self.order.pop_front()
            {
                self.buckets.remove(&old);
            }
            self.order.push_back(ip);
            self.buckets.insert(ip, (burst, ctx.now));
        }
        let (tokens, at) = self.buckets.get_mut(&ip).expect("just made");
        let refill = ctx.now.ms_since(*at).saturating_mul(rate) / 1000;
        *tokens = tokens.saturating_add(refill).min(burst);
        *at = ctx.now;
        let ok = *tokens >= bytes as u64;
        if ok {
            *tokens -= bytes as u64;
        }
        ok
    }
}

/// The address a limit applies to: the IPv4 address, or the IPv6 /64.
fn bucket_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::from(o)
        }
    }
}
