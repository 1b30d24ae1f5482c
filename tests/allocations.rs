//! Heap allocations on the request path of the sans-IO core, counted by a global allocator: a GET
//! answered locally and a GET answered by another node of a two-node ring. Growth of reused
//! buffers is allowed; one allocation per request is not (the issue: "no per-message allocation
//! on the hot path").

use bytes::Bytes;
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use voidphone_dht::chord::{Collected, Input, Node, Transmit, drain};
use voidphone_dht::config::Config;
use voidphone_dht::id::Id;
use voidphone_dht::time::Time;
use voidphone_dht::wire::api::{ApiReply, ApiRequest};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

const ROUNDS: u64 = 20_000;

fn keys() -> Vec<Id> {
    (0..1000u32).map(|i| Id::hash(&i.to_be_bytes())).collect()
}

fn put(key: Id) -> ApiRequest {
    ApiRequest::Put {
        ttl_s: 3600,
        replication: 1,
        key,
        value: Bytes::from_static(&[0x5a; 100]),
    }
}

#[test]
fn a_local_get_allocates_nothing() {
    let mut node = Node::new(
        Config::default().node,
        "127.0.0.1:7402".parse().unwrap(),
        1,
        Time(0),
    );
    let keys = keys();
    let mut out = Collected::default();
    for k in &keys {
        node.handle_input(
            Input::ClientRequest {
                client: 1,
                req: put(*k),
            },
            Time(1),
        );
    }
    let get = |node: &mut Node, out: &mut Collected, i: u64| {
        node.handle_input(
            Input::ClientRequest {
                client: 1,
                req: ApiRequest::Get {
                    key: keys[i as usize % keys.len()],
                },
            },
            Time(2),
        );
        drain(node, out);
        assert!(matches!(
            out.replies.pop(),
            Some((1, ApiReply::Success { .. }))
        ));
    };
    for i in 0..ROUNDS {
        get(&mut node, &mut out, i); // warm-up: buffers reach their size
    }
    let before = allocations();
    for i in 0..ROUNDS {
        get(&mut node, &mut out, i);
    }
    let per_get = (allocations() - before) as f64 / ROUNDS as f64;
    eprintln!("local GET: {per_get:.4} allocations per request");
    assert!(per_get < 0.05, "{per_get} allocations per local GET");
}

/// Hands every transmit to its addressee until nothing moves (client replies stay in `out`).
/// `delivering` is swapped with `out.transmits`, so neither buffer is reallocated.
fn shuttle(
    nodes: &mut [(SocketAddr, Node)],
    out: &mut Collected,
    delivering: &mut Vec<Transmit>,
    now: Time,
) {
    loop {
        for (_, n) in nodes.iter_mut() {
            drain(n, out);
        }
        if out.transmits.is_empty() {
            return;
        }
        std::mem::swap(delivering, &mut out.transmits);
        for t in delivering.drain(..) {
            let sender = nodes
                .iter()
                .map(|(a, _)| *a)
                .find(|a| *a != t.to)
                .expect("two nodes");
            if let Some((_, n)) = nodes.iter_mut().find(|(a, _)| *a == t.to) {
                n.handle_input(
                    Input::PeerFrame {
                        from: sender,
                        frame: t.frame,
                    },
                    now,
                );
            }
        }
    }
}

#[test]
fn a_get_answered_by_another_node_allocates_about_nothing() {
    let (a, b): (SocketAddr, SocketAddr) = (
        "127.0.0.2:7001".parse().unwrap(),
        "127.0.0.3:7002".parse().unwrap(),
    );
    let mut cfg = Config::default().node;
    let first = Node::new(cfg.clone(), a, 1, Time(0));
    cfg.bootstrap = vec![a];
    let second = Node::new(cfg, b, 2, Time(0));
    let mut nodes = vec![(a, first), (b, second)];
    let mut out = Collected::default();
    let mut delivering = Vec::new();
    // Form the ring: timers and messages until both know each other both ways.
    let mut now = Time(0);
    for _ in 0..200 {
        now = now + 50;
        for (_, n) in nodes.iter_mut() {
            n.handle_input(Input::Timeout, now);
        }
        shuttle(&mut nodes, &mut out, &mut delivering, now);
    }
    for (_, n) in &nodes {
        assert_eq!(n.successors().len(), 1, "two-node ring formed");
        assert!(n.predecessor().is_some());
    }
    // Keys the second node is responsible for, stored through the first.
    let theirs: Vec<Id> = keys()
        .into_iter()
        .filter(|k| voidphone_dht::id::in_half_open(k, &nodes[0].1.me().id, &nodes[1].1.me().id))
        .collect();
    assert!(!theirs.is_empty());
    for k in &theirs {
        nodes[0].1.handle_input(
            Input::ClientRequest {
                client: 1,
                req: put(*k),
            },
            now,
        );
        shuttle(&mut nodes, &mut out, &mut delivering, now);
    }
    out.replies.clear();
    let mut get = |nodes: &mut Vec<(SocketAddr, Node)>, i: u64| {
        let key = theirs[i as usize % theirs.len()];
        nodes[0].1.handle_input(
            Input::ClientRequest {
                client: 1,
                req: ApiRequest::Get { key },
            },
            now,
        );
        shuttle(nodes, &mut out, &mut delivering, now);
        assert!(matches!(
            out.replies.pop(),
            Some((1, ApiReply::Success { .. }))
        ));
    };
    for i in 0..ROUNDS {
        get(&mut nodes, i);
    }
    let before = allocations();
    for i in 0..ROUNDS {
        get(&mut nodes, i);
    }
    let per_get = (allocations() - before) as f64 / ROUNDS as f64;
    eprintln!("remote GET: {per_get:.4} allocations per request");
    assert!(per_get < 0.05, "{per_get} allocations per remote GET");
}
