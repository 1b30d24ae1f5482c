//! Values survive churn (deterministic simulator): 200 nodes, values with replication 3, Poisson
//! joins, graceful leaves and crashes. Every GET of an unexpired value succeeds once the ring has had a
//! repair round after the churn; the success rate during churn is reported.
//! Replay a failure with `SIM_SEED=<seed> cargo test --release --test churn`.

use bytes::Bytes;
use std::collections::BTreeMap;
use voidphone_dht::id::{Id, Key};
use voidphone_dht::sim::{NetConfig, Sim, seed_from_env};
use voidphone_dht::time::Prng;
use voidphone_dht::wire::api::{ApiReply, ApiRequest};

pub struct ChurnReport {
    pub gets: u64,
    pub ok: u64,
    pub joins: u64,
    pub leaves: u64,
    pub crashes: u64,
    pub lost_after: usize,
}

fn config() -> voidphone_dht::config::NodeConfig {
    let mut c = Sim::default_node_config();
    c.repair_interval_ms = 5_000;
    c
}

/// GETs every key once through random nodes and returns the keys not found.
fn missing(
    sim: &mut Sim,
    values: &BTreeMap<Key, Bytes>,
    rng: &mut Prng,
    next_client: &mut u64,
) -> Vec<Key> {
    sim.replies.clear();
    let addrs: Vec<_> = sim.nodes.keys().copied().collect();
    for k in values.keys() {
        *next_client += 1;
        let at = addrs[rng.below(addrs.len() as u64) as usize];
        sim.client_request(at, *next_client, ApiRequest::Get { key: *k });
    }
    sim.run_for(10_000);
    let found: Vec<Key> = sim
        .replies
        .iter()
        .filter_map(|(_, _, r)| match r {
            ApiReply::Success { key, value } if values.get(key) == Some(value) => Some(*key),
            _ => None,
        })
        .collect();
    values
        .keys()
        .filter(|k| !found.contains(k))
        .copied()
        .collect()
}

/// Churn at `rate` events per second for `churn_ms`; crashes are spaced by at least two repair
/// rounds so that fewer than `replication` consecutive holders are ever down at once.
fn churn(seed: u64, rate: f64, churn_ms: u64) -> ChurnReport {
    let mut rng = Prng::new(seed ^ 0xc0ffee);
    let mut sim = Sim::new(seed, config(), NetConfig::default());
    sim.check_every_event = false;
    sim.grow(200, 5_000);
    sim.converge(600_000)
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let mut values = BTreeMap::new();
    let mut next_client = 0u64;
    let addrs: Vec<_> = sim.nodes.keys().copied().collect();
    for i in 0..1000u64 {
        let key = Id::hash(&i.to_be_bytes());
        let value = Bytes::from(format!("value {i}"));
        let at = addrs[rng.below(addrs.len() as u64) as usize];
        sim.client_request(
            at,
            0,
            ApiRequest::Put {
                ttl_s: 43_200,
                replication: 3,
                key,
                value: value.clone(),
            },
        );
        values.insert(key, value);
    }
    sim.run_for(15_000);
    let mut report = ChurnReport {
        gets: 0,
        ok: 0,
        joins: 0,
        leaves: 0,
        crashes: 0,
        lost_after: 0,
    };
    let keys: Vec<Key> = values.keys().copied().collect();
    let mut last_crash = 0u64;
    let start = sim.now().0;
    sim.replies.clear();
    while sim.now().0 - start < churn_ms {
        let live: Vec<_> = sim.nodes.keys().copied().collect();
        if rng.chance(rate / 10.0) {
            let victim = live[rng.below(live.len() as u64) as usize];
            match rng.below(3) {
                0 => {
                    sim.add_node(Some(victim));
                    report.joins += 1;
                }
                1 => {
                    sim.leave(victim);
                    report.leaves += 1;
                }
                _ if sim.now().0 - last_crash >= 2 * config().repair_interval_ms => {
                    sim.crash(victim);
                    last_crash = sim.now().0;
                    report.crashes += 1;
                }
                _ => {}
            }
        }
        // Poisson-ish lookups: one GET every 100 ms through a random live node.
        let at = live[rng.below(live.len() as u64) as usize];
        next_client += 1;
        sim.client_request(
            at,
            next_client,
            ApiRequest::Get {
                key: keys[rng.below(keys.len() as u64) as usize],
            },
        );
        sim.run_for(100);
    }
    sim.run_for(10_000);
    for (_, _, r) in &sim.replies {
        report.gets += 1;
        report.ok +=
            matches!(r, ApiReply::Success { key, value } if values.get(key) == Some(value)) as u64;
    }
    // Churn stops: after stabilization and a repair round every value is found.
    sim.run_for(2 * config().repair_interval_ms + 5_000);
    report.lost_after = missing(&mut sim, &values, &mut rng, &mut next_client).len();
    report
}

