//! Simultaneous failures (ToN 2003, Table II): a settled ring of N nodes with r = 20, a fraction p of
//! the nodes fails at once, and lookups start at that very instant from random live nodes, as a
//! stranger's PEER FIND answered to the simulator's prober (`Sim::probe`). Each answer is judged
//! against the oracle's owner among the live nodes. A lookup not yet answered is asked again every
//! `ATTEMPT_GAP_MS` (each attempt an independent PEER FIND from the same node), up to `ATTEMPTS`.
//!
//! With our periods the ring is grown by joins within 5 s and run to the oracle's ideal ring (the
//! join path is part of the test); with the papers' 30 s periods that would take many minutes of
//! stabilization, so the ring is warm-started and run one period before the failure.

use super::{Periods, Table, mean, quantile};
use crate::id::{Id, Key};
use crate::sim::{NetConfig, Sim, oracle};
use crate::time::Prng;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

/// The fractions of nodes failed at once, as in the paper's Table II.
pub const FRACTIONS: [f64; 5] = [0.1, 0.2, 0.3, 0.4, 0.5];
/// Attempts per lookup with the client's retries, the first included, and the pause between them.
pub const ATTEMPTS: u8 = 5;
const ATTEMPT_GAP_MS: u64 = 1000;
/// How long after the failure answers count.
const WINDOW_MS: u64 = 10_000;
/// The resolution the answers' arrival times are taken at.
const STEP_MS: u64 = 5;

/// How the failed nodes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Connections to them are refused (`Sim::crash`).
    Refusing,
    /// Messages to them vanish (`Sim::silence`).
    Silent,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Refusing => "refusing",
            Fault::Silent => "silent",
        }
    }
}

/// One run: `n` nodes, a fraction `p` failing as `fault` says, `lookups` lookups.
#[derive(Clone, Copy, Debug)]
pub struct FailureSetup {
    pub n: usize,
    pub p: f64,
    pub lookups: usize,
    pub seed: u64,
    pub fault: Fault,
    pub periods: Periods,
}

/// One row of the table: one fraction p of the nodes failed.
#[derive(Clone, Debug)]
pub struct FailureRow {
    pub setup: FailureSetup,
    pub live: usize,
    pub first_right: usize,
    pub first_wrong: usize,
    pub first_lost: usize,
    /// Lookups with no right answer after every attempt.
    pub failed: usize,
    /// Answers naming a wrong owner, any attempt.
    pub wrong: usize,
    /// Path length of first attempts answered right: mean, 1st and 99th percentiles.
    pub mean_path: f64,
    pub path_p1: u64,
    pub path_p99: u64,
    pub latency_p50_ms: u64,
    pub latency_p99_ms: u64,
    /// Refused forwards per find forwarded, ring-wide, in the first second after the failure.
    pub refused_per_forward: f64,
    /// Forwards with no FIND TAKEN in time per find forwarded, ring-wide, in the first second.
    pub timeouts_per_forward: f64,
    /// Finds dropped by some node with every hop it knew dead or the loop guard spent, ring-wide
    /// (probes and the ring's own lookups), in the window.
    pub given_up: u64,
    pub wall_s: f64,
}

impl FailureRow {
    pub fn first_right_pct(&self) -> f64 {
        100.0 * self.first_right as f64 / self.setup.lookups as f64
    }

    /// The paper's "timeouts per lookup", estimated: a path of h delivered forwards, each send
    /// refused with chance q, takes h·q/(1−q) refused sends on the way.
    pub fn refused_per_lookup(&self) -> f64 {
        per_lookup(self.mean_path, self.refused_per_forward)
    }

    /// The same estimate for the per-hop timeouts (the silent variant's refusals).
    pub fn timeouts_per_lookup(&self) -> f64 {
        per_lookup(self.mean_path, self.timeouts_per_forward)
    }
}

