//! Simultaneous failures, after the Chord ToN 2003 paper's Table II: a converged ring of N nodes with
//! successor lists of r = 20, a fraction p of the nodes crashes at once (p = 0.1 … 0.5), and lookups
//! are issued at that very instant from random live nodes, as a stranger's PEER FIND answered to the
//! simulator's prober (`Sim::probe`). Each answer is judged against the oracle's owner among the live
//! nodes. A crashed node refuses connections after a round trip (`Sim::transmit`), the transport's
//! signal that per-hop rerouting (`src/chord/forwards.rs`) reacts to. In the silent variant the
//! nodes vanish instead (`Sim::silence`: powered off, no refusal): forwarders learn of a dead next
//! hop only by the missing FIND TAKEN, after the per-hop timeout.
//!
//! Per p the table gives: lookups answered right on the first attempt, answered wrong, unanswered
//! within the window; lookups that fail even after the client's retries (up to `ATTEMPTS` attempts
//! `ATTEMPT_GAP_MS` apart, each an independent PEER FIND from the same node); the mean path length
//! of first attempts answered right; their latency (median and 99th percentile); and the refused
//! forwards per find forwarded anywhere in the ring in the first second (the per-hop chance of
//! hitting a dead node, probes and the ring's own lookups together).
//!
//! CI runs N = 500 with 2000 lookups per p (`cargo test --release --test sim_failures`), silent
//! crashes at N = 200 with 500 lookups per p; the paper's size, N = 1000 with 10,000 lookups per p,
//! is ignored by default: `cargo test --release --test sim_failures -- --ignored --nocapture`.
//! `SIM_SEED` replays a seed.
//! docs/EVALUATION.md holds the figures.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;
use voidphone_dht::id::{Id, Key};
use voidphone_dht::sim::{NetConfig, Sim, oracle, seed_from_env};
use voidphone_dht::time::Prng;

/// Successor list length r (2·log2 1000, as in the paper).
const R: usize = 20;
const FRACTIONS: [f64; 5] = [0.1, 0.2, 0.3, 0.4, 0.5];
/// Attempts per lookup with the client's retries, the first included, and the pause between them.
const ATTEMPTS: u8 = 5;
const ATTEMPT_GAP_MS: u64 = 1000;
/// How long after the crash answers count.
const WINDOW_MS: u64 = 10_000;
/// The resolution the answers' arrival times are taken at.
const STEP_MS: u64 = 5;

/// How the crashed nodes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Connections to them are refused (`Sim::crash`).
    Refusing,
    /// Messages to them vanish (`Sim::silence`).
    Silent,
}

/// One row of the table: one fraction p of the nodes crashed.
#[derive(Debug, Default)]
struct Row {
    p: f64,
    live: usize,
    lookups: usize,
    first_right: usize,
    first_wrong: usize,
    first_lost: usize,
    /// Lookups with no answer at all after every attempt.
    failed: usize,
    /// Answers naming a wrong owner, any attempt.
    wrong: usize,
    mean_path: f64,
    /// The 1st and 99th percentiles of the path length, first attempts answered right.
    path_p1: u8,
    path_p99: u8,
    latency_p50_ms: u64,
    latency_p99_ms: u64,
    /// Refused forwards per find forwarded, ring-wide, in the first second after the crash.
    refused_per_forward: f64,
    /// Forwards with no FIND TAKEN in time per find forwarded, ring-wide, in the first second.
    timeouts_per_forward: f64,
    /// Finds dropped by some node with every hop it knew dead or the loop guard spent, ring-wide
    /// (probes and the ring's own lookups), in the window.
    given_up: u64,
    wall_s: f64,
}

impl Row {
    fn first_right_pct(&self) -> f64 {
        100.0 * self.first_right as f64 / self.lookups as f64
    }

    /// The paper's "timeouts per lookup", estimated: a path of h delivered forwards, each send
    /// refused with chance q, takes h·q/(1−q) refused sends on the way.
    fn refused_per_lookup(&self) -> f64 {
        per_lookup(self.mean_path, self.refused_per_forward)
    }

    /// The same estimate for the per-hop timeouts (the silent variant's refusals).
    fn timeouts_per_lookup(&self) -> f64 {
        per_lookup(self.mean_path, self.timeouts_per_forward)
    }

    fn show(&self) -> String {
        format!(
            "| {:.1} | {} | {:.2} % | {} | {} | {} | {:.2} ({}, {}) | {} / {} ms | {:.3} | {:.2} | {:.2} | {} | {:.1} s |",
            self.p,
            self.live,
            self.first_right_pct(),
            self.first_wrong,
            self.first_lost,
            self.failed,
            self.mean_path,
            self.path_p1,
            self.path_p99,
            self.latency_p50_ms,
            self.latency_p99_ms,
            self.refused_per_forward,
            self.refused_per_lookup(),
            self.timeouts_per_lookup(),
            self.given_up,
            self.wall_s
        )
    }
}