#[test]
fn values_survive_churn_and_are_all_found_after_a_repair_round() {
    let seed = seed_from_env(4);
    let r = churn(seed, 0.2, 600_000);
    eprintln!(
        "churn 0.2/s for 10 min: {} joins, {} leaves, {} crashes; GETs during churn {}/{} ({:.2} %); lost after {}",
        r.joins,
        r.leaves,
        r.crashes,
        r.ok,
        r.gets,
        100.0 * r.ok as f64 / r.gets as f64,
        r.lost_after
    );
    assert!(r.joins + r.leaves + r.crashes > 50, "the churn happened");
    assert_eq!(
        r.lost_after, 0,
        "seed {seed}: values lost (replay with SIM_SEED={seed})"
    );
}

/// Pinned regression (seed 4, 0.4 events/s): a node that took over a key range from a node that
/// never had one value (it had joined just before the value's responsible node crashed) never
/// copied it back, and the value died with its last holders. Responsible nodes now fetch what their
/// replica holders list and they lack.
#[test]
fn pinned_seed_4_at_0_4_per_second_loses_nothing() {
    let r = churn(4, 0.4, 1_800_000);
    assert_eq!(r.lost_after, 0, "values lost");
}

/// The Chord paper's figure: lookups during churn at several rates (printed; run with --ignored).
#[test]
#[ignore]
fn report_get_success_under_churn_rates() {
    for rate in [0.05, 0.1, 0.2, 0.4, 0.8] {
        let r = churn(seed_from_env(4), rate, 1_800_000);
        eprintln!(
            "rate {rate}/s, 30 min: {} joins {} leaves {} crashes; GET success {:.2} % of {}; lost after churn {}",
            r.joins,
            r.leaves,
            r.crashes,
            100.0 * r.ok as f64 / r.gets as f64,
            r.gets,
            r.lost_after
        );
    }
}

/// The cost of repair rounds for 16 nodes × 10,000 values each (replication 3): when nothing
/// changed, and after one node died. Printed; run with --ignored.
#[test]
#[ignore]
fn report_repair_round_cost() {
    let mut sim = Sim::new(seed_from_env(16), config(), NetConfig::default());
    sim.check_every_event = false;
    sim.grow(16, 2_000);
    sim.converge(120_000).unwrap();
    let addrs: Vec<_> = sim.nodes.keys().copied().collect();
    for i in 0..160_000u64 {
        let req = ApiRequest::Put {
            ttl_s: 43_200,
            replication: 3,
            key: Id::hash(&i.to_be_bytes()),
            value: Bytes::from(vec![7u8; 100]),
        };
        sim.client_request(addrs[i as usize % 16], 0, req);
        if i % 1000 == 999 {
            sim.run_for(100);
        }
    }
    sim.run_for(30_000);
    let window = |sim: &mut Sim, ms: u64| {
        sim.traffic.clear();
        sim.run_for(ms);
        let t = &sim.traffic;
        let get = |ty: u16| t.get(&ty).copied().unwrap_or_default();
        (get(1006), get(1007), get(1002), get(1004))
    };
    let (sync, reply, put, ack) = window(&mut sim, config().repair_interval_ms);
    eprintln!(
        "nothing changed, one round of 16 nodes: SYNC {sync:?}, SYNC REPLY {reply:?}, STORAGE PUT {put:?}, PUT SUCCESS {ack:?} (messages, bytes)"
    );
    let victim = addrs[3];
    sim.crash(victim);
    let (sync, reply, put, ack) = window(&mut sim, 3 * config().repair_interval_ms);
    eprintln!(
        "after one node died, three rounds: SYNC {sync:?}, SYNC REPLY {reply:?}, STORAGE PUT {put:?}, PUT SUCCESS {ack:?} (messages, bytes)"
    );
}
