//! Keys per node (ToN 2003, Fig. 8): N nodes, K random keys, each held by its owner; the 1st and
//! 99th percentiles and the maximum of the keys per node. Two placements of the same hosts (the
//! simulator's addresses): at random, as the paper places nodes (every node on slot 0 of its
//! address, `SHA-256(IP ‖ 0)`: the simulator's warm-started ring), and ours, each host joining in
//! turn at the best of its `id_slots_per_ip` slot ids by [`crate::balance::choose_slot`] (a model
//! of sequential joins: the ranges a joiner's lookups would report, without the simulated messages).

use super::{Periods, Table};
use crate::balance::Balance;
use crate::id::Id;
use crate::sim::warm::chosen_slots;
use crate::sim::{NetConfig, Sim, oracle};
use crate::time::Prng;
use std::net::SocketAddr;

/// One placement's keys per node.
#[derive(Clone, Debug)]
pub struct LoadRow {
    pub placement: &'static str,
    pub n: usize,
    pub keys: usize,
    /// Keys per node: 1st and 99th percentiles, maximum, and the ratios to the mean.
    pub p1: u64,
    pub p99: u64,
    pub max: u64,
    pub balance: Balance,
}

/// Random placement and ours for `n` nodes and `keys` random keys.
pub fn load(n: usize, keys: usize, seed: u64) -> [LoadRow; 2] {
    let cfg = Periods::Paper.node_config();
    let slots = cfg.id_slots_per_ip;
    let mut sim = Sim::new(seed, cfg, NetConfig::default());
    let addrs = sim.warm_start(n);
    let random: Vec<Id> = sim.live_sorted().into_iter().map(|(id, _)| id).collect();
    let ours = sequential_joins(&addrs, slots);
    let keys: Vec<Id> = {
        let mut rng = Prng::new(seed ^ 0x10ad);
        (0..keys)
            .map(|_| Id::hash(&rng.next_u64().to_be_bytes()))
            .collect()
    };
    [
        row("random (slot 0)", &random, &keys),
        row("ours (best of 8 slots)", &ours, &keys),
    ]
}

/// The ring after each host of `addrs` joined in turn at its chosen slot ([`chosen_slots`]); ids
/// sorted.
fn sequential_joins(addrs: &[SocketAddr], slots: u8) -> Vec<Id> {
    let chosen = chosen_slots(addrs, slots);
    let mut ids: Vec<Id> = (addrs.iter().zip(chosen))
        .map(|(addr, slot)| Id::of_addr_slot(*addr, slot))
        .collect();
    ids.sort();
    ids
}

/// Keys per node of the ring `ids` (sorted).
fn row(placement: &'static str, ids: &[Id], keys: &[Id]) -> LoadRow {
    let ring: Vec<(Id, SocketAddr)> = ids.iter().map(|id| (*id, crate::sim::PROBER)).collect();
    let mut counts = vec![0u64; ids.len()];
    for key in keys {
        let owner = oracle::owner(&ring, key);
        counts[ids.binary_search(&owner).expect("a node")] += 1;
    }
    let balance = Balance::of_counts(&counts).expect("keys");
    counts.sort();
    let rank =
        |q: f64| counts[((q * counts.len() as f64).ceil() as usize).clamp(1, counts.len()) - 1];
    LoadRow {
        placement,
        n: ids.len(),
        keys: keys.len(),
        p1: rank(0.01),
        p99: rank(0.99),
        max: counts[counts.len() - 1],
        balance,
    }
}

impl Table for LoadRow {
    fn columns() -> &'static [&'static str] {
        &[
            "placement",
            "n",
            "keys",
            "mean",
            "p1",
            "p99",
            "max",
            "p1_over_mean",
            "p99_over_mean",
            "max_over_mean",
            "empty_nodes",
        ]
    }

    fn cells(&self) -> Vec<String> {
        let b = &self.balance;
        vec![
            self.placement.to_string(),
            self.n.to_string(),
            self.keys.to_string(),
            format!("{:.1}", b.mean),
            self.p1.to_string(),
            self.p99.to_string(),
            self.max.to_string(),
            format!("{:.2}", b.p1),
            format!("{:.2}", b.p99),
            format!("{:.2}", b.max),
            b.empty.to_string(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11: joiners taking the best of 8 slots hold far more even key counts than random ids.
    #[test]
    fn choosing_slots_evens_the_keys_per_node() {
        let [random, ours] = load(500, 50_000, 3);
        assert_eq!((random.n, ours.n), (500, 500));
        assert!(random.balance.max > 3.0, "random max {:?}", random.balance);
        assert!(ours.balance.max < 2.5, "ours max {:?}", ours.balance);
        assert!(ours.p99 < random.p99);
    }
}
