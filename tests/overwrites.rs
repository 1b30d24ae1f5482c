//! Later writes win on every copy (simulator): each write gets a version at the key's responsible
//! node, an older copy never replaces a newer one, and repair brings a holder that missed an
//! overwrite up to date — also when the old and the new value have the same length, which the
//! summaries could not tell apart before versions.

use bytes::Bytes;
use std::net::SocketAddr;
use voidphone_dht::id::{Id, Key};
use voidphone_dht::msg::{COPY_FLAG, Frame, PeerMsg};
use voidphone_dht::sim::{NetConfig, Sim, seed_from_env};
use voidphone_dht::wire::api::{ApiReply, ApiRequest};

fn ring(seed: u64, n: usize) -> Sim {
    let mut sim = Sim::new(seed, Sim::default_node_config(), NetConfig::default());
    sim.grow(n, 2_000);
    sim.converge(300_000)
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    sim
}

/// The key's responsible node and its next two successors, from the oracle.
fn holders(sim: &Sim, key: &Key) -> Vec<SocketAddr> {
    let sorted = sim.live_sorted();
    let first = sorted.iter().position(|(id, _)| id >= key).unwrap_or(0);
    (0..3)
        .map(|i| sorted[(first + i) % sorted.len()].1)
        .collect()
}

fn put(sim: &mut Sim, at: SocketAddr, key: Key, value: &'static [u8]) {
    let req = ApiRequest::Put {
        ttl_s: 3600,
        replication: 3,
        key,
        value: Bytes::from_static(value),
    };
    sim.client_request(at, 0, req);
    sim.run_for(2_000);
}

fn held(sim: &Sim, at: SocketAddr, key: &Key) -> Option<(Vec<u8>, u64)> {
    sim.node(at)
        .storage()
        .get(key, sim.now())
        .map(|s| (s.value.to_vec(), s.version))
}

fn get(sim: &mut Sim, at: SocketAddr, key: Key) -> Option<Bytes> {
    sim.replies.clear();
    sim.client_request(at, 7, ApiRequest::Get { key });
    sim.run_for(6_000);
    match sim.replies.pop() {
        Some((_, 7, ApiReply::Success { value, .. })) => Some(value),
        _ => None,
    }
}

#[test]
fn a_late_old_copy_does_not_replace_a_newer_write() {
    let seed = seed_from_env(71);
    let mut sim = ring(seed, 8);
    let key = Id::hash(b"late copy");
    let hs = holders(&sim, &key);
    let via = sim.live_sorted()[0].1;
    put(&mut sim, via, key, b"first");
    let (_, v1) = held(&sim, hs[0], &key).expect("stored");
    put(&mut sim, via, key, b"other");
    // The first write's copy arrives at every holder again, late (a hand-off that lagged).
    for &h in &hs {
        let copy = PeerMsg::StoragePut {
            ttl_ms: 3_600_000,
            replication: 3 | COPY_FLAG,
            version: v1,
            key,
            value: Bytes::from_static(b"first"),
        };
        sim.deliver(hs[0], h, Frame::new(0, copy));
    }
    sim.run_for(1_000);
    for &h in &hs {
        let (value, version) = held(&sim, h, &key).expect("still held");
        assert_eq!(value, b"other", "seed {seed}: holder {h}");
        assert!(version > v1);
    }
    assert_eq!(get(&mut sim, via, key).as_deref(), Some(&b"other"[..]));
}

#[test]
fn repair_brings_a_holder_that_missed_an_overwrite_up_to_date() {
    let seed = seed_from_env(72);
    let mut sim = ring(seed, 8);
    let key = Id::hash(b"missed overwrite");
    let hs = holders(&sim, &key);
    put(&mut sim, hs[0], key, b"old-value");
    for &h in &hs {
        assert_eq!(held(&sim, h, &key).unwrap().0, b"old-value");
    }
    // The overwrite (same length) reaches the responsible node, but every copy is lost.
    sim.set_loss(1.0);
    sim.client_request(hs[0], 0, {
        ApiRequest::Put {
            ttl_s: 3600,
            replication: 3,
            key,
            value: Bytes::from_static(b"new-value"),
        }
    });
    sim.run_for(10);
    sim.set_loss(0.0);
    assert_eq!(held(&sim, hs[0], &key).unwrap().0, b"new-value");
    assert_eq!(held(&sim, hs[1], &key).unwrap().0, b"old-value");
    // Repair rounds (every 10 s, jittered) bring both replicas to the new write.
    let took = sim.run_until_cond(500, 60_000, |s| {
        hs.iter()
            .all(|h| held(s, *h, &key).is_some_and(|(v, _)| v == b"new-value"))
    });
    assert!(
        took.is_some(),
        "seed {seed}: replicas still hold the old value"
    );
    // With the responsible node gone, its successor answers with the new value.
    sim.crash(hs[0]);
    sim.run_for(10_000);
    let via = hs[2];
    assert_eq!(get(&mut sim, via, key).as_deref(), Some(&b"new-value"[..]));
}
