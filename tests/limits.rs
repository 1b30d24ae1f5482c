//! Per-peer limits of the reactor (issue 10, item 3), over real TCP on loopback: a per-IP cap on
//! inbound P2P connections, separate API and P2P connection budgets, a deadline for every frame
//! begun (slowloris), a message token bucket per peer IP, and exponential backoff of dials to a
//! peer that does not answer. Each test asserts what honest clients and peers still get.

mod common;

use bytes::BytesMut;
use common::{client, key, wait_until};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use voidphone_dht::client::ApiClient;
use voidphone_dht::config::Config;
use voidphone_dht::msg::{Frame, PeerMsg};
use voidphone_dht::reactor::{Refusal, RunningNode};
use voidphone_dht::testnet::{loopback_config, next_loopback_ip, wait_for_ring};
use voidphone_dht::wire::p2p;

/// A blocking connection to `to` from source address `ip` (an attacker's or a peer's own IP).
fn connect_from(ip: IpAddr, to: SocketAddr) -> TcpStream {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let s = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP)).unwrap();
    s.bind(&SockAddr::from(SocketAddr::new(ip, 0))).unwrap();
    s.connect_timeout(&SockAddr::from(to), Duration::from_secs(5))
        .unwrap();
    let s: TcpStream = s.into();
    s.set_nodelay(true).unwrap();
    s
}

/// Has the node closed `s`? (The node sends nothing on these connections unless asked.)
fn is_closed(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let closed = match s.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    };
    s.set_nonblocking(false).unwrap();
    closed
}

fn spawn(cfg: &Config) -> RunningNode {
    RunningNode::spawn(cfg, 7).expect("node starts")
}

/// PUT then GET of one value through the node's API: the honest client's view.
fn api_round_trip(node: &RunningNode, i: u64) {
    let mut c = client(node);
    c.put(key(i), b"still served", 60, 1).unwrap();
    assert_eq!(
        c.get(key(i)).unwrap().as_deref(),
        Some(&b"still served"[..])
    );
}

#[test]
fn connections_past_the_per_ip_cap_are_refused_and_others_still_get_in() {
    let mut cfg = loopback_config(Vec::new());
    cfg.reactor.p2p_connections_per_ip_max = 4;
    let node = spawn(&cfg);
    let attacker = next_loopback_ip();
    let held: Vec<TcpStream> = (0..10).map(|_| connect_from(attacker, node.p2p)).collect();
    wait_until(Duration::from_secs(5), "6 of 10 refused", || {
        held.iter().filter(|s| is_closed(s)).count() == 6
    });
    assert_eq!(node.refusals().get(Refusal::P2pConnectionsPerIp), 6);
    // Operators see them in INFO (and `voidphone-dht ring`).
    wait_until(Duration::from_secs(5), "INFO counts the refusals", || {
        voidphone_dht::client::node_info(node.p2p, Duration::from_secs(1))
            .is_ok_and(|i| i.refusals >= 6)
    });
    // The four held idle stay open; the API port and honest peers are not affected.
    assert_eq!(held.iter().filter(|s| !is_closed(s)).count(), 4);
    api_round_trip(&node, 1);
    let honest = spawn(&loopback_config(vec![node.p2p]));
    let ring = [node, honest];
    wait_for_ring(&ring, Duration::from_secs(10)).expect("an honest node joins");
    let mut c = client(&ring[1]);
    assert_eq!(
        c.get(key(1)).unwrap().as_deref(),
        Some(&b"still served"[..])
    );
}

#[test]
fn a_full_p2p_side_does_not_lock_out_the_api_port() {
    let mut cfg = loopback_config(Vec::new());
    cfg.reactor.connections_max = 8;
    cfg.reactor.p2p_connections_per_ip_max = 8;
    cfg.reactor.api_connections_max = 4;
    let node = spawn(&cfg);
    let (a, b) = (next_loopback_ip(), next_loopback_ip());
    let held: Vec<TcpStream> = (0..12)
        .map(|i| connect_from(if i % 2 == 0 { a } else { b }, node.p2p))
        .collect();
    wait_until(Duration::from_secs(5), "4 of 12 refused", || {
        held.iter().filter(|s| is_closed(s)).count() == 4
    });
    assert_eq!(node.refusals().get(Refusal::P2pConnections), 4);
    // Four API clients at once still get answers; a fifth is over the API budget.
    let mut clients: Vec<ApiClient> = (0..4).map(|_| client(&node)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.get(key(i as u64)).unwrap(), None);
    }
    let fifth = TcpStream::connect(node.api).unwrap();
    wait_until(
        Duration::from_secs(5),
        "the fifth API client refused",
        || is_closed(&fifth),
    );
    assert_eq!(node.refusals().get(Refusal::ApiConnections), 1);
    // A slot freed on the API side is usable at once.
    drop(clients.pop());
    wait_until(Duration::from_secs(5), "an API slot freed", || {
        client(&node).get(key(9)).is_ok()
    });
}