const HEADER: &str = "| p | live | right, 1st attempt | wrong | unanswered | failed after 5 attempts | mean path (1st, 99th pct) | latency p50 / p99 | refused per forward | refused per lookup (est.) | hop timeouts per lookup (est.) | given up | wall |";

/// A path of `h` delivered forwards, each send failing with chance `q`, takes h·q/(1−q) failed sends.
fn per_lookup(h: f64, q: f64) -> f64 {
    h * q / (1.0 - q)
}

/// A converged ring of `n` nodes with r = 20, fingers settled.
fn ring(n: usize, seed: u64) -> Sim {
    let mut cfg = Sim::default_node_config();
    cfg.successors = R;
    let mut sim = Sim::new(seed, cfg, NetConfig::default());
    sim.check_every_event = false;
    sim.grow(n, 5_000);
    if let Err(e) = sim.converge(600_000) {
        panic!("seed {seed}: {n} nodes did not converge: {e} (SIM_SEED={seed})");
    }
    // Fingers: one lookup per 250 ms, about log2 n of them beyond the successor.
    sim.run_for(10_000);
    sim
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

/// Crashes a fraction `p` of a fresh ring's nodes (as `fault` says) and issues `lookups` lookups at
/// that instant.
fn run(n: usize, p: f64, lookups: usize, seed: u64, fault: Fault) -> Row {
    let wall = Instant::now();
    let mut sim = ring(n, seed);
    let mut rng = Prng::new(seed ^ 0x5eed_fa11);
    let mut addrs: Vec<SocketAddr> = sim.nodes.keys().copied().collect();
    for i in (1..addrs.len()).rev() {
        addrs.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let dead = (p * n as f64).round() as usize;
    for a in &addrs[..dead] {
        match fault {
            Fault::Refusing => sim.crash(*a),
            Fault::Silent => sim.silence(*a),
        }
    }
    let live = &addrs[dead..];
    let sorted = sim.live_sorted();
    let start = sim.now();
    let (forwarded0, rerouted0, given_up0, timeouts0) = counters(&sim);

    // Lookup i starts at node from[i] with key keys[i] (last byte 0: attempt 0).
    let from: Vec<SocketAddr> = (0..lookups)
        .map(|_| live[rng.below(live.len() as u64) as usize])
        .collect();
    let keys: Vec<Key> = (0..lookups)
        .map(|_| attempt_key(&Id::hash(&rng.next_u64().to_be_bytes()), 0))
        .collect();
    let index: BTreeMap<[u8; 31], usize> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.0[..31].try_into().unwrap(), i))
        .collect();
    sim.probes.clear();
    for (at, key) in from.iter().zip(&keys) {
        sim.probe(*at, *key);
    }

    // Per lookup: the first attempt's answer (right?, path, ms) and whether any attempt answered.
    let mut first: Vec<Option<(bool, u8, u64)>> = vec![None; lookups];
    let mut answered = vec![false; lookups];
    let mut wrong = 0;
    let mut attempts_made = 1u8;
    let mut per_hop = None;
    let mut seen = 0;
    while sim.now().ms_since(start) < WINDOW_MS {
        sim.run_for(STEP_MS);
        let ms = sim.now().ms_since(start);
        for probe in &sim.probes[seen..] {
            let i = index[&probe.key.0[..31]];
            let right = probe.owner == oracle::owner(&sorted, &probe.key);
            wrong += usize::from(!right);
            answered[i] |= right;
            if probe.key.0[31] == 0 {
                first[i] = Some((right, probe.path_length, ms));
            }
        }
        seen = sim.probes.len();
        if ms >= 1000 && per_hop.is_none() {
            let (forwarded, rerouted, given_up, timeouts) = counters(&sim);
            let timeouts = timeouts - timeouts0;
            // Every reroute or give-up follows a refusal or a timeout.
            let refused = rerouted - rerouted0 + given_up - given_up0 - timeouts;
            let forwarded = (forwarded - forwarded0).max(1) as f64;
            per_hop = Some((refused as f64 / forwarded, timeouts as f64 / forwarded));
        }
        if attempts_made < ATTEMPTS && ms >= attempts_made as u64 * ATTEMPT_GAP_MS {
            for i in (0..lookups).filter(|&i| !answered[i]) {
                sim.probe(from[i], attempt_key(&keys[i], attempts_made));
            }
            attempts_made += 1;
        }
    }

    let right: Vec<(u8, u64)> = first
        .iter()
        .flatten()
        .filter(|(right, ..)| *right)
        .map(|&(_, path, ms)| (path, ms))
        .collect();
    let mut latencies: Vec<u64> = right.iter().map(|&(_, ms)| ms).collect();
    latencies.sort();
    let mut paths: Vec<u64> = right.iter().map(|&(path, _)| path as u64).collect();
    paths.sort();
    Row {
        p,
        live: live.len(),
        lookups,
        first_right: right.len(),
        first_wrong: first.iter().flatten().filter(|(r, ..)| !r).count(),
        first_lost: first.iter().filter(|f| f.is_none()).count(),
        failed: answered.iter().filter(|a| !**a).count(),
        wrong,
        mean_path: right.iter().map(|&(path, _)| path as f64).sum::<f64>()
            / right.len().max(1) as f64,
        path_p1: percentile(&paths, 0.01) as u8,
        path_p99: percentile(&paths, 0.99) as u8,
        latency_p50_ms: percentile(&latencies, 0.5),
        latency_p99_ms: percentile(&latencies, 0.99),
        refused_per_forward: per_hop.map_or(0.0, |(r, _)| r),
        timeouts_per_forward: per_hop.map_or(0.0, |(_, t)| t),
        given_up: counters(&sim).2 - given_up0,
        wall_s: wall.elapsed().as_secs_f64(),
    }
}

