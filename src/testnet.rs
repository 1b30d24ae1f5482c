//! Several nodes in one process on 127.0.0.1 (each its own reactor thread), joined into one ring:
//! for people who want a ring to play with, and for the loopback tests and benches.

use crate::client;
use crate::config::Config;
use crate::reactor::RunningNode;
use crate::reactor::hub::Hub;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A config for a loopback test node on OS-picked ports, with fast maintenance timers. Every call
/// gives the node a loopback address of its own (127.77.x.y; all of 127/8 reaches `lo` on Linux): a
/// node's ring id comes from its IP, and peers check it.
pub fn loopback_config(bootstrap: Vec<SocketAddr>) -> Config {
    let mut cfg = Config::default();
    cfg.reactor.api_address = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.reactor.p2p_address = SocketAddr::new(next_loopback_ip(), 0);
    cfg.node.bootstrap = bootstrap;
    // Slot 0, not the joining node's choice: tests know each node's id from its address.
    cfg.node.id_slot = Some(0);
    cfg.node.stabilize_interval_ms = 200;
    cfg.node.fix_fingers_interval_ms = 100;
    cfg.node.check_predecessor_interval_ms = 400;
    cfg.node.request_timeout_ms = 500;
    cfg.node.repair_interval_ms = 1000;
    cfg
}

/// A loopback address not handed out before in this process.
pub fn next_loopback_ip() -> std::net::IpAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % (254 * 256);
    std::net::IpAddr::from([127, 77, (n / 254) as u8, (n % 254 + 1) as u8])
}

/// Starts `count` nodes, each on its own thread: the first alone, the others joining through it.
pub fn start(count: usize, seed: u64) -> io::Result<Vec<RunningNode>> {
    let first = RunningNode::spawn(&loopback_config(Vec::new()), seed)?;
    let boot = vec![first.p2p];
    let mut nodes = vec![first];
    for i in 1..count {
        nodes.push(RunningNode::spawn(
            &loopback_config(boot.clone()),
            seed.wrapping_add(i as u64),
        )?);
    }
    Ok(nodes)
}

/// Starts `count` nodes on `threads` threads (node i on thread i mod `threads`), joined as by
/// [`start`]: many nodes per core without a thread switch per message.
pub fn start_shared(count: usize, seed: u64, threads: usize) -> io::Result<Vec<RunningNode>> {
    let threads = threads.clamp(1, count.max(1));
    let mut hubs = (0..threads)
        .map(|_| Hub::new())
        .collect::<io::Result<Vec<Hub>>>()?;
    let first = hubs[0].bind(&loopback_config(Vec::new()), seed)?;
    for i in 1..count {
        hubs[i % threads].bind(&loopback_config(vec![first]), seed.wrapping_add(i as u64))?;
    }
    // nodes[0] is the first node, as with `start`.
    let mut nodes = Vec::with_capacity(count);
    for hub in hubs {
        nodes.extend(hub.spawn()?);
    }
    Ok(nodes)
}

/// Waits until walking the ring from the first node visits every node, in id order.
pub fn wait_for_ring(nodes: &[RunningNode], within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let mut want: Vec<_> = nodes.iter().map(|n| n.p2p).collect();
    want.sort_by_key(|a| crate::id::Id::of_addr(*a));
    let mut last = String::new();
    while Instant::now() < deadline {
        match ring_order(nodes[0].p2p) {
            Ok(walk) if is_rotation(&walk, &want) => return Ok(()),
            Ok(walk) => last = format!("walk visited {} of {} nodes", walk.len(), want.len()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(last)
}

/// The P2P addresses met walking the ring from `start`.
pub fn ring_order(start: SocketAddr) -> io::Result<Vec<SocketAddr>> {
    Ok(client::walk_ring(start, 10_000, Duration::from_secs(1))?
        .into_iter()
        .map(|n| n.node.addr)
        .collect())
}

/// Is `walk` the sorted ring `want`, started anywhere?
pub fn is_rotation(walk: &[SocketAddr], want: &[SocketAddr]) -> bool {
    if walk.len() != want.len() {
        return false;
    }
    let Some(at) = want.iter().position(|a| *a == walk[0]) else {
        return false;
    };
    walk.iter()
        .enumerate()
        .all(|(i, a)| *a == want[(at + i) % want.len()])
}
