//! Internet scale in the simulator (issue 13): rings built at once from the oracle ("warm start",
//! as the Chord papers' simulators begin), then lookups, and churn at the papers' periods. The
//! default sizes keep CI short; the figures in docs/EVALUATION.md come from the commands there:
//!
//! `SCALE_MAX_N=100000 cargo test --release --test sim_scale path -- --nocapture`
//! `SCALE_NODES=100000 SCALE_MINUTES=60 cargo test --release --test sim_scale churn -- --nocapture`
//!
//! The experiments themselves live in `voidphone_dht::sim::experiments`, shared with the runner
//! (`cargo run --release --example eval`); these tests hold the bounds.

use std::time::Instant;
use voidphone_dht::config::NodeConfig;
use voidphone_dht::id::Id;
use voidphone_dht::sim::experiments::{
    self, ChurnSetup, PathRow, Periods, R, Routing, churn, path_length, peak_rss_mib, wan_gets,
};
use voidphone_dht::sim::{NetConfig, Sim, oracle, seed_from_env};
use voidphone_dht::time::Prng;

/// The papers' stabilize, fix_fingers and check_predecessor period.
const PAPER_PERIOD_MS: u64 = 30_000;

fn paper_config() -> NodeConfig {
    let c = Sim::paper_node_config();
    assert_eq!(
        (c.stabilize_interval_ms, c.successors),
        (PAPER_PERIOD_MS, R)
    );
    c
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Mean path length (PEER FIND messages per lookup) from warm-started rings of 8 nodes up to
/// `SCALE_MAX_N` (default 4096): every answer is the oracle's owner, and the mean stays within a
/// hop of ½·log2 N, the papers' figure (`experiments::path_length`).
#[test]
fn path_length_grows_as_half_log2_n_from_a_warm_start() {
    let max_n = env_or("SCALE_MAX_N", 4096) as usize;
    let lookups = env_or("SCALE_LOOKUPS", 1000) as usize;
    let mut sizes: Vec<usize> = (3..)
        .map(|e| 1usize << e)
        .take_while(|&n| n <= max_n)
        .collect();
    if sizes.last() != Some(&max_n) {
        sizes.push(max_n);
    }
    eprint!("{}", experiments::markdown_header::<PathRow>());
    for n in sizes {
        let seed = seed_from_env(n as u64);
        let row = path_length(n, lookups, seed, Routing::Full).unwrap_or_else(|e| panic!("{e}"));
        eprint!("{}", experiments::markdown_row(&row));
        assert!(
            row.mean <= row.half_log2_n() + 1.0,
            "N = {n}: mean path {:.2}, ½·log2 N = {:.2}",
            row.mean,
            row.half_log2_n()
        );
    }
}

/// Fingers alone (a successor list of one, no routing cache), as in the papers' analysis: ½·log2 N
/// hops to the key's predecessor (Chord §IV-D), and one more, which the predecessor forwards to the
/// owner (our lookups are recursive: the owner answers): the mean is ½·log2 N + 1 within half a
/// hop. With the successor list the node before the key's predecessor often jumps straight to the
/// owner, hence the full routing's hop under ½·log2 N. Rings of 2^6 … `SCALE_MAX_N` (default 4096).
#[test]
fn path_length_by_fingers_alone_is_half_log2_n_plus_the_last_hop() {
    let max_n = env_or("SCALE_MAX_N", 4096) as usize;
    eprint!("{}", experiments::markdown_header::<PathRow>());
    for n in (6..).map(|e| 1usize << e).take_while(|&n| n <= max_n) {
        let seed = seed_from_env(n as u64);
        let row =
            path_length(n, 1000, seed, Routing::FingersOnly).unwrap_or_else(|e| panic!("{e}"));
        eprint!("{}", experiments::markdown_row(&row));
        assert!(
            (row.mean - row.half_log2_n() - 1.0).abs() <= 0.5,
            "N = {n}, fingers only: mean path {:.2}, ½·log2 N + 1 = {:.2}",
            row.mean,
            row.half_log2_n() + 1.0
        );
    }
}

/// A warm-started ring of `SCALE_NODES` (default 1000) at the papers' periods for `SCALE_MINUTES`
/// (default 10) of simulated time, with joins and crashes at `SCALE_CHURN_PER_S` (default the
/// papers' heaviest rate, 0.4/s per 1000 nodes; half joins, half crashes, Poisson, applied on
/// whole seconds) and `SCALE_LOOKUPS_PER_S` (default 100) lookups a second from random joined
/// nodes. Each lookup is judged against the oracle's owner when it is answered; one unanswered
/// after 10 s counts as failed (the prober does not retry). The issue's own setup: a few seconds
/// of wall time.
#[test]
fn churn_at_the_papers_periods_from_a_warm_start() {
    let n = env_or("SCALE_NODES", 1000) as usize;
    let rate_per_s = std::env::var("SCALE_CHURN_PER_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.4 * n as f64 / 1000.0);
    let row = churn(ChurnSetup {
        n,
        rate_per_s,
        seconds: env_or("SCALE_MINUTES", 10) * 60,
        lookups_per_s: env_or("SCALE_LOOKUPS_PER_S", 100),
        seed: seed_from_env(7),
        periods: Periods::Paper,
    });
    eprint!(
        "[scale churn] r = {R}\n{}",
        experiments::markdown(std::slice::from_ref(&row))
    );
    eprintln!(
        "warm start {:.1} s, run {:.1} s wall; peak RSS {} MiB",
        row.warm_s, row.run_s, row.peak_rss_mib
    );
    // The bound at N = 1000, R = 0.4: at most 2 failed per 10,000 and none wrong.
    assert_eq!(
        row.wrong, 0,
        "{} of {} answered by a wrong owner",
        row.wrong, row.asked
    );
    assert!(
        row.unanswered() * 10_000 <= row.asked * 2,
        "{} of {} unanswered",
        row.unanswered(),
        row.asked
    );
}

/// Load balance at scale (issue 11): a warm-started ring placed as the papers place it (every node
/// on slot 0 of its address: random positions; with `SCALE_START=chosen`, where joins one by one
/// at the best of their slots would put them), then `SCALE_REBALANCE_MINUTES` (default 10) of
/// rebalancing at the papers' periods, 30 s rebalance periods. Ranges per node relative to the
/// mean, before and after; `SCALE_NODES` (default 300) sets N.
#[test]
fn rebalancing_evens_a_randomly_placed_warm_ring() {
    let n = env_or("SCALE_NODES", 300) as usize;
    let minutes = env_or("SCALE_REBALANCE_MINUTES", 10);
    let seed = seed_from_env(11);
    let wall = Instant::now();
    let mut cfg = paper_config();
    cfg.rebalance_interval_ms = env_or("SCALE_REBALANCE_INTERVAL_S", 30) * 1000;
    cfg.id_slots_per_ip = env_or("SCALE_SLOTS", cfg.id_slots_per_ip as u64) as u8;
    let chosen = std::env::var("SCALE_START").is_ok_and(|s| s == "chosen");
    let mut sim = placed(seed, n, cfg.clone(), chosen);
    let before = ring_balance(&sim);
    let sent_before = messages_sent(&sim);
    let mut report = Vec::new();
    let mut last_minute = 0;
    for minute in 1..=minutes {
        let sent = messages_sent(&sim);
        sim.run_for(60_000);
        last_minute = messages_sent(&sim) - sent;
        if minute % 10 == 0 || minute == minutes {
            let b = ring_balance(&sim);
            let moves = last_minute as f64 / n as f64 / 60.0;
            report.push(format!(
                "{minute} min: p99 {:.2} max {:.2}, {moves:.3} msgs/node/s in its last minute",
                b.p99, b.max
            ));
        }
    }
    let after = ring_balance(&sim);
    let keys = env_or("SCALE_KEYS", 500_000);
    let (keys_before, keys_after) = (
        key_balance(&placed(seed, n, still_cfg(&cfg), chosen), keys, seed),
        key_balance(&sim, keys, seed),
    );
    let per_node_s = |sent: u64| sent as f64 / n as f64 / (minutes * 60) as f64;
    let rate = per_node_s(messages_sent(&sim) - sent_before);
    // The same ring and time without rebalancing: the maintenance traffic it adds.
    let mut still = placed(seed, n, still_cfg(&cfg), chosen);
    still.run_for(minutes * 60_000);
    let rate_still = per_node_s(messages_sent(&still));
    let moves: u64 = sim
        .nodes
        .values()
        .map(|n| n.node.stats().rebalance_moves)
        .sum();
    let lookups = sim.probe_random(200);
    eprintln!(
        "[scale balance] N = {n}, warm start on {}: range/mean p99 {:.2} max {:.2} p1 {:.3}; \
         rebalancing every {} s: {}; {moves} moves; p1 after {:.3}; lookups after: {}; \
         messages per node per s {rate:.3}, in the last minute {:.3} (without rebalancing \
         {rate_still:.3}: x{:.2}, x{:.2}); \
         {keys} keys per node / mean, p99 {:.2} max {:.2} empty {} before, p99 {:.2} max {:.2} \
         empty {} after; {:.0} s wall, peak RSS {} MiB",
        if chosen { "chosen slots" } else { "slot 0" },
        before.p99,
        before.max,
        before.p1,
        cfg.rebalance_interval_ms / 1000,
        report.join(", "),
        after.p1,
        match &lookups {
            Ok(p) => format!("{} right", p.len()),
            Err(e) => e.clone(),
        },
        per_node_s(last_minute) * minutes as f64,
        rate / rate_still,
        per_node_s(last_minute) * minutes as f64 / rate_still,
        keys_before.p99,
        keys_before.max,
        keys_before.empty,
        keys_after.p99,
        keys_after.max,
        keys_after.empty,
        wall.elapsed().as_secs_f64(),
        peak_rss_mib()
    );
    // From random positions the widest range shrinks; from chosen ones (already even) the 99th
    // percentile does (a move may widen the one range its holder leaves behind).
    let evened = if chosen {
        after.p99 < before.p99
    } else {
        after.max < before.max
    };
    assert!(
        moves > 0 && evened,
        "seed {seed}: rebalancing evened nothing"
    );
}

/// The ring before rebalancing: warm-started, every node on slot 0 (ids placed at random), or
/// each on the slot it would have chosen joining.
fn placed(seed: u64, n: usize, cfg: NodeConfig, chosen: bool) -> Sim {
    let mut sim = Sim::new(seed, cfg, NetConfig::default());
    if chosen {
        sim.warm_start_chosen(n);
    } else {
        sim.warm_start(n);
    }
    sim
}

/// The same configuration without rebalancing: the baseline.
fn still_cfg(cfg: &NodeConfig) -> NodeConfig {
    NodeConfig {
        rebalance_interval_ms: 0,
        ..cfg.clone()
    }
}

/// P2P messages sent so far, all types.
fn messages_sent(sim: &Sim) -> u64 {
    sim.traffic.values().map(|(count, _)| count).sum()
}

/// Keys per node relative to the mean for `count` random keys (the 5·10^5 by default).
fn key_balance(sim: &Sim, count: u64, seed: u64) -> voidphone_dht::balance::Balance {
    let ring = joined_ids(sim);
    let mut per_node = vec![0u64; ring.len()];
    let mut rng = Prng::new(seed);
    for _ in 0..count {
        let key = Id::hash(&rng.next_u64().to_be_bytes());
        // The owner: the first node at or after the key, wrapping round.
        let i = ring.partition_point(|id| *id < key) % ring.len();
        per_node[i] += 1;
    }
    voidphone_dht::balance::Balance::of_counts(&per_node).expect("keys")
}

/// The ids of the nodes that have joined, in ring order.
fn joined_ids(sim: &Sim) -> Vec<Id> {
    sim.live_sorted()
        .into_iter()
        .filter(|(_, a)| sim.node(*a).joined())
        .map(|(id, _)| id)
        .collect()
}

fn ring_balance(sim: &Sim) -> voidphone_dht::balance::Balance {
    let ids = joined_ids(sim);
    voidphone_dht::balance::Balance::of(&voidphone_dht::balance::ring_arcs(&ids)).expect("a ring")
}

/// GET latency on a simulated wide-area network (issue 13): every pair of nodes keeps a one-way
/// delay drawn once from 10-100 ms (mean 55 ms). `SCALE_WAN_NODES` (default 300) nodes from a warm
/// start with the product's default periods and timeouts; `SCALE_WAN_GETS` (default 100) values put from random nodes, then
/// read one at a time, each from a random node, timed from the client's request to its answer.
/// Asserts the bound on the median, p50 <= (h + 1.5) x the mean delay, h the lookup's mean
/// path: the lookup carries the read (FIND VALUE, h + 1 delays).
#[test]
fn get_latency_on_a_simulated_wan() {
    let n = env_or("SCALE_WAN_NODES", 300) as usize;
    let gets = env_or("SCALE_WAN_GETS", 100);
    let row = wan_gets(n, gets, seed_from_env(13)).unwrap_or_else(|e| panic!("{e}"));
    eprint!(
        "[scale wan]\n{}",
        experiments::markdown(std::slice::from_ref(&row))
    );
    // The bound: the lookup carries the read (h + 1 one-way delays where it must look up;
    // fewer where the successor list or routing cache knows the holder).
    let bound = (row.h + 1.5) * experiments::DELAY_MEAN_MS;
    let p50 = row.quantile_ms(0.5);
    assert!(
        p50 as f64 <= bound,
        "GET p50 {p50} ms above (h + 1.5) x delay = {bound:.0} ms"
    );
    assert!(row.values_found > 0, "no GET rode on its lookup");
}

/// Formation after a mass join (issue 13): `SCALE_JOIN_NODES` (default 512) nodes joining within
/// 5 s, each through a random node added before it, at our default periods; how long after the last
/// join every successor list and predecessor is the oracle's. Global ring checks every 500 ms
/// (every event at this scale would cost O(N) each).
#[test]
fn a_mass_join_converges_within_thirty_seconds() {
    let n = env_or("SCALE_JOIN_NODES", 512) as usize;
    let seed = seed_from_env(8192);
    let wall = Instant::now();
    let mut sim = Sim::new(seed, Sim::default_node_config(), NetConfig::default());
    sim.check_every_event = false;
    sim.grow(n, 5_000);
    let events_before = sim.events;
    let start = sim.now();
    let took = sim.run_until_cond(500, 600_000, |s| {
        if let Err(e) = oracle::check_rings(s) {
            panic!("seed {}: {e} (replay with SIM_SEED={})", s.seed, s.seed);
        }
        let since = s.now().ms_since(start);
        if since % 2500 == 0 {
            eprintln!("[scale join] +{since} ms: {:?}", oracle::gaps(s));
        }
        oracle::check_ideal(s).is_ok()
    });
    eprintln!(
        "[scale join] N = {n} joined within 5 s: ideal ring {} after the last join; {} events \
         after it; {:.1} s wall; peak RSS {} MiB",
        took.map_or("not within 600 s".to_string(), |ms| format!("{ms} ms")),
        sim.events - events_before,
        wall.elapsed().as_secs_f64(),
        peak_rss_mib()
    );
    let took = took.unwrap_or_else(|| panic!("seed {seed}: no ideal ring (SIM_SEED={seed})"));
    assert!(
        took <= 30_000,
        "seed {seed}: ideal ring only {took} ms after the last join"
    );
    if let Err(e) = sim.probe_random(500) {
        panic!("seed {seed}: {e} (SIM_SEED={seed})");
    }
}