/// Fails a fraction `p` of a fresh ring's nodes and issues the lookups at that instant.
pub fn failures(setup: FailureSetup) -> FailureRow {
    let wall = Instant::now();
    let mut sim = ring(setup.n, setup.seed, setup.periods);
    let mut rng = Prng::new(setup.seed ^ 0x5eed_fa11);
    let mut addrs: Vec<SocketAddr> = sim.nodes.keys().copied().collect();
    for i in (1..addrs.len()).rev() {
        addrs.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let dead = (setup.p * setup.n as f64).round() as usize;
    for a in &addrs[..dead] {
        match setup.fault {
            Fault::Refusing => sim.crash(*a),
            Fault::Silent => sim.silence(*a),
        }
    }
    let live = &addrs[dead..];
    let mut lookups = Lookups::start(&mut sim, live, setup.lookups, &mut rng);
    let per_hop = lookups.run(&mut sim);
    lookups.row(setup, live.len(), per_hop, &sim, wall)
}

/// A settled ring of `n` nodes with r = 20 at `periods` (see the module's note).
fn ring(n: usize, seed: u64, periods: Periods) -> Sim {
    let mut sim = Sim::new(seed, periods.node_config(), NetConfig::default());
    sim.check_every_event = false;
    if periods == Periods::Paper {
        sim.warm_start(n);
        sim.run_for(30_000);
        return sim;
    }
    sim.grow(n, 5_000);
    if let Err(e) = sim.converge(600_000) {
        panic!("seed {seed}: {n} nodes did not converge: {e} (SIM_SEED={seed})");
    }
    // Fingers: one lookup per 250 ms, about log2 n of them beyond the successor.
    sim.run_for(10_000);
    sim
}

/// A path of `h` delivered forwards, each send failing with chance `q`, takes h·q/(1−q) failed sends.
fn per_lookup(h: f64, q: f64) -> f64 {
    h * q / (1.0 - q)
}

/// The key attempt `attempt` of a lookup uses: the lookup's key with its last byte set to the
/// attempt, so every attempt's answer is told apart (and each is judged for its own key).
fn attempt_key(base: &Key, attempt: u8) -> Key {
    let mut k = *base;
    k.0[31] = attempt;
    k
}

/// PEER FINDs forwarded, rerouted, given up and timed out per hop, summed over the live nodes.
fn counters(sim: &Sim) -> (u64, u64, u64, u64) {
    sim.nodes.values().fold((0, 0, 0, 0), |(f, r, g, t), n| {
        let s = n.node.stats();
        (
            f + s.finds_forwarded,
            r + s.finds_rerouted,
            g + s.finds_given_up,
            t + s.finds_hop_timeouts,
        )
    })
}

/// The lookups under way and what came of them. Lookup i starts at node `from[i]` with key
/// `keys[i]` (last byte 0: attempt 0).
struct Lookups {
    from: Vec<SocketAddr>,
    keys: Vec<Key>,
    index: BTreeMap<[u8; 31], usize>,
    /// The oracle's ring of live nodes.
    sorted: Vec<(Id, SocketAddr)>,
    /// Per lookup: the first attempt's answer (right?, path, ms after the failure).
    first: Vec<Option<(bool, u8, u64)>>,
    /// Per lookup: some attempt was answered right.
    answered: Vec<bool>,
    wrong: usize,
    counters_before: (u64, u64, u64, u64),
}

impl Lookups {
    /// Sends the first attempt of `count` lookups from random nodes of `live`.
    fn start(sim: &mut Sim, live: &[SocketAddr], count: usize, rng: &mut Prng) -> Lookups {
        let from: Vec<SocketAddr> = (0..count)
            .map(|_| live[rng.below(live.len() as u64) as usize])
            .collect();
        let keys: Vec<Key> = (0..count)
            .map(|_| attempt_key(&Id::hash(&rng.next_u64().to_be_bytes()), 0))
            .collect();
        let index = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.0[..31].try_into().expect("31 bytes"), i))
            .collect();
        sim.probes.clear();
        for (at, key) in from.iter().zip(&keys) {
            sim.probe(*at, *key);
        }
        Lookups {
            from,
            keys,
            index,
            sorted: sim.live_sorted(),
            first: vec![None; count],
            answered: vec![false; count],
            wrong: 0,
            counters_before: counters(sim),
        }
    }

    /// Runs the window: judges answers as they come, retries the unanswered; returns the refused
    /// sends and the hop timeouts per find forwarded in the first second.
    fn run(&mut self, sim: &mut Sim) -> (f64, f64) {
        let start = sim.now();
        let mut attempts_made = 1u8;
        let mut per_hop = None;
        let mut seen = 0;
        while sim.now().ms_since(start) < WINDOW_MS {
            sim.run_for(STEP_MS);
            let ms = sim.now().ms_since(start);
            self.judge(&sim.probes[seen..], ms);
            seen = sim.probes.len();
            if ms >= 1000 && per_hop.is_none() {
                per_hop = Some(self.per_hop(sim));
            }
            if attempts_made < ATTEMPTS && ms >= attempts_made as u64 * ATTEMPT_GAP_MS {
                for i in (0..self.keys.len()).filter(|&i| !self.answered[i]) {
                    sim.probe(self.from[i], attempt_key(&self.keys[i], attempts_made));
                }
                attempts_made += 1;
            }
        }
        per_hop.unwrap_or_default()
    }

    fn judge(&mut self, answers: &[crate::sim::ProbeResult], ms: u64) {
        for probe in answers {
            let i = self.index[&probe.key.0[..31]];
            let right = probe.owner == oracle::owner(&self.sorted, &probe.key);
            self.wrong += usize::from(!right);
            self.answered[i] |= right;
            if probe.key.0[31] == 0 {
                self.first[i] = Some((right, probe.path_length, ms));
            }
        }
    }

    /// Refused sends and hop timeouts per find forwarded since the failure, ring-wide.
    fn per_hop(&self, sim: &Sim) -> (f64, f64) {
        let (forwarded0, rerouted0, given_up0, timeouts0) = self.counters_before;
        let (forwarded, rerouted, given_up, timeouts) = counters(sim);
        let timeouts = timeouts - timeouts0;
        // Every reroute or give-up follows a refusal or a timeout.
        let refused = rerouted - rerouted0 + given_up - given_up0 - timeouts;
        let forwarded = (forwarded - forwarded0).max(1) as f64;
        (refused as f64 / forwarded, timeouts as f64 / forwarded)
    }

    fn row(
        &self,
        setup: FailureSetup,
        live: usize,
        (refused, timeouts): (f64, f64),
        sim: &Sim,
        wall: Instant,
    ) -> FailureRow {
        let right: Vec<(u64, u64)> = self
            .first
            .iter()
            .flatten()
            .filter(|(right, ..)| *right)
            .map(|&(_, path, ms)| (path as u64, ms))
            .collect();
        let mut paths: Vec<u64> = right.iter().map(|&(path, _)| path).collect();
        paths.sort();
        let mut latencies: Vec<u64> = right.iter().map(|&(_, ms)| ms).collect();
        latencies.sort();
        FailureRow {
            setup,
            live,
            first_right: right.len(),
            first_wrong: self.first.iter().flatten().filter(|(r, ..)| !r).count(),
            first_lost: self.first.iter().filter(|f| f.is_none()).count(),
            failed: self.answered.iter().filter(|a| !**a).count(),
            wrong: self.wrong,
            mean_path: mean(&paths),
            path_p1: quantile(&paths, 0.01),
            path_p99: quantile(&paths, 0.99),
            latency_p50_ms: quantile(&latencies, 0.5),
            latency_p99_ms: quantile(&latencies, 0.99),
            refused_per_forward: refused,
            timeouts_per_forward: timeouts,
            given_up: counters(sim).2 - self.counters_before.2,
            wall_s: wall.elapsed().as_secs_f64(),
        }
    }
}

