//! The Chord ring in the deterministic simulator: the same `Node` as production, many nodes, a
//! reference model as the oracle, invariants checked as it runs. A failure prints its seed; replay
//! it with `SIM_SEED=<seed> cargo test --release --test sim`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use voidphone_dht::balance::{self, Balance};
use voidphone_dht::id::Id;
use voidphone_dht::sim::{NetConfig, Sim, oracle, seed_from_env};
use voidphone_dht::time::Prng;

fn converge(sim: &mut Sim, limit_ms: u64) -> u64 {
    sim.converge(limit_ms).unwrap_or_else(|e| {
        panic!(
            "seed {}: no ideal ring after {limit_ms} ms: {e} (replay with SIM_SEED={})",
            sim.seed, sim.seed
        )
    })
}

/// Probes `count` random keys from random nodes; asserts every answer is the oracle's owner and
/// returns the mean path length.
fn probe_all(sim: &mut Sim, count: usize) -> f64 {
    let paths = sim
        .probe_random(count)
        .unwrap_or_else(|e| panic!("seed {}: {e} (SIM_SEED={})", sim.seed, sim.seed));
    paths.iter().map(|p| *p as f64).sum::<f64>() / count as f64
}

#[test]
fn five_hundred_concurrent_joins_converge_to_the_oracle_ring() {
    let seed = seed_from_env(500);
    let mut sim = Sim::new(seed, Sim::default_node_config(), NetConfig::default());
    sim.check_every_event = false; // the global checks run every 100 ms of simulated time below
    sim.grow(500, 5_000);
    let mut checks = 0;
    let took = sim.run_until_cond(100, 600_000, |s| {
        checks += 1;
        if let Err(e) = oracle::check_rings(s) {
            panic!("seed {}: {e} (replay with SIM_SEED={})", s.seed, s.seed);
        }
        oracle::check_ideal(s).is_ok()
    });
    let took =
        took.unwrap_or_else(|| panic!("seed {seed}: 500 nodes did not converge (SIM_SEED={seed})"));
    eprintln!(
        "500 nodes converged {took} ms after the last join ({} events, {checks} checks)",
        sim.events
    );
    let mean = probe_all(&mut sim, 2000);
    let bound = 0.5 * (500f64).log2() + 1.0;
    eprintln!("N=500 mean path length {mean:.2} (bound {bound:.2})");
    assert!(
        mean <= bound,
        "seed {seed}: mean path length {mean} > {bound}"
    );
}

