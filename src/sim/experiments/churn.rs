//! Churn (ToN 2003, §V-E, Table III): a warm-started ring, then joins and crashes at a total rate
//! R per second (Poisson; each event a join or a crash with even odds, applied on whole seconds)
//! and lookups from random live nodes at a steady rate. Each lookup is judged against the
//! oracle's owner among the joined nodes when it is answered; one unanswered after 10 s counts
//! as failed (the prober does not retry).

use super::{Periods, Table, mean, peak_rss_mib, quantile};
use crate::id::Id;
use crate::sim::{NetConfig, Sim, oracle};
use crate::time::Prng;
use std::net::SocketAddr;
use std::time::Instant;

/// One run's parameters.
#[derive(Clone, Copy, Debug)]
pub struct ChurnSetup {
    pub n: usize,
    /// Joins plus crashes per second, ring-wide.
    pub rate_per_s: f64,
    pub seconds: u64,
    pub lookups_per_s: u64,
    pub seed: u64,
    pub periods: Periods,
}

/// One run's outcome.
#[derive(Clone, Debug)]
pub struct ChurnRow {
    pub setup: ChurnSetup,
    pub joins: u64,
    pub crashes: u64,
    pub asked: u64,
    pub right: u64,
    /// Answered naming a node other than the oracle's owner.
    pub wrong: u64,
    /// Path length of the lookups answered right: mean, 1st and 99th percentiles.
    pub mean_path: f64,
    pub path_p1: u64,
    pub path_p99: u64,
    pub events_per_node_s: f64,
    pub warm_s: f64,
    pub run_s: f64,
    pub peak_rss_mib: u64,
}

impl ChurnRow {
    /// Lookups not answered within 10 s.
    pub fn unanswered(&self) -> u64 {
        self.asked - self.right - self.wrong
    }

    /// Lookups unanswered or answered wrong, as a share of those asked, in percent.
    pub fn failed_pct(&self) -> f64 {
        100.0 * (self.asked - self.right) as f64 / self.asked.max(1) as f64
    }
}

/// Runs `setup` and measures.
pub fn churn(setup: ChurnSetup) -> ChurnRow {
    let wall = Instant::now();
    let mut sim = Sim::new(
        setup.seed,
        setup.periods.node_config(),
        NetConfig::default(),
    );
    let mut live: Vec<SocketAddr> = sim.warm_start(setup.n);
    let warm = wall.elapsed();
    let mut rng = Prng::new(setup.seed ^ 0x5ca1e);
    let start = sim.now();
    let stop = start + setup.seconds * 1000;
    let mut next_churn = start + exp_ms(&mut rng, setup.rate_per_s);
    let (mut joins, mut crashes, mut asked) = (0u64, 0u64, 0u64);
    let mut verdicts = Verdicts::new(&sim);
    let events_before = sim.events;
    let mut second = start;
    while second < stop {
        verdicts.judge(&mut sim);
        let end = second + 1000;
        while next_churn <= end {
            if churn_event(&mut sim, &mut live, &mut verdicts, &mut rng) {
                joins += 1;
            } else {
                crashes += 1;
            }
            next_churn = next_churn + exp_ms(&mut rng, setup.rate_per_s);
        }
        asked += ask(&mut sim, &live, setup.lookups_per_s, &mut rng);
        // In 10 ms steps: answers are judged before the ring changes again.
        for _ in 0..100 {
            sim.run_for(10);
            verdicts.judge(&mut sim);
        }
        second = end;
    }
    // The last second's lookups get their 10 s.
    sim.run_for(10_000);
    verdicts.judge(&mut sim);
    let mut paths = std::mem::take(&mut verdicts.paths);
    paths.sort();
    let simulated_s = sim.now().ms_since(start) as f64 / 1000.0;
    ChurnRow {
        setup,
        joins,
        crashes,
        asked,
        right: verdicts.right,
        wrong: verdicts.wrong,
        mean_path: mean(&paths),
        path_p1: quantile(&paths, 0.01),
        path_p99: quantile(&paths, 0.99),
        events_per_node_s: (sim.events - events_before) as f64 / setup.n as f64 / simulated_s,
        warm_s: warm.as_secs_f64(),
        run_s: (wall.elapsed() - warm).as_secs_f64(),
        peak_rss_mib: peak_rss_mib(),
    }
}

/// One churn event with even odds: a node joins through a random live node (true), or a random
/// live node crashes (false).
fn churn_event(
    sim: &mut Sim,
    live: &mut Vec<SocketAddr>,
    verdicts: &mut Verdicts,
    rng: &mut Prng,
) -> bool {
    if rng.chance(0.5) {
        let via = live[rng.below(live.len() as u64) as usize];
        let added = sim.add_node(Some(via));
        verdicts.added(added);
        live.push(added);
        true
    } else {
        let victim = live.swap_remove(rng.below(live.len() as u64) as usize);
        sim.crash(victim);
        verdicts.crashed(victim);
        false
    }
}

