//! The reference model: the sorted set of live node ids says who owns every key and what every
//! successor list and predecessor should be. Also the ring invariants of ../shared/CHORD.md
//! (verdi-chord's checker), computed over the simulator's nodes.

use super::Sim;
use crate::id::{Id, in_half_open};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The live node responsible for `key`: the first id at or after it, wrapping.
pub fn owner(sorted: &[(Id, SocketAddr)], key: &Id) -> Id {
    match sorted.binary_search_by(|(id, _)| id.cmp(key)) {
        Ok(i) => sorted[i].0,
        Err(i) => sorted[i % sorted.len()].0,
    }
}

/// Zave's "best successor": the first live entry of a node's successor list. An entry lives when
/// a node at its address holds its id (a node that moved to another slot left its old id).
pub fn best_successor(sim: &Sim, addr: SocketAddr) -> Option<SocketAddr> {
    sim.nodes[&addr]
        .node
        .successors()
        .iter()
        .find(|p| {
            sim.nodes
                .get(&p.addr)
                .is_some_and(|n| n.node.me().id == p.id)
        })
        .map(|p| p.addr)
}

/// at_least_one_ring, at_most_one_ring, ordered_ring and connected_appendages over the joined live
/// nodes, following best successors. A lone joined node with no successor is a ring of one.
pub fn check_rings(sim: &Sim) -> Result<(), String> {
    let joined: Vec<SocketAddr> = sim
        .nodes
        .iter()
        .filter(|(_, n)| n.node.joined())
        .map(|(a, _)| *a)
        .collect();
    if joined.is_empty() {
        return Ok(());
    }
    // Find the cycle reached from the first joined node.
    let mut seen: BTreeMap<SocketAddr, usize> = BTreeMap::new();
    let mut at = joined[0];
    let mut path = Vec::new();
    loop {
        if let Some(&i) = seen.get(&at) {
            let cycle = &path[i..];
            check_ordered(sim, cycle)?;
            return check_all_reach(sim, &joined, cycle);
        }
        seen.insert(at, path.len());
        path.push(at);
        match best_successor(sim, at) {
            Some(next) => at = next,
            None if path.len() == 1 => return check_all_reach(sim, &joined, &path),
            None => return Err(format!("{at} has no live successor but others point to it")),
        }
    }
}

/// ordered_ring: going round the cycle, ids increase with exactly one wrap.
fn check_ordered(sim: &Sim, cycle: &[SocketAddr]) -> Result<(), String> {
    let ids: Vec<Id> = cycle.iter().map(|a| sim.nodes[a].node.me().id).collect();
    let wraps = (0..ids.len())
        .filter(|&i| ids[(i + 1) % ids.len()] <= ids[i])
        .count();
    if ids.len() > 1 && wraps != 1 {
        return Err(format!(
            "ring of {} is not ordered ({} wraps)",
            ids.len(),
            wraps
        ));
    }
    Ok(())
}

/// at_most_one_ring and connected_appendages: every joined node reaches the same cycle.
fn check_all_reach(sim: &Sim, joined: &[SocketAddr], cycle: &[SocketAddr]) -> Result<(), String> {
    let mut on_ring: BTreeMap<SocketAddr, bool> = cycle.iter().map(|a| (*a, true)).collect();
    for &start in joined {
        let mut path = Vec::new();
        let mut at = start;
        let reached = loop {
            if let Some(&r) = on_ring.get(&at) {
                break r;
            }
            if path.len() > joined.len() {
                break false; // a second cycle
            }
            path.push(at);
            match best_successor(sim, at) {
                Some(next) => at = next,
                None => break false,
            }
        };
        if !reached {
            return Err(format!(
                "{start} does not reach the ring (second ring or dead end)"
            ));
        }
        for a in path {
            on_ring.insert(a, true);
        }
    }
    Ok(())
}

/// ideal_ring: every live node's successor list and predecessor are what the sorted live ids imply.
pub fn check_ideal(sim: &Sim) -> Result<(), String> {
    let sorted = sim.live_sorted();
    let n = sorted.len();
    if let Some((id, _)) = sorted.iter().find(|(_, a)| !sim.node(*a).joined()) {
        return Err(format!("{} has not joined", id.short()));
    }
    for (i, (id, addr)) in sorted.iter().enumerate() {
        let node = sim.node(*addr);
        let r = sim.node_cfg.successors.min(n - 1);
        let want: Vec<Id> = (1..=r).map(|k| sorted[(i + k) % n].0).collect();
        let have: Vec<Id> = node.successors().iter().map(|p| p.id).collect();
        if have != want {
            return Err(format!(
                "{} successors {:?}, oracle {:?}",
                id.short(),
                have,
                want
            ));
        }
        let want_pred = (n > 1).then(|| sorted[(i + n - 1) % n].0);
        if node.predecessor().map(|p| p.id) != want_pred {
            return Err(format!(
                "{} predecessor {:?}, oracle {:?}",
                id.short(),
                node.predecessor().map(|p| p.id),
                want_pred
            ));
        }
    }
    Ok(())
}

/// How far the ring is from ideal: nodes not joined, then among the joined ones those whose
/// first successor, successor list and predecessor differ from the oracle's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gaps {
    pub unjoined: usize,
    pub successor: usize,
    pub successor_list: usize,
    pub predecessor: usize,
}

pub fn gaps(sim: &Sim) -> Gaps {
    let sorted = sim.live_sorted();
    let n = sorted.len();
    let r = sim.node_cfg.successors.min(n.saturating_sub(1));
    let mut gaps = Gaps::default();
    for (i, (_, addr)) in sorted.iter().enumerate() {
        let node = sim.node(*addr);
        if !node.joined() {
            gaps.unjoined += 1;
            continue;
        }
        let have: Vec<Id> = node.successors().iter().map(|p| p.id).collect();
        let want: Vec<Id> = (1..=r).map(|k| sorted[(i + k) % n].0).collect();
        gaps.successor += usize::from(have.first() != want.first());
        gaps.successor_list += usize::from(have != want);
        let want_pred = (n > 1).then(|| sorted[(i + n - 1) % n].0);
        gaps.predecessor += usize::from(node.predecessor().map(|p| p.id) != want_pred);
    }
    gaps
}

/// Does `key` belong to `owner_id` per the oracle?
pub fn owns(sorted: &[(Id, SocketAddr)], owner_id: &Id, key: &Id) -> bool {
    let i = sorted
        .binary_search_by(|(id, _)| id.cmp(owner_id))
        .expect("owner is live");
    let pred = sorted[(i + sorted.len() - 1) % sorted.len()].0;
    sorted.len() == 1 || in_half_open(key, &pred, owner_id)
}