impl Table for FailureRow {
    fn columns() -> &'static [&'static str] {
        &[
            "periods",
            "fault",
            "n",
            "p",
            "live",
            "lookups",
            "first_right_pct",
            "first_wrong",
            "first_unanswered",
            "failed_after_retries",
            "mean_path",
            "path_p1",
            "path_p99",
            "latency_p50_ms",
            "latency_p99_ms",
            "refused_per_lookup",
            "hop_timeouts_per_lookup",
            "given_up",
            "wall_s",
        ]
    }

    fn cells(&self) -> Vec<String> {
        let s = &self.setup;
        vec![
            s.periods.name().to_string(),
            s.fault.name().to_string(),
            s.n.to_string(),
            format!("{:.1}", s.p),
            self.live.to_string(),
            s.lookups.to_string(),
            format!("{:.2}", self.first_right_pct()),
            self.first_wrong.to_string(),
            self.first_lost.to_string(),
            self.failed.to_string(),
            format!("{:.2}", self.mean_path),
            self.path_p1.to_string(),
            self.path_p99.to_string(),
            self.latency_p50_ms.to_string(),
            self.latency_p99_ms.to_string(),
            format!("{:.2}", self.refused_per_lookup()),
            format!("{:.2}", self.timeouts_per_lookup()),
            self.given_up.to_string(),
            format!("{:.1}", self.wall_s),
        ]
    }
}
