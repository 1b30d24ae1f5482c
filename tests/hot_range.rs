//! Balance by bytes (issue 11) on real nodes: a ring whose values crowd into one node's range
//! (a hot spot, not a wide range) fills that node towards its quota; with rebalancing on, the
//! nearly full node invites a node with room into the middle of its bytes, nearly full nodes drop
//! the copies the newcomers left them past the holders of, and every value stays readable.

mod common;

use common::wait_until;
use std::time::Duration;
use voidphone_dht::balance::{FULL_PERCENT, arc_fraction};
use voidphone_dht::client::{self, ApiClient, NodeInfo};
use voidphone_dht::id::{Id, Key, in_open};
use voidphone_dht::reactor::RunningNode;
use voidphone_dht::testnet::loopback_config;

const NODES: usize = 8;
const QUOTA: usize = 400_000;
const VALUE_BYTES: usize = 4000;
/// About 81 % of the quota in one node's range.
const HOT_VALUES: usize = 80;
const CONVERGE: Duration = Duration::from_secs(60);

fn walk(start: std::net::SocketAddr) -> Vec<NodeInfo> {
    client::walk_ring(start, 2 * NODES, Duration::from_secs(1)).unwrap_or_default()
}

fn fill(n: &NodeInfo) -> u64 {
    n.bytes_stored * 100 / n.bytes_max.max(1)
}

/// How many of `keys` node `n` is one of the 3 holders of (the key's successor and the next two)
/// on the ring `ring` walked.
fn holding(ring: &[NodeInfo], keys: &[Key], n: &NodeInfo) -> u32 {
    let mut ids: Vec<Id> = ring.iter().map(|i| i.node.id).collect();
    ids.sort();
    let at = ids.binary_search(&n.node.id).expect("on the ring");
    let n_ids = ids.len();
    let holds = |k: &&Key| {
        let owner = ids.partition_point(|id| id < *k);
        (0..3).any(|j| (owner + j) % n_ids == at)
    };
    keys.iter().filter(holds).count() as u32
}

/// Random keys in `(pred, owner)`.
fn keys_in(pred: &Id, owner: &Id, count: usize) -> Vec<Key> {
    (0u64..)
        .map(|i| Id::hash(&i.to_be_bytes()))
        .filter(|k| in_open(k, pred, owner))
        .take(count)
        .collect()
}

#[test]
fn a_nearly_full_node_has_its_bytes_split_and_nothing_is_lost() {
    let config = |bootstrap| {
        let mut cfg = loopback_config(bootstrap);
        cfg.node.id_slot = None;
        cfg.node.rebalance_interval_ms = 200;
        cfg.node.storage_bytes_max = QUOTA;
        // One writer (the node that took the client's PUT) may fill the whole store.
        cfg.node.storage_share_per_peer = 1.0;
        cfg
    };
    let first = RunningNode::spawn(&config(Vec::new()), 901).unwrap();
    let boot = vec![first.p2p];
    let mut nodes = vec![first];
    for i in 1..NODES as u64 {
        nodes.push(RunningNode::spawn(&config(boot.clone()), 901 + i).unwrap());
        wait_until(CONVERGE, &format!("ring of {}", nodes.len()), || {
            walk(nodes[0].p2p).len() == nodes.len()
        });
    }
    // The hot node: the one with the narrowest range, which no invitation for a wide range comes
    // from; the values go into its range.
    let ring = walk(nodes[0].p2p);
    let range = |n: &NodeInfo| n.pred.map_or(1.0, |p| arc_fraction(&p.id, &n.node.id));
    let hot = ring
        .iter()
        .min_by(|a, b| range(a).total_cmp(&range(b)))
        .unwrap();
    let (hot_addr, pred) = (hot.node.addr, hot.pred.unwrap().id);
    let keys = keys_in(&pred, &hot.node.id, HOT_VALUES);
    let value = |k: &Key| {
        let mut v = k.0.repeat(VALUE_BYTES / 32);
        v.truncate(VALUE_BYTES);
        v
    };
    let mut c = ApiClient::connect(nodes[1].api).unwrap();
    for k in &keys {
        c.put(*k, &value(k), 600, 3).unwrap();
    }
    let info = |addr| client::node_info(addr, Duration::from_secs(1));
    let mut before = 0;
    wait_until(CONVERGE, "the hot node near full", || {
        before = info(hot_addr).map_or(0, |i| fill(&i));
        before >= u64::from(FULL_PERCENT)
    });
    // The operator sees it: `ring` names the nearly full node (polled: a walk that meets a node
    // moving fails, and is tried again).
    wait_until(CONVERGE, "ring naming the near-full node", || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_voidphone-dht"))
            .args(["ring", "--p2p", &hot_addr.to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let near_full = text.lines().find(|l| l.starts_with("near full"));
        near_full.is_some_and(|l| l.contains(&hot_addr.to_string()))
    });
    // A node moved into the hot range: the hot node is responsible for at most half its values.
    let mut primary = HOT_VALUES as u32;
    wait_until(CONVERGE, "the hot node's values split", || {
        primary = info(hot_addr).map_or(primary, |i| i.values_primary);
        primary as usize <= HOT_VALUES / 2
    });
    // The copies the newcomers left past the holders are dropped by the nodes they fill up: no
    // node stays near full holding more than its share, and none holds less.
    let mut held = Vec::new();
    wait_until(
        CONVERGE,
        "no near-full node past the holders of a copy",
        || {
            let ring = walk(nodes[0].p2p);
            held = ring
                .iter()
                .map(|n| {
                    (
                        n.values_primary + n.values_replica,
                        holding(&ring, &keys, n),
                        fill(n),
                    )
                })
                .collect();
            ring.len() == NODES
                && held.iter().all(|&(has, should, fill)| {
                    has >= should && (has == should || fill < u64::from(FULL_PERCENT))
                })
        },
    );
    eprintln!(
        "hot node {before}% full, responsible for {HOT_VALUES} values; then for {primary}; \
         values held / to hold / fill per node {held:?}"
    );
    // Every value is still there, through every node.
    for node in &nodes {
        let mut c = ApiClient::connect(node.api).unwrap();
        for k in &keys {
            let got = c.get(*k).unwrap();
            assert_eq!(got.as_deref(), Some(&value(k)[..]), "key {}", k.short());
        }
    }
}