/// The `q` quantile of `sorted` (0 when empty).
fn percentile(sorted: &[u64], q: f64) -> u64 {
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(i).copied().unwrap_or(0)
}

fn table(n: usize, lookups: usize, seed: u64, fault: Fault) -> Vec<Row> {
    eprintln!(
        "simultaneous failures ({fault:?}): N = {n}, r = {R}, {lookups} lookups per p, seed {seed}"
    );
    eprintln!("{HEADER}");
    FRACTIONS
        .iter()
        .map(|&p| {
            let row = run(n, p, lookups, seed, fault);
            eprintln!("{}", row.show());
            row
        })
        .collect()
}

/// Every row: no wrong owner, nothing lost after the retries, and the first attempt right for at
/// least `first_right_min_pct` of the lookups.
fn check(rows: &[Row], first_right_min_pct: f64, seed: u64) {
    for row in rows {
        assert_eq!(
            row.wrong, 0,
            "seed {seed}, p = {}: {} answers named a wrong owner (SIM_SEED={seed})",
            row.p, row.wrong
        );
        assert_eq!(
            row.failed, 0,
            "seed {seed}, p = {}: {} lookups failed after {ATTEMPTS} attempts (SIM_SEED={seed})",
            row.p, row.failed
        );
        assert!(
            row.first_right_pct() >= first_right_min_pct,
            "seed {seed}, p = {}: {:.2} % right on the first attempt < {first_right_min_pct} % \
             (SIM_SEED={seed})",
            row.p,
            row.first_right_pct()
        );
    }
}

/// The CI size. Measured (seed 1000): see docs/EVALUATION.md.
#[test]
fn lookups_at_the_instant_of_mass_failure_are_answered_right_n500() {
    let seed = seed_from_env(1000);
    let rows = table(500, 2000, seed, Fault::Refusing);
    check(&rows, 99.9, seed);
}

/// The paper's size: N = 1000, 10,000 lookups per p.
#[test]
#[ignore = "the paper's size: about a minute of wall time; run with --ignored"]
fn lookups_at_the_instant_of_mass_failure_are_answered_right_n1000() {
    let seed = seed_from_env(1000);
    let rows = table(1000, 10_000, seed, Fault::Refusing);
    check(&rows, 99.9, seed);
}

/// Silent crashes, the CI size (N = 200, 500 lookups per p, about 20 s of wall time; `SIM_SILENT_N`
/// and `SIM_SILENT_LOOKUPS` change it). Measured (seed 1000): see docs/EVALUATION.md.
#[test]
fn lookups_at_the_instant_of_mass_silent_failure_are_answered_right() {
    let seed = seed_from_env(1000);
    let n = env_or("SIM_SILENT_N", 200);
    let rows = table(n, env_or("SIM_SILENT_LOOKUPS", 500), seed, Fault::Silent);
    check(&rows, SILENT_FIRST_RIGHT_MIN_PCT, seed);
}

/// Silent crashes at the paper's size.
#[test]
#[ignore = "the paper's size: about a minute of wall time; run with --ignored"]
fn lookups_at_the_instant_of_mass_silent_failure_are_answered_right_n1000() {
    let seed = seed_from_env(1000);
    let rows = table(1000, 10_000, seed, Fault::Silent);
    check(&rows, SILENT_FIRST_RIGHT_MIN_PCT, seed);
}

/// Coarse: measured near 100 % (docs/EVALUATION.md); without per-hop timeouts it was far below.
const SILENT_FIRST_RIGHT_MIN_PCT: f64 = 99.0;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