/// Probes `count` random keys, each from a random node of `live` that has joined (one still
/// joining is in no ring to look up in); returns how many it asked (none when no node has joined).
fn ask(sim: &mut Sim, live: &[SocketAddr], count: u64, rng: &mut Prng) -> u64 {
    let members: Vec<SocketAddr> = live
        .iter()
        .copied()
        .filter(|a| sim.nodes[a].node.joined())
        .collect();
    if members.is_empty() {
        return 0;
    }
    for _ in 0..count {
        let at = members[rng.below(members.len() as u64) as usize];
        let key = Id::hash(&rng.next_u64().to_be_bytes());
        sim.probe(at, key);
    }
    count
}

/// Exponential waiting time with `rate_per_s`, in ms.
fn exp_ms(rng: &mut Prng, rate_per_s: f64) -> u64 {
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    (-(1.0 - u).ln() / rate_per_s * 1000.0).round() as u64
}

/// The ring as the papers' oracle sees it: the nodes that have joined, by id.
fn joined_sorted(sim: &Sim) -> Vec<(Id, SocketAddr)> {
    let mut v: Vec<(Id, SocketAddr)> = sim
        .nodes
        .iter()
        .filter(|(_, n)| n.node.joined())
        .map(|(a, n)| (n.node.me().id, *a))
        .collect();
    v.sort();
    v
}

/// Has a joining node's successor taken it as predecessor? From then on it holds the keys of its
/// range (the successor hands them over) and the successor refers finds for them to it; until
/// then the successor holds them and rightly answers for them.
fn taken_in(sim: &Sim, addr: SocketAddr) -> bool {
    let node = &sim.nodes[&addr].node;
    node.joined()
        && oracle::best_successor(sim, addr)
            .is_some_and(|s| sim.nodes[&s].node.predecessor() == Some(node.me()))
}

/// The lookups' verdicts, against the ring of joined nodes kept up to date as churn goes on
/// (rebuilding it for every answer costs O(N log N) at 10^5 nodes).
#[derive(Default)]
struct Verdicts {
    right: u64,
    wrong: u64,
    paths: Vec<u64>,
    ring: Vec<(Id, SocketAddr)>,
    /// Added and not yet joined.
    joining: Vec<SocketAddr>,
}

impl Verdicts {
    fn new(sim: &Sim) -> Verdicts {
        Verdicts {
            ring: joined_sorted(sim),
            ..Verdicts::default()
        }
    }

    fn added(&mut self, addr: SocketAddr) {
        self.joining.push(addr);
    }

    fn crashed(&mut self, addr: SocketAddr) {
        self.ring.retain(|(_, a)| *a != addr);
        self.joining.retain(|a| *a != addr);
    }

    /// Judges the answers in since the last call (a step of at most 10 ms) against the ring as it
    /// was before and after the nodes taken in during the step: an answer is right against either,
    /// as the step does not tell which came first.
    fn judge(&mut self, sim: &mut Sim) {
        if sim.probes.is_empty() {
            return;
        }
        let probes = std::mem::take(&mut sim.probes);
        let owners_before: Vec<Id> = probes
            .iter()
            .map(|p| oracle::owner(&self.ring, &p.key))
            .collect();
        let ring = &mut self.ring;
        self.joining.retain(|a| {
            if !taken_in(sim, *a) {
                return true;
            }
            let node = &sim.nodes[a].node;
            let entry = (node.me().id, *a);
            let at = ring.partition_point(|e| *e < entry);
            ring.insert(at, entry);
            false
        });
        for (p, before) in probes.into_iter().zip(owners_before) {
            if p.owner == before || p.owner == oracle::owner(&self.ring, &p.key) {
                self.right += 1;
                self.paths.push(p.path_length as u64);
            } else {
                self.wrong += 1;
            }
        }
    }
}

impl Table for ChurnRow {
    fn columns() -> &'static [&'static str] {
        &[
            "periods",
            "n",
            "rate_per_s",
            "seconds",
            "joins",
            "crashes",
            "lookups",
            "right",
            "wrong",
            "unanswered",
            "failed_pct",
            "mean_path",
            "path_p1",
            "path_p99",
            "events_per_node_s",
            "run_s",
        ]
    }

    fn cells(&self) -> Vec<String> {
        let s = &self.setup;
        vec![
            s.periods.name().to_string(),
            s.n.to_string(),
            format!("{:.2}", s.rate_per_s),
            s.seconds.to_string(),
            self.joins.to_string(),
            self.crashes.to_string(),
            self.asked.to_string(),
            self.right.to_string(),
            self.wrong.to_string(),
            self.unanswered().to_string(),
            format!("{:.2}", self.failed_pct()),
            format!("{:.2}", self.mean_path),
            self.path_p1.to_string(),
            self.path_p99.to_string(),
            format!("{:.1}", self.events_per_node_s),
            format!("{:.1}", self.run_s),
        ]
    }
}