/// Sends `frame_start` one byte every 50 ms until the node closes the connection; returns how
/// long after the first byte that was.
fn time_to_close_dribbling(mut s: TcpStream, frame_start: &[u8]) -> Duration {
    let start = Instant::now();
    for byte in frame_start.iter().cycle() {
        assert!(start.elapsed() < Duration::from_secs(5), "never closed");
        if s.write_all(&[*byte]).is_err() || is_closed(&s) {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    unreachable!()
}

#[test]
fn a_frame_dribbled_a_byte_at_a_time_is_closed_after_its_deadline() {
    let mut cfg = loopback_config(Vec::new());
    cfg.reactor.frame_deadline_ms = 300;
    let node = spawn(&cfg);
    // An API GET header (size 36, type 651) and a P2P header (magic, size 100): never completed.
    let api_get = [0, 36, 0x02, 0x8b];
    let p2p_head = [0x56, 0x50, 0x44, 0x48, 0, 0, 0, 100];
    let api = std::thread::spawn({
        let s = TcpStream::connect(node.api).unwrap();
        move || time_to_close_dribbling(s, &api_get)
    });
    let peer = connect_from(next_loopback_ip(), node.p2p);
    let p2p_took = time_to_close_dribbling(peer, &p2p_head);
    let api_took = api.join().unwrap();
    for took in [api_took, p2p_took] {
        assert!(
            took >= Duration::from_millis(250),
            "closed too soon: {took:?}"
        );
        assert!(
            took < Duration::from_millis(2000),
            "closed too late: {took:?}"
        );
    }
    assert_eq!(node.refusals().get(Refusal::FrameDeadline), 2);
    // Whole frames spaced wider than the deadline are fine: the deadline is per frame.
    let mut c = client(&node);
    for i in 0..2 {
        assert_eq!(c.get(key(i)).unwrap(), None);
        std::thread::sleep(Duration::from_millis(400));
    }
    assert_eq!(c.get(key(3)).unwrap(), None);
    assert_eq!(node.refusals().get(Refusal::FrameDeadline), 2);
}

/// Reads P2P frames from `s` until `want` INFO REPLYs have come (counted into `count`) or
/// `until` has passed.
fn count_info_replies(mut s: TcpStream, count: Arc<AtomicUsize>, want: usize, until: Instant) {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 16 * 1024];
    while Instant::now() < until && count.load(Ordering::Relaxed) < want {
        match s.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("flooder's connection failed: {e}"),
        }
        while let Some(f) = p2p::decode_frame(&mut buf, 1 << 20).unwrap() {
            if matches!(f.msg, PeerMsg::InfoReply(_)) {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[test]
fn a_flooding_peer_is_slowed_to_its_rate_and_honest_clients_are_served() {
    let mut cfg = loopback_config(Vec::new());
    cfg.reactor.peer_msgs_per_s = 100;
    let node = spawn(&cfg);
    // 400 requests at once: a burst of 200 (two seconds' worth), then 100 a second.
    let mut flood = BytesMut::new();
    for i in 0..400 {
        Frame::new(i, PeerMsg::InfoGet).encode(&mut flood);
    }
    let mut flooder = connect_from(next_loopback_ip(), node.p2p);
    let start = Instant::now();
    flooder.write_all(&flood).unwrap();
    let replies = Arc::new(AtomicUsize::new(0));
    let reader = std::thread::spawn({
        let (s, count) = (flooder.try_clone().unwrap(), replies.clone());
        move || count_info_replies(s, count, 400, start + Duration::from_secs(8))
    });
    // An honest client meanwhile: every GET answered, promptly.
    let mut c = client(&node);
    let mut served = 0;
    while start.elapsed() < Duration::from_millis(700) {
        let asked = Instant::now();
        assert_eq!(c.get(key(served)).unwrap(), None);
        assert!(asked.elapsed() < Duration::from_millis(500));
        served += 1;
    }
    let by_700ms = replies.load(Ordering::Relaxed);
    assert!(served >= 10, "honest client served {served} GETs");
    assert!(
        (200..=300).contains(&by_700ms),
        "{by_700ms} replies after 0.7 s"
    );
    assert!(node.refusals().get(Refusal::Throttled) > 0);
    // Nothing read is dropped: the rest is answered at the rate.
    wait_until(Duration::from_secs(6), "all 400 answered", || {
        replies.load(Ordering::Relaxed) == 400
    });
    assert!(
        start.elapsed() >= Duration::from_millis(1800),
        "{:?}",
        start.elapsed()
    );
    reader.join().unwrap();
}

#[test]
fn dials_to_a_peer_that_hangs_up_back_off() {
    // A "peer" that accepts and closes at once, as the only bootstrap contact of a joining node
    // whose requests time out after 20 ms: without backoff it would be dialled ~15 times in 3 s.
    let listener = TcpListener::bind(SocketAddr::new(next_loopback_ip(), 0)).unwrap();
    let dead = listener.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    std::thread::spawn({
        let accepts = accepts.clone();
        move || {
            for s in listener.incoming() {
                accepts.fetch_add(1, Ordering::Relaxed);
                drop(s);
            }
        }
    });
    let mut cfg = loopback_config(vec![dead]);
    cfg.node.request_timeout_ms = 20;
    let node = spawn(&cfg);
    std::thread::sleep(Duration::from_secs(3));
    let dials = accepts.load(Ordering::Relaxed);
    // 250, 500, 1000, 2000 ms apart: dials at 0, 0.25, 0.75 and 1.75 s.
    assert!((2..=5).contains(&dials), "{dials} dials in 3 s");
    assert!(node.refusals().get(Refusal::DialBackoff) > 0);
}
