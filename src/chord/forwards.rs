//! Per-hop fault tolerance for recursive lookups: the PEER FINDs this node sent on for others,
//! remembered for a short while so that one whose next hop turns out dead goes on by another route.
//!
//! **What is kept.** Every PEER FIND a node forwards (a stranger's find it is the first hop of, or
//! one passing through) is recorded as a [`Forward`]: the find as it arrived (request id, target,
//! hop count, last-hop mark, `reply_to`), the peer it went to, when, and the peers already found
//! dead on its way from here. Nothing is sent for it and no timer is armed: the record only waits
//! for bad news.
//!
//! **The signal.** The transport's own: when the driver reports a peer unreachable (a refused or
//! broken connection: `Input::PeerUnreachable`), every record whose next hop was that peer is taken
//! out, and the find is handled again as if it had just arrived, with the dead peer (and those
//! before it) excluded. Maintenance has already dropped the peer from the ring view by then (the
//! shell calls it first), so the next-best hop is simply the best hop of the view that is left: the
//! successor-list entry now responsible for the key, else the closest preceding finger or
//! successor. Routing only ever picks nodes in `(us, key]`, so a reroute never goes back past the
//! key; and when the dead peer was our predecessor on a last hop, the key is now ours and we answer.
//! The request id, `reply_to` and hop count go on unchanged: the hop that never arrived is not
//! counted, and the asker sees an ordinary answer, only later.
//!
//! **Bounds.** A record lives for `request_timeout_ms` (a refusal comes within a round trip; a
//! connection that breaks later says nothing about this find), pruned lazily from the front of the
//! queue (records are in sending order, so the oldest are first). At most [`FORWARDS_MAX`] are
//! kept; past that the oldest is dropped (its find just loses the protection). One node sends one
//! find on again at most r times ([`reroutes_max`], r = the successor list's length; the loop
//! guard), one message at a time: each reroute excludes one more dead peer, so no route repeats and
//! each goes towards the key, and nothing is multiplied. Why r and not 2 or 3: near the key a
//! reroute walks the successor list, one refusal per dead entry, and at p = 0.5 runs of dead
//! successors are long (tests/sim_failures.rs, N = 500, half the nodes crashed: a guard of 2, 4
//! or 6 reroutes answers 76.7, 95.3 or 99.25 % of the lookups on the first attempt, 8 and more
//! 100 %). Past r dead peers in a row the successor list could not have bridged the gap either; the
//! find is dropped and the asker's retry, after stabilization, is the better bet. `HOPS_MAX` still
//! bounds the whole path.
//!
//! **Not covered.** A host that is silent rather than refusing (powered off, a black-holed link)
//! gives no signal until TCP gives up, long after the record expired: the asker's own retry covers
//! it. Finds this node starts itself are its parts' requests (`Requests`), retried by them.

use super::routing::Find;
use crate::config::NodeConfig;
use crate::time::Time;
use std::collections::VecDeque;
use std::net::SocketAddr;

/// The most forwards remembered; past it the oldest is forgotten.
pub(super) const FORWARDS_MAX: usize = 4096;

/// The most times one node sends one find on again after refusals (the loop guard): r, the
/// length of its successor list.
pub(super) fn reroutes_max(cfg: &NodeConfig) -> usize {
    cfg.successors
}

/// A PEER FIND we sent on, kept until it expires or its next hop is reported unreachable.
#[derive(Clone, Debug)]
pub(super) struct Forward {
    /// The find as it arrived to us.
    pub find: Find,
    /// The peer it went to.
    pub to: SocketAddr,
    pub at: Time,
    /// Peers found dead on its way from us, in the order they were tried (`to` not included).
    pub dead: Vec<SocketAddr>,
}

#[derive(Default)]
pub(super) struct Forwards {
    /// In sending order: `at` never decreases from front to back.
    sent: VecDeque<Forward>,
}

impl Forwards {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sent.len()
    }

    /// Remembers a forward made now (`fwd.at`); forgets the expired and, past the bound, the oldest.
    pub fn record(&mut self, fwd: Forward, window_ms: u64) {
        self.prune(fwd.at, window_ms);
        if self.sent.len() == FORWARDS_MAX {
            self.sent.pop_front();
        }
        self.sent.push_back(fwd);
    }

    /// The unexpired forwards that went to `peer`, taken out.
    pub fn take_to(&mut self, peer: SocketAddr, now: Time, window_ms: u64) -> Vec<Forward> {
        self.prune(now, window_ms);
        if !self.sent.iter().any(|f| f.to == peer) {
            return Vec::new();
        }
        let (to_peer, rest): (VecDeque<Forward>, VecDeque<Forward>) =
            std::mem::take(&mut self.sent)
                .into_iter()
                .partition(|f| f.to == peer);
        self.sent = rest;
        to_peer.into()
    }

    fn prune(&mut self, now: Time, window_ms: u64) {
        while self
            .sent
            .front()
            .is_some_and(|f| now.ms_since(f.at) >= window_ms)
        {
            self.sent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chord::test_peer as peer;

    fn fwd(request: u64, to: u8, at: u64) -> Forward {
        Forward {
            find: Find {
                request,
                target: peer(200).id,
                hops: 1,
                last_hop: false,
                reply_to: peer(1).addr,
            },
            to: peer(to).addr,
            at: Time::from_ms(at),
            dead: Vec::new(),
        }
    }

    #[test]
    fn forwards_to_a_dead_peer_are_taken_in_order_and_the_rest_stay() {
        let mut f = Forwards::default();
        f.record(fwd(1, 10, 0), 500);
        f.record(fwd(2, 20, 10), 500);
        f.record(fwd(3, 10, 20), 500);
        let taken: Vec<u64> = f
            .take_to(peer(10).addr, Time::from_ms(30), 500)
            .iter()
            .map(|x| x.find.request)
            .collect();
        assert_eq!(taken, vec![1, 3]);
        assert_eq!(f.len(), 1);
        assert!(f.take_to(peer(10).addr, Time::from_ms(30), 500).is_empty());
    }

    #[test]
    fn forwards_expire_after_the_window_and_the_table_is_bounded() {
        let mut f = Forwards::default();
        f.record(fwd(1, 10, 0), 500);
        f.record(fwd(2, 10, 400), 500);
        // At 500 ms the first has expired, the second has not.
        let taken = f.take_to(peer(10).addr, Time::from_ms(500), 500);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].find.request, 2);
        for i in 0..FORWARDS_MAX as u64 + 10 {
            f.record(fwd(i, 20, 1000), 500);
        }
        assert_eq!(f.len(), FORWARDS_MAX);
        let taken = f.take_to(peer(20).addr, Time::from_ms(1000), 500);
        assert_eq!(
            taken.first().map(|x| x.find.request),
            Some(10),
            "oldest dropped"
        );
        assert_eq!(f.len(), 0);
    }
}