#[test]
fn lookups_return_the_oracle_owner_with_short_paths_for_n_16_256() {
    for n in [16usize, 256] {
        let seed = seed_from_env(n as u64);
        let mut sim = Sim::new(seed, Sim::default_node_config(), NetConfig::default());
        sim.check_every_event = n <= 16;
        sim.grow(n, 2_000);
        converge(&mut sim, 300_000);
        sim.run_for(30_000); // let fix_fingers go round
        let mean = probe_all(&mut sim, 1000);
        let bound = 0.5 * (n as f64).log2() + 1.0;
        eprintln!("N={n} mean path length {mean:.2} (bound {bound:.2})");
        assert!(
            mean <= bound,
            "seed {seed}: N={n} mean path length {mean} > {bound}"
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let run = |seed: u64| {
        let mut sim = Sim::new(
            seed,
            Sim::default_node_config(),
            NetConfig {
                loss: 0.01,
                ..NetConfig::default()
            },
        );
        sim.grow(40, 3_000);
        sim.run_for(20_000);
        (sim.trace_hash(), sim.events)
    };
    let a = run(seed_from_env(7));
    assert_eq!(a, run(seed_from_env(7)));
    assert_ne!(a.0, run(seed_from_env(7) + 1).0);
}

/// Zave: small rings (fewer than r+1 nodes) are where published versions break. Rings of 1, 2, 3
/// and r+1 form, and survive one crash.
#[test]
fn small_rings_form_and_survive_a_crash() {
    let r = Sim::default_node_config().successors;
    for n in [1usize, 2, 3, r + 1, r + 2] {
        let seed = seed_from_env(1000 + n as u64);
        let mut rng = Prng::new(seed);
        let mut sim = Sim::new(seed, Sim::default_node_config(), NetConfig::default());
        sim.grow(n, 1_000);
        converge(&mut sim, 120_000);
        if n >= 2 {
            let victim = *sim.nodes.keys().nth(rng.below(n as u64) as usize).unwrap();
            sim.crash(victim);
            converge(&mut sim, 120_000);
            probe_all(&mut sim, 50);
        }
    }
}

/// An operator's restart in place, after a crash or a graceful leave: the same identity comes
/// back on the same address at once. Its neighbours may still point at it (a crash) or may have
/// been told of it again by the leaving process; either way it must get back into the ring.
#[test]
fn a_node_restarted_in_place_gets_back_into_the_ring() {
    for graceful in [false, true] {
        let seed = seed_from_env(if graceful { 31 } else { 30 });
        let mut cfg = Sim::default_node_config();
        cfg.id_slot = Some(0);
        let mut sim = Sim::new(seed, cfg, NetConfig::default());
        sim.grow(8, 1_000);
        converge(&mut sim, 120_000);
        let addrs: Vec<SocketAddr> = sim.nodes.keys().copied().collect();
        let (victim, via) = (addrs[3], addrs[0]);
        if graceful {
            sim.leave(victim);
            let gone = sim.run_until_cond(10, 3_000, |s| !s.nodes.contains_key(&victim));
            assert!(gone.is_some(), "seed {seed}: the hand-off never finished");
        }
        // Its neighbours point at the returning node while it has no successor yet.
        sim.check_every_event = false;
        sim.restart(victim, via);
        let took = converge(&mut sim, 60_000);
        eprintln!("[restart] graceful {graceful}: ideal ring {took} ms after the restart");
        // Back within a few stabilize periods (1 s here) plus a request timeout or two.
        assert!(took <= 20_000, "seed {seed}: {took} ms");
        probe_all(&mut sim, 50);
    }
}

#[test]
fn a_fifth_of_the_nodes_crashing_at_once_heals_and_lookups_stay_right() {
    let seed = seed_from_env(77);
    let mut rng = Prng::new(seed);
    let mut sim = Sim::new(seed, Sim::default_node_config(), NetConfig::default());
    sim.check_every_event = false;
    sim.grow(200, 3_000);
    converge(&mut sim, 300_000);
    let addrs: Vec<_> = sim.nodes.keys().copied().collect();
    for a in addrs.iter().filter(|_| rng.chance(0.2)) {
        sim.crash(*a);
    }
    let took = converge(&mut sim, 300_000);
    eprintln!("{} survivors healed in {took} ms", sim.nodes.len());
    probe_all(&mut sim, 500);
}

#[test]
fn lossy_network_still_converges() {
    let seed = seed_from_env(31);
    let mut sim = Sim::new(
        seed,
        Sim::default_node_config(),
        NetConfig {
            loss: 0.02,
            ..NetConfig::default()
        },
    );
    sim.grow(64, 3_000);
    converge(&mut sim, 300_000);
}

/// Pinned regression (seed 8): under 1 % loss a node that dropped its only successor fell back on
/// its predecessor as successor and closed a two-node ring behind the main one (Zave:
/// at_most_one_ring). Fallback successors now come only from nodes known ahead (fingers).
#[test]
fn pinned_seed_8_lossy_joins_never_split_the_ring() {
    let mut sim = Sim::new(
        8,
        Sim::default_node_config(),
        NetConfig {
            loss: 0.01,
            ..NetConfig::default()
        },
    );
    sim.grow(40, 3_000); // the global invariants are checked after every event
    converge(&mut sim, 300_000);
}

/// Every node's first successor and predecessor are the oracle's (the ring a walk would follow).
fn ring_pointers_right(sim: &Sim) -> bool {
    let sorted = sim.live_sorted();
    let n = sorted.len();
    sorted.iter().enumerate().all(|(i, (_, addr))| {
        let node = sim.node(*addr);
        node.joined()
            && node.successors().first().map(|p| p.id) == Some(sorted[(i + 1) % n].0)
            && node.predecessor().map(|p| p.id) == Some(sorted[(i + n - 1) % n].0)
    })
}

#[test]
fn sixty_four_joins_at_once_through_one_node_settle_within_a_few_rounds() {
    // The testnet's shape: every joiner asks the first node, whose answers all name the same few
    // nodes. Walking predecessor pointers once per 1 s stabilize round took 22.8 s here; successor
    // hints and faster rounds while pointers change take 2–4 s (5–50 ms links).
    let seed = seed_from_env(64);
    let mut sim = Sim::new(seed, Sim::default_node_config(), NetConfig::default());
    let first = sim.add_node(None);
    for _ in 1..64 {
        sim.add_node(Some(first));
    }
    let took = sim.run_until_cond(10, 60_000, ring_pointers_right);
    let took = took.unwrap_or_else(|| panic!("seed {seed}: no ring in 60 s (SIM_SEED={seed})"));
    eprintln!("64 joins at once: ring pointers right after {took} ms");
    let rounds = 5 * Sim::default_node_config().stabilize_interval_ms;
    assert!(
        took <= rounds,
        "seed {seed}: {took} ms > five stabilize rounds (SIM_SEED={seed})"
    );
    converge(&mut sim, 120_000);
}

/// One input surface: a node's recorded inputs, given to a fresh node with the same seed, make it
/// put out exactly what it put out in the run (joining, stabilizing, serving lookups, a lossy
/// network, client requests, a neighbour's crash).
#[test]
fn a_recorded_node_replays_input_by_input() {
    use bytes::Bytes;
    use voidphone_dht::chord::{Collected, Node, drive};
    use voidphone_dht::id::Id;
    use voidphone_dht::wire::api::ApiRequest;
    let seed = seed_from_env(12);
    let net = NetConfig {
        loss: 0.01,
        ..NetConfig::default()
    };
    let mut sim = Sim::new(seed, Sim::default_node_config(), net);
    sim.grow(12, 2_000);
    let first = *sim.nodes.keys().next().unwrap();
    let recorded = sim.add_recorded_node(Some(first));
    sim.grow(24, 2_000);
    converge(&mut sim, 120_000);
    for i in 0..20u64 {
        let key = Id::hash(&i.to_be_bytes());
        let value = Bytes::from(vec![i as u8; 100]);
        let put = ApiRequest::Put {
            ttl_s: 60,
            replication: 3,
            key,
            value,
        };
        sim.client_request(recorded, i, put);
        sim.run_for(50);
        sim.client_request(recorded, 100 + i, ApiRequest::Get { key });
    }
    let victim = *sim.nodes.keys().find(|a| **a != recorded).unwrap();
    sim.crash(victim);
    sim.run_for(20_000);
    let rec = sim.nodes[&recorded].recording.clone().expect("recorded");
    assert!(
        rec.inputs.len() > 100 && rec.replies.len() == 20,
        "{} inputs",
        rec.inputs.len()
    );
    let mut node = Node::new(rec.config, recorded, rec.seed, rec.born);
    let mut out = Collected::default();
    let _ = drive(&mut node, &mut out);
    for (now, input) in rec.inputs {
        node.handle_input(input, now);
        let _ = drive(&mut node, &mut out);
    }
    assert_eq!(out.transmits, rec.transmits, "seed {seed}");
    assert_eq!(out.replies, rec.replies, "seed {seed}");
}

/// `read_quorum = "majority"`: a GET asks every holder at once and answers what most of them hold.
#[test]
fn majority_reads_return_what_was_written() {
    use bytes::Bytes;
    use voidphone_dht::config::ReadQuorum;
    use voidphone_dht::id::Id;
    use voidphone_dht::wire::api::{ApiReply, ApiRequest};
    let seed = seed_from_env(16);
    let mut cfg = Sim::default_node_config();
    cfg.read_quorum = ReadQuorum::Majority;
    let mut sim = Sim::new(seed, cfg, NetConfig::default());
    sim.grow(16, 2_000);
    converge(&mut sim, 120_000);
    let addrs: Vec<_> = sim.nodes.keys().copied().collect();
    for i in 0..40u64 {
        let key = Id::hash(&i.to_be_bytes());
        let value = Bytes::from(i.to_be_bytes().to_vec());
        let put = ApiRequest::Put {
            ttl_s: 600,
            replication: 3,
            key,
            value,
        };
        sim.client_request(addrs[i as usize % 16], i, put);
    }
    sim.run_for(15_000); // copies and a repair round
    sim.replies.clear();
    for i in 0..40u64 {
        let key = Id::hash(&i.to_be_bytes());
        sim.client_request(
            addrs[(i as usize * 7 + 3) % 16],
            1000 + i,
            ApiRequest::Get { key },
        );
    }
    sim.run_for(10_000);
    let right = sim
        .replies
        .iter()
        .filter(|(_, c, r)| {
            let i = c - 1000;
            matches!(r, ApiReply::Success { value, .. } if value[..] == i.to_be_bytes())
        })
        .count();
    assert_eq!(right, 40, "seed {seed}: {:?}", sim.replies);
}

/// Every node's first successor and predecessor are the oracle's for the nodes of its own side
/// (each side of a split forms a ring of its own).
fn side_rings_right(sim: &Sim, side: &BTreeSet<SocketAddr>) -> bool {
    let sorted = sim.live_sorted();
    [true, false].iter().all(|&inside| {
        let ring: Vec<_> = sorted
            .iter()
            .filter(|(_, a)| side.contains(a) == inside)
            .collect();
        let n = ring.len();
        ring.iter().enumerate().all(|(i, (_, addr))| {
            let node = sim.node(*addr);
            node.successors().first().map(|p| p.id) == Some(ring[(i + 1) % n].0)
                && node.predecessor().map(|p| p.id) == Some(ring[(i + n - 1) % n].0)
        })
    })
}

/// A network partition splits the ring in two (a random half on each side) for 30 s: each side
/// forms a ring of its own; once the network heals, nodes trying the neighbours they lost find the
/// other ring and the two merge into the oracle's ring. Returns (split-ring time, merge time).
fn split_and_heal(n: usize, seed: u64) -> (u64, u64) {
    let mut rng = Prng::new(seed ^ 0x5917);
    let mut sim = Sim::new(seed, Sim::default_node_config(), NetConfig::default());
    sim.check_every_event = false;
    sim.grow(n, 5_000);
    converge(&mut sim, 300_000);
    let side: BTreeSet<SocketAddr> = sim
        .nodes
        .keys()
        .copied()
        .filter(|_| rng.chance(0.5))
        .collect();
    sim.split(side.clone());
    let apart = sim.run_until_cond(100, 30_000, |s| side_rings_right(s, &side));
    let apart = apart.unwrap_or_else(|| panic!("seed {seed}: the sides formed no rings in 30 s"));
    let healed_at = 30_000 - apart.min(30_000);
    sim.run_for(healed_at);
    sim.heal();
    let merged = converge(&mut sim, 600_000);
    probe_all(&mut sim, 500);
    (apart, merged)
}

#[test]
fn a_ring_split_by_a_partition_merges_once_it_heals() {
    for (n, seed) in [
        (64, seed_from_env(641)),
        (64, seed_from_env(642)),
        (500, seed_from_env(501)),
    ] {
        let (apart, merged) = split_and_heal(n, seed);
        eprintln!(
            "N={n} seed {seed}: split into two rings in {apart} ms; one ring {merged} ms after the heal"
        );
        // Lost neighbours are tried at most 30 stabilize periods apart; then the zip takes rounds.
        assert!(
            merged <= 60_000,
            "seed {seed}: merged only after {merged} ms (SIM_SEED={seed})"
        );
    }
}

/// The ranges of a ring grown from `n` joins (spread over `n` × 500 ms), with each joiner choosing
/// its slot (`choose`) or every node on slot 0: the share of the key space each node owns, as
/// statistics relative to the mean.
fn balance_after_joins(n: usize, seed: u64, choose: bool) -> Balance {
    let mut cfg = Sim::default_node_config();
    cfg.id_slot = if choose { None } else { Some(0) };
    let mut sim = Sim::new(seed, cfg, NetConfig::default());
    sim.check_every_event = false;
    sim.grow(n, 500 * n as u64);
    converge(&mut sim, 600_000);
    let ids: Vec<Id> = sim.live_sorted().iter().map(|(id, _)| *id).collect();
    Balance::of(&balance::ring_arcs(&ids)).expect("a ring")
}

/// Joiners taking the best of their 8 slot ids (issue 11) own far more even ranges than random
/// ids: measured over 3 rings of 300 nodes, and rings of 16.
#[test]
fn joiners_choosing_their_slot_even_out_the_ranges() {
    for n in [16usize, 300] {
        let mut worst = [0f64; 2];
        for seed in 1..=3 {
            let seed = seed_from_env(seed * 100 + n as u64);
            let random = balance_after_joins(n, seed, false);
            let chosen = balance_after_joins(n, seed, true);
            eprintln!(
                "N={n} seed {seed}: range/mean slot 0: p99 {:.2} max {:.2} p1 {:.3}; chosen: p99 {:.2} max {:.2} p1 {:.3}",
                random.p99, random.max, random.p1, chosen.p99, chosen.max, chosen.p1
            );
            worst = [worst[0].max(random.max), worst[1].max(chosen.max)];
        }
        // The study (examples/balance.rs) gives max 2.28 at N = 1000 with 8 slots; random 8.9.
        assert!(
            worst[1] <= 3.0 && worst[1] < worst[0],
            "N={n}: the largest range with slot choice is {:.2} × the mean (slot 0: {:.2})",
            worst[1],
            worst[0]
        );
    }
}

/// The ranges of the live ring, relative to the mean.
fn ring_balance(sim: &Sim) -> Balance {
    let ids: Vec<Id> = sim.live_sorted().iter().map(|(id, _)| *id).collect();
    Balance::of(&balance::ring_arcs(&ids)).expect("a ring")
}

/// Rebalancing (issue 11): a ring whose nodes all joined at once (their slot choices made on a
/// stale view) is evened out by invitations and moves over 20 simulated minutes (20 s rebalance
/// periods here), and no value is lost while nodes move. `REBALANCE_NODES` and `REBALANCE_MINUTES`
/// scale it (the note's N = 1000 hour: `REBALANCE_NODES=1000 REBALANCE_MINUTES=60`).
#[test]
fn rebalancing_evens_a_ring_formed_at_once_and_loses_nothing() {
    use bytes::Bytes;
    use voidphone_dht::wire::api::{ApiReply, ApiRequest};
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (nodes, minutes) = (env("REBALANCE_NODES", 128), env("REBALANCE_MINUTES", 20));
    let seed = seed_from_env(900);
    let mut cfg = Sim::default_node_config();
    cfg.rebalance_interval_ms = 20_000;
    let mut sim = Sim::new(seed, cfg, NetConfig::default());
    sim.check_every_event = false;
    sim.grow(nodes as usize, 1_000);
    converge(&mut sim, 600_000);
    let before = ring_balance(&sim);
    const VALUES: u64 = 300;
    let addrs: Vec<_> = sim.nodes.keys().copied().collect();
    for i in 0..VALUES {
        let put = ApiRequest::Put {
            ttl_s: 43_200,
            replication: 3,
            key: Id::hash(&i.to_be_bytes()),
            value: Bytes::from(i.to_be_bytes().to_vec()),
        };
        sim.client_request(addrs[i as usize % addrs.len()], i, put);
    }
    let handed_on = |sim: &Sim| -> u64 {
        let stats = sim.nodes.values().map(|n| n.node.stats());
        stats.map(|s| s.values_handed_on).sum()
    };
    let handed_before = handed_on(&sim);
    sim.run_for(minutes * 60_000);
    let healed = converge(&mut sim, 600_000);
    let after = ring_balance(&sim);
    let moved = handed_on(&sim) - handed_before;
    let moves: u64 = sim
        .nodes
        .values()
        .map(|n| n.node.stats().rebalance_moves)
        .sum();
    sim.replies.clear();
    let addrs: Vec<_> = sim.nodes.keys().copied().collect();
    for i in 0..VALUES {
        let get = ApiRequest::Get {
            key: Id::hash(&i.to_be_bytes()),
        };
        sim.client_request(addrs[(i as usize * 7) % addrs.len()], 1000 + i, get);
    }
    sim.run_for(10_000);
    let right = sim
        .replies
        .iter()
        .filter(|(_, c, r)| {
            matches!(r, ApiReply::Success { value, .. } if value[..] == (c - 1000).to_be_bytes())
        })
        .count();
    eprintln!(
        "{nodes} nodes joined within 1 s: range/mean p99 {:.2} max {:.2} p1 {:.3}; after {minutes} \
         min of rebalancing ({moves} moves, ring ideal {healed} ms later): p99 {:.2} max {:.2} p1 \
         {:.3}; values moved (handed on) {moved}, lost {}: {right} of {VALUES} read right",
        before.p99,
        before.max,
        before.p1,
        after.p99,
        after.max,
        after.p1,
        VALUES - right as u64
    );
    assert_eq!(
        right as u64, VALUES,
        "seed {seed}: values lost while nodes moved"
    );
    assert!(
        moves > 0 && after.max < before.max,
        "seed {seed}: rebalancing evened nothing"
    );
}
