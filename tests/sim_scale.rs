//! Internet scale in the simulator (issue 13): rings built at once from the oracle ("warm start",
//! as the Chord papers' simulators begin), then lookups, and churn at the papers' periods. The
//! default sizes keep CI short; the figures in docs/EVALUATION.md come from the commands there:
//!
//! `SCALE_MAX_N=100000 cargo test --release --test sim_scale path -- --nocapture`
//! `SCALE_NODES=100000 SCALE_MINUTES=60 cargo test --release --test sim_scale churn -- --nocapture`

use std::net::SocketAddr;
use std::time::Instant;
use voidphone_dht::config::NodeConfig;
use voidphone_dht::id::Id;
use voidphone_dht::sim::{NetConfig, Sim, oracle, seed_from_env};
use voidphone_dht::time::Prng;

/// The papers' stabilize, fix_fingers and check_predecessor period, and successor list length.
const PAPER_PERIOD_MS: u64 = 30_000;
const R: usize = 20;

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

/// This process's peak resident memory, MiB (Linux).
fn peak_rss_mib() -> u64 {
    status_mib("VmHWM:")
}

/// This process's resident memory now, MiB (Linux).
fn rss_mib() -> u64 {
    status_mib("VmRSS:")
}

fn status_mib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

fn quantile(sorted: &[u8], q: f64) -> u8 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Mean path length (PEER FIND messages per lookup) from warm-started rings of 8 nodes up to
/// `SCALE_MAX_N` (default 4096): every answer is the oracle's owner, and the mean stays within a
/// hop of ½·log2 N, the papers' figure.
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
    eprintln!(
        "| N | ½·log2 N | mean path | 1st, 99th pct | warm start | lookups | events/node/s | µs/event | peak RSS |"
    );
    eprintln!("|---|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let seed = seed_from_env(n as u64);
        let wall = Instant::now();
        let mut sim = Sim::new(seed, paper_config(), NetConfig::default());
        sim.warm_start(n);
        let built = wall.elapsed();
        let (events, from) = (sim.events, sim.now());
        let mut paths = sim
            .probe_random(lookups)
            .unwrap_or_else(|e| panic!("N = {n}, seed {seed}: {e}"));
        paths.sort();
        let mean = paths.iter().map(|&p| p as f64).sum::<f64>() / paths.len() as f64;
        let half_log = 0.5 * (n as f64).log2();
        let ran = wall.elapsed() - built;
        let events = sim.events - events;
        let simulated_s = sim.now().ms_since(from) as f64 / 1000.0;
        eprintln!(
            "| {n} | {half_log:.2} | {mean:.2} | {}, {} | {:.1} s | {:.1} s | {:.2} | {:.1} | {} MiB |",
            quantile(&paths, 0.01),
            quantile(&paths, 0.99),
            built.as_secs_f64(),
            ran.as_secs_f64(),
            events as f64 / n as f64 / simulated_s,
            ran.as_secs_f64() * 1e6 / events.max(1) as f64,
            peak_rss_mib()
        );
        assert!(
            mean <= half_log + 1.0,
            "N = {n}: mean path {mean:.2}, ½·log2 N = {half_log:.2}"
        );
    }
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

/// The lookups' verdicts, against the ring of joined nodes kept up to date as churn goes on
/// (rebuilding it for every answer costs O(N log N) at 10^5 nodes).
#[derive(Default)]
struct Verdicts {
    right: u64,
    wrong: u64,
    paths: Vec<u8>,
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

    /// Judges the answers in since the last call against the ring as it is now.
    fn judge(&mut self, sim: &mut Sim) {
        if sim.probes.is_empty() {
            return;
        }
        let ring = &mut self.ring;
        self.joining.retain(|a| {
            let node = &sim.nodes[a].node;
            if !node.joined() {
                return true;
            }
            let entry = (node.me().id, *a);
            let at = ring.partition_point(|e| *e < entry);
            ring.insert(at, entry);
            false
        });
        for p in std::mem::take(&mut sim.probes) {
            if p.owner == oracle::owner(&self.ring, &p.key) {
                self.right += 1;
                self.paths.push(p.path_length);
            } else {
                self.wrong += 1;
            }
        }
    }
}

