//! Warm start: a converged ring of `n` nodes built at once from the oracle's view, as the Chord
//! papers' simulators begin their experiments. Joining 10^5 nodes one by one would cost hours of
//! stabilization before the first lookup; with a warm start the experiment (lookups, churn,
//! failures) runs on the same `Node` code from the first simulated millisecond.

use super::Sim;
use crate::balance::{Candidate, choose_slot};
use crate::chord::WarmTables;
use crate::chord::ring::FINGERS;
use crate::id::Id;
use crate::msg::Peer;
use std::collections::BTreeSet;
use std::net::SocketAddr;

impl Sim {
    /// Adds `n` nodes to an empty simulation, each with the predecessor, successor list,
    /// predecessor chain and fingers that a converged ring gives it; returns their addresses.
    /// Every node keeps the id it was created with (slot 0 of its address unless configured):
    /// random positions, as the papers place nodes.
    pub fn warm_start(&mut self, n: usize) -> Vec<SocketAddr> {
        self.warm_start_placed(n, |sim, _| sim.live_sorted())
    }

    /// As [`Sim::warm_start`], each node standing where it would had the nodes joined one by one,
    /// each at the best of its slot ids ([`chosen_slots`]).
    pub fn warm_start_chosen(&mut self, n: usize) -> Vec<SocketAddr> {
        let slots = self.node_cfg.id_slots_per_ip;
        self.warm_start_placed(n, |_, addrs| {
            let chosen = chosen_slots(addrs, slots);
            (addrs.iter().zip(chosen))
                .map(|(&addr, slot)| (Id::of_addr_slot(addr, slot), addr))
                .collect()
        })
    }

    /// A warm start with the ids `place` gives the nodes (their addresses in the order added).
    fn warm_start_placed(
        &mut self,
        n: usize,
        place: impl FnOnce(&Sim, &[SocketAddr]) -> Vec<(Id, SocketAddr)>,
    ) -> Vec<SocketAddr> {
        assert!(self.nodes.is_empty(), "a warm start builds the whole ring");
        // The global checks are O(N) per event; the caller turns them back on if it wants them.
        self.check_every_event = false;
        let addrs: Vec<SocketAddr> = (0..n).map(|_| self.add_node(None)).collect();
        let mut ring: Vec<Peer> = (place(self, &addrs).into_iter())
            .map(|(id, addr)| Peer { id, addr })
            .collect();
        ring.sort_by_key(|p| p.id);
        let cfg = &self.node_cfg;
        let others = n.saturating_sub(1);
        let succs_len = cfg.successors.min(others);
        let chain_len = (cfg.replication_max as usize)
            .max(cfg.successors)
            .min(others);
        for (i, me) in ring.iter().enumerate() {
            let ahead = |k: usize| ring[(i + k) % n];
            let behind = |k: usize| ring[(i + n - k % n) % n];
            let tables = WarmTables {
                id: me.id,
                pred: behind(1),
                succs: (1..=succs_len).map(ahead).collect(),
                far_preds: (2..=chain_len).map(behind).collect(),
                fingers: (0..FINGERS)
                    .map(|k| (k, successor_of(&ring, &me.id.add_pow2(k))))
                    .filter(|(_, p)| p.id != me.id)
                    .collect(),
            };
            let node = self.nodes.get_mut(&me.addr).expect("just added");
            node.node.warm_start(tables);
        }
        addrs
    }
}

/// The slot each host of `addrs` takes when they join one by one, each at the slot
/// [`choose_slot`] picks among its `slots` ids as the ring stands (the first on slot 0): a model of
/// the joins' lookups without the simulated messages.
pub fn chosen_slots(addrs: &[SocketAddr], slots: u8) -> Vec<u8> {
    let mut ring: BTreeSet<Id> = BTreeSet::new();
    let mut chosen = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let candidates: Vec<Candidate> = (0..slots)
            .map(|slot| {
                let id = Id::of_addr_slot(*addr, slot);
                let succ = ring.range(id..).next().or(ring.first()).copied();
                let pred = succ.and_then(|s| ring.range(..s).next_back().or(ring.last()).copied());
                Candidate {
                    slot,
                    id,
                    pred: pred.unwrap_or(id),
                    succ: succ.unwrap_or(id),
                }
            })
            .collect();
        let slot = if ring.is_empty() {
            0
        } else {
            choose_slot(&candidates).expect("a free slot")
        };
        ring.insert(candidates[slot as usize].id);
        chosen.push(slot);
    }
    chosen
}

/// The first node at or after `key` on the sorted ring (wrapping round).
fn successor_of(ring: &[Peer], key: &Id) -> Peer {
    let at = ring.partition_point(|p| p.id < *key);
    ring[at % ring.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{NetConfig, oracle};

    #[test]
    fn a_warm_ring_is_the_oracle_ring_and_answers_lookups_right() {
        let mut sim = Sim::new(5, Sim::default_node_config(), NetConfig::default());
        sim.warm_start(200);
        oracle::check_ideal(&sim).expect("warm tables are the oracle's");
        let paths = sim
            .probe_random(200)
            .expect("every answer is the oracle's owner");
        let mean = paths.iter().map(|&p| p as f64).sum::<f64>() / paths.len() as f64;
        // Chord: about half of log2 N hops (3.8 at N = 200).
        assert!(mean < 5.0, "mean path {mean}");
    }
}