/// A warm-started ring of `SCALE_NODES` (default 500) at the papers' periods for `SCALE_MINUTES`
/// (default 2) of simulated time, with joins and crashes at `SCALE_CHURN_PER_S` (default the
/// papers' heaviest rate per node, 0.4/s per 1000 nodes; half joins, half crashes, Poisson, applied
/// on whole seconds) and 10 lookups a second from random nodes. Each lookup is judged against the
/// oracle's owner among the joined nodes when it is answered; one unanswered after 10 s counts as
/// failed (the prober does not retry).
#[test]
fn churn_at_the_papers_periods_from_a_warm_start() {
    let n = env_or("SCALE_NODES", 500) as usize;
    let minutes = env_or("SCALE_MINUTES", 2);
    let churn_per_s = std::env::var("SCALE_CHURN_PER_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.4 * n as f64 / 1000.0);
    let lookups_per_s = 10;
    let seed = seed_from_env(7);
    let wall = Instant::now();
    let mut sim = Sim::new(seed, paper_config(), NetConfig::default());
    let mut live: Vec<SocketAddr> = sim.warm_start(n);
    let built = wall.elapsed();
    let mut rng = Prng::new(seed ^ 0x5ca1e);
    let start = sim.now();
    let stop = start + minutes * 60_000;
    let mut next_churn = start + exp_ms(&mut rng, churn_per_s);
    let (mut joins, mut crashes, mut asked) = (0u64, 0u64, 0u64);
    let mut verdicts = Verdicts::new(&sim);
    let events_before = sim.events;
    let mut second = start;
    while second < stop {
        verdicts.judge(&mut sim);
        let end = second + 1000;
        while next_churn <= end {
            if rng.chance(0.5) {
                let via = live[rng.below(live.len() as u64) as usize];
                let added = sim.add_node(Some(via));
                verdicts.added(added);
                live.push(added);
                joins += 1;
            } else {
                let i = rng.below(live.len() as u64) as usize;
                let victim = live.swap_remove(i);
                sim.crash(victim);
                verdicts.crashed(victim);
                crashes += 1;
            }
            next_churn = next_churn + exp_ms(&mut rng, churn_per_s);
        }
        for _ in 0..lookups_per_s {
            let at = live[rng.below(live.len() as u64) as usize];
            let key = Id::hash(&rng.next_u64().to_be_bytes());
            sim.probe(at, key);
            asked += 1;
        }
        // In 10 ms steps: answers are judged before the ring changes again.
        for _ in 0..100 {
            sim.run_for(10);
            verdicts.judge(&mut sim);
        }
        second = end;
        // Progress once per simulated 10 minutes: long runs show their pace and memory as they go.
        if minutes > 10 && second.ms_since(start).is_multiple_of(600_000) {
            eprintln!(
                "[scale churn] {} min simulated: {:.0} s wall, {} events, {} right, {} wrong; RSS {} MiB",
                second.ms_since(start) / 60_000,
                (wall.elapsed() - built).as_secs_f64(),
                sim.events - events_before,
                verdicts.right,
                verdicts.wrong,
                rss_mib()
            );
        }
    }
    // The last second's lookups get their 10 s.
    sim.run_for(10_000);
    verdicts.judge(&mut sim);
    let Verdicts {
        right,
        wrong,
        mut paths,
        ..
    } = verdicts;
    let failed = asked - right - wrong;
    paths.sort();
    let mean = paths.iter().map(|&p| p as f64).sum::<f64>() / paths.len().max(1) as f64;
    let simulated_s = (sim.now().0 - start.0) as f64 / 1000.0;
    eprintln!(
        "[scale churn] N = {n}, {minutes} min at 30 s periods, r = {R}, churn {churn_per_s}/s \
         ({joins} joins, {crashes} crashes), {lookups_per_s} lookups/s: {asked} lookups, {right} \
         right, {wrong} wrong owner, {failed} unanswered; mean path {mean:.2} (½·log2 N = {:.2}); \
         {:.1} events per node per simulated s ({} events, trace {:016x}); warm start {:.1} s, run \
         {:.1} s wall; peak RSS {} MiB",
        0.5 * (n as f64).log2(),
        (sim.events - events_before) as f64 / n as f64 / simulated_s,
        sim.events - events_before,
        sim.trace_hash(),
        built.as_secs_f64(),
        (wall.elapsed() - built).as_secs_f64(),
        peak_rss_mib()
    );
    // The bound at N = 1000, R = 0.4: at most 2 failed per 10,000 and none wrong.
    assert_eq!(wrong, 0, "{wrong} of {asked} answered by a wrong owner");
    assert!(
        failed * 10_000 <= asked * 2,
        "{failed} of {asked} unanswered"
    );
}

/// Load balance at scale (issue 11): a warm-started ring placed as the papers place it (every node
/// on slot 0 of its address: random positions), then `SCALE_REBALANCE_MINUTES` (default 10) of
/// rebalancing at the papers' periods, 30 s rebalance periods. Ranges per node relative to the
/// mean, before and after; `SCALE_NODES` (default 300) sets N.
#[test]
fn rebalancing_evens_a_randomly_placed_warm_ring() {
    let n = env_or("SCALE_NODES", 300) as usize;
    let minutes = env_or("SCALE_REBALANCE_MINUTES", 10);
    let seed = seed_from_env(11);
    let wall = Instant::now();
    let mut cfg = paper_config();
    cfg.rebalance_interval_ms = PAPER_PERIOD_MS;
    let mut sim = Sim::new(seed, cfg, NetConfig::default());
    sim.warm_start(n);
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
    let per_node_s = |sent: u64| sent as f64 / n as f64 / (minutes * 60) as f64;
    let rate = per_node_s(messages_sent(&sim) - sent_before);
    // The same ring and time without rebalancing: the maintenance traffic it adds.
    let mut still = Sim::new(seed, paper_config(), NetConfig::default());
    still.warm_start(n);
    still.run_for(minutes * 60_000);
    let rate_still = per_node_s(messages_sent(&still));
    let moves: u64 = sim
        .nodes
        .values()
        .map(|n| n.node.stats().rebalance_moves)
        .sum();
    let lookups = sim.probe_random(200);
    eprintln!(
        "[scale balance] N = {n}, warm start on slot 0: range/mean p99 {:.2} max {:.2} p1 {:.3}; \
         rebalancing at 30 s periods: {}; {moves} moves; p1 after {:.3}; lookups after: {}; \
         messages per node per s {rate:.3}, in the last minute {:.3} (without rebalancing \
         {rate_still:.3}: x{:.2}, x{:.2}); \
         {:.0} s wall, peak RSS {} MiB",
        before.p99,
        before.max,
        before.p1,
        report.join(", "),
        after.p1,
        match &lookups {
            Ok(p) => format!("{} right", p.len()),
            Err(e) => e.clone(),
        },
        per_node_s(last_minute) * minutes as f64,
        rate / rate_still,
        per_node_s(last_minute) * minutes as f64 / rate_still,
        wall.elapsed().as_secs_f64(),
        peak_rss_mib()
    );
    assert!(
        moves > 0 && after.max < before.max,
        "seed {seed}: rebalancing evened nothing"
    );
}

/// P2P messages sent so far, all types.
fn messages_sent(sim: &Sim) -> u64 {
    sim.traffic.values().map(|(count, _)| count).sum()
}

fn ring_balance(sim: &Sim) -> voidphone_dht::balance::Balance {
    let ids: Vec<Id> = joined_sorted(sim).iter().map(|(id, _)| *id).collect();
    voidphone_dht::balance::Balance::of(&voidphone_dht::balance::ring_arcs(&ids)).expect("a ring")
}

/// GET latency on a simulated wide-area network (issue 13): every pair of nodes keeps a one-way
/// delay drawn once from 10-100 ms (mean 55 ms). `SCALE_WAN_NODES` (default 300) nodes from a warm
/// start with the product's default periods and timeouts; `SCALE_WAN_GETS` (default 100) values put from random nodes, then
/// read one at a time, each from a random node, timed from the client's request to its answer.
/// Reported beside the lookup's mean path h: a GET that routes the lookup, then asks the holder,
/// costs h + 3 one-way delays; a node whose routing cache knows the holder, 2.
#[test]
fn get_latency_on_a_simulated_wan() {
    use bytes::Bytes;
    use voidphone_dht::wire::api::{ApiReply, ApiRequest};
    let n = env_or("SCALE_WAN_NODES", 300) as usize;
    let gets = env_or("SCALE_WAN_GETS", 100);
    let seed = seed_from_env(13);
    let net = NetConfig {
        latency_min_ms: 10,
        latency_max_ms: 100,
        fixed_link_latency: true,
        pieces_max: 1,
        ..NetConfig::default()
    };
    // The product's defaults (the simulator's usual 500 ms request timeout is for 5-50 ms links:
    // a lookup of six 100 ms hops would time out).
    let cfg = voidphone_dht::config::Config::default().node;
    let mut sim = Sim::new(seed, cfg, net);
    let addrs = sim.warm_start(n);
    let mut rng = Prng::new(seed ^ 0x3a9);
    let key = |i: u64| Id::hash(&format!("wan {i}").into_bytes());
    for i in 0..gets {
        let put = ApiRequest::Put {
            ttl_s: 3600,
            replication: 3,
            key: key(i),
            value: Bytes::from(i.to_be_bytes().to_vec()),
        };
        sim.client_request(addrs[rng.below(n as u64) as usize], i, put);
    }
    sim.run_for(5_000);
    sim.replies.clear();
    let mut latencies = Vec::new();
    for i in 0..gets {
        let at = addrs[rng.below(n as u64) as usize];
        sim.client_request(at, 1_000_000 + i, ApiRequest::Get { key: key(i) });
        let took = sim.run_until_cond(1, 10_000, |s| !s.replies.is_empty());
        let (_, _, reply) = sim.replies.pop().expect("an answer within 10 s");
        assert!(
            matches!(&reply, ApiReply::Success { value, .. } if value[..] == i.to_be_bytes()),
            "GET {i}: {reply:?}"
        );
        latencies.push(took.expect("answered"));
        sim.replies.clear();
    }
    latencies.sort();
    let paths = sim.probe_random(500).expect("lookups right");
    let h = paths.iter().map(|&p| p as f64).sum::<f64>() / paths.len() as f64;
    let q = |f: f64| latencies[((latencies.len() - 1) as f64 * f).round() as usize];
    let delay = 55.0;
    eprintln!(
        "[scale wan] N = {n}, one-way delays 10-100 ms per link (mean {delay}): {gets} GETs, p50 {} \
         ms, p90 {} ms, p99 {} ms; mean lookup path h = {h:.2}: (h + 1.5) x delay = {:.0} ms, (h + 3) \
         x delay = {:.0} ms, 2 x delay = {:.0} ms",
        q(0.5),
        q(0.9),
        q(0.99),
        (h + 1.5) * delay,
        (h + 3.0) * delay,
        2.0 * delay
    );
}
