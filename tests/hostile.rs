//! Hostile-peer tests (issue 10, item 6), on real TCP over loopback: a ring of 16 honest nodes
//! holding 300 values, and a lying participant written here that speaks our P2P protocol from a
//! loopback address of its own. Each test is one attack and asserts what honest clients see
//! through the API ports. The counts are printed (`--nocapture`) for the notes.
//!
//! The liar: plain std sockets bound to its own IP before connecting (socket2), so that its HELLO
//! comes from the address it names; it may take the 8 ids its IP is entitled to
//! (`Id::of_ip_slot(ip, slot)`, slot < 8) but picks nothing else. Its listeners and the
//! connections it opens all answer through [`serve`], whose policy the test sets: silent (a black
//! hole), friendly (answers probes and hand-offs, so a node that wrongly took it in would keep
//! it), forging (answers every STORAGE GET with a forged value).
//!
//! Each test's nodes and liars have addresses of their own (127.78.T.n and 127.66.T.n), so a
//! test meets the same ring whichever tests ran before it. A test marked `#[ignore]` is an attack
//! that succeeds on the current code (the reason says by how much): run it with
//! `--include-ignored`. The whole file takes about 12 s in release (30 s with the ignored ones).

use bytes::{Bytes, BytesMut};
use socket2::{Domain, Socket, Type};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use voidphone_dht::client::{self, ApiClient, NodeInfo};
use voidphone_dht::config::{Config, ReadQuorum};
use voidphone_dht::id::{Id, Key, in_open};
use voidphone_dht::msg::{COPY_FLAG, FailureReason, Frame, Peer, PeerMsg};
use voidphone_dht::reactor::RunningNode;
use voidphone_dht::reactor::hub::Hub;
use voidphone_dht::testnet;
use voidphone_dht::wire::api::{ApiReply, ApiRequest};
use voidphone_dht::wire::p2p::decode_frame;

const NODES: usize = 16;
const VALUES: usize = 300;
/// `id_slots_per_ip` (default): the ids one IP may hold.
const SLOTS: u8 = 8;
/// `replication_max` (default).
const REPLICATION_MAX: usize = 8;
/// The replication the 300 values are PUT with (the hint is clamped to 3 ..= 8 anyway).
const REPLICATION: usize = 3;
/// `storage_bytes_max` and `storage_share_per_peer` (defaults).
const STORAGE_BYTES_MAX: u64 = 64 << 20;
const STORAGE_SHARE_PER_PEER: f64 = 0.1;
/// `clock_skew_max_ms` (default).
const CLOCK_SKEW_MAX_MS: u64 = 60_000;
/// `repair_interval_ms` in `testnet::loopback_config`.
const REPAIR_INTERVAL_MS: u64 = 1000;
const FRAME_BYTES_MAX: usize = 1 << 20;
/// Client part of a node's request ids (`chord::context::Part::Clients`): id = n << 2 | 1.
const PART_CLIENTS: u64 = 1;

// ---------------------------------------------------------------------------------------------
// The honest ring
// ---------------------------------------------------------------------------------------------

struct Ring {
    nodes: Vec<RunningNode>,
    /// The nodes in id order.
    peers: Vec<Peer>,
    keys: Vec<Key>,
    values: Vec<Bytes>,
}

/// 16 nodes on 2 threads (as `testnet::start_shared`), joined, with 300 values PUT through their
/// API ports (key i through node i mod 16) and read back. Test `test` puts its nodes on
/// 127.78.`test`.1-16 so that every test's ring is the same whichever tests run before it.
fn ring(test: u8, seed: u64) -> Ring {
    ring_with(test, seed, |_| {})
}

fn ring_with(test: u8, seed: u64, tweak: impl Fn(&mut Config)) -> Ring {
    let t = Instant::now();
    let config = |i: usize, bootstrap: Vec<SocketAddr>| {
        let mut cfg = testnet::loopback_config(bootstrap);
        cfg.reactor.p2p_address = SocketAddr::from(([127, 78, test, i as u8 + 1], 0));
        tweak(&mut cfg);
        cfg
    };
    let mut hubs = [Hub::new().expect("hub"), Hub::new().expect("hub")];
    let first = hubs[0].bind(&config(0, Vec::new()), seed).expect("bind");
    for i in 1..NODES {
        hubs[i % 2]
            .bind(&config(i, vec![first]), seed + i as u64)
            .expect("bind");
    }
    let nodes: Vec<RunningNode> = hubs
        .into_iter()
        .flat_map(|h| h.spawn().expect("hub runs"))
        .collect();
    testnet::wait_for_ring(&nodes, Duration::from_secs(20)).expect("ring forms");
    let formed = t.elapsed();
    let mut peers: Vec<Peer> = nodes
        .iter()
        .map(|n| Peer {
            id: n.id,
            addr: n.p2p,
        })
        .collect();
    peers.sort();
    let keys: Vec<Key> = (0..VALUES)
        .map(|i| Id::hash(format!("hostile {seed} key {i}").as_bytes()))
        .collect();
    let values: Vec<Bytes> = (0..VALUES)
        .map(|i| Bytes::from(format!("honest value {i} of ring {seed}")))
        .collect();
    let mut clients: Vec<ApiClient> = nodes.iter().map(|n| api_client(n.api)).collect();
    for i in 0..VALUES {
        clients[i % NODES]
            .put(keys[i], &values[i], 3600, REPLICATION as u8)
            .expect("PUT");
    }
    let ring = Ring {
        nodes,
        peers,
        keys,
        values,
    };
    let mut last = Tally::default();
    let stored = poll(Duration::from_secs(10), || {
        last = ring.tally(ring.nodes[0].api, &ring.keys, &ring.values);
        last.right == VALUES
    });
    assert!(stored, "the 300 values were not all readable: {last:?}");
    // Attacks start from a settled ring: every node's successor list full.
    let settled = poll(Duration::from_secs(10), || {
        ring.peers
            .iter()
            .all(|p| info(p.addr).succs.len() == REPLICATION_MAX)
    });
    assert!(settled, "successor lists did not fill");
    eprintln!(
        "ring {seed}: 16 nodes formed in {:.2?}; 300 values stored and read back, successor \
         lists full, {:.2?} in all",
        formed,
        t.elapsed()
    );
    ring
}

impl Ring {
    /// Index (in `peers`) of the node responsible for `key`: the first at or after it.
    fn owner(&self, key: &Key) -> usize {
        self.peers.iter().position(|p| p.id >= *key).unwrap_or(0)
    }

    /// The key's first `r` holders: its responsible node and the next `r − 1`.
    fn holders(&self, key: &Key, r: usize) -> Vec<Peer> {
        let o = self.owner(key);
        (0..r).map(|i| self.peers[(o + i) % NODES]).collect()
    }

    /// The node preceding `p` on the ring.
    fn pred_of(&self, i: usize) -> Peer {
        self.peers[(i + NODES - 1) % NODES]
    }

    fn node(&self, p: &Peer) -> &RunningNode {
        self.nodes.iter().find(|n| n.p2p == p.addr).expect("a node")
    }

    fn api(&self, p: &Peer) -> SocketAddr {
        self.node(p).api
    }

    /// GETs `keys` through `api` (pipelined) and compares with `want`.
    fn tally(&self, api: SocketAddr, keys: &[Key], want: &[Bytes]) -> Tally {
        let (got, _) = get_all(api, keys);
        let mut t = Tally::default();
        for ((k, g), w) in keys.iter().zip(got).zip(want) {
            t.count(*k, g.as_ref(), w);
        }
        t
    }

    /// Bytes stored on every node (INFO), summed.
    fn bytes_stored(&self) -> Vec<u64> {
        self.peers
            .iter()
            .map(|p| info(p.addr).bytes_stored)
            .collect()
    }

    /// Keys generated from `tag` that `pick` selects, `n` of them.
    fn keys_where(&self, tag: &str, n: usize, pick: impl Fn(&Key) -> bool) -> Vec<Key> {
        (0u64..)
            .map(|i| Id::hash(format!("{tag} {i}").as_bytes()))
            .filter(|k| pick(k))
            .take(n)
            .collect()
    }
}

#[derive(Debug, Default)]
struct Tally {
    right: usize,
    /// A value, but not the one wanted (an older one, or forged).
    wrong: usize,
    /// Of those, the liar's forged values.
    forged: usize,
    /// DHT FAILURE (or no answer).
    failed: usize,
    wrong_keys: Vec<Key>,
    failed_keys: Vec<Key>,
}

impl Tally {
    fn count(&mut self, key: Key, got: Option<&Bytes>, want: &Bytes) {
        match got {
            Some(v) if v == want => self.right += 1,
            Some(v) => {
                self.wrong += 1;
                self.forged += usize::from(*v == forged(&key));
                self.wrong_keys.push(key);
            }
            None => {
                self.failed += 1;
                self.failed_keys.push(key);
            }
        }
    }

    fn total(&self) -> usize {
        self.right + self.wrong + self.failed
    }

    fn line(&self) -> String {
        format!(
            "{} right, {} wrong ({} forged), {} failed of {}",
            self.right,
            self.wrong,
            self.forged,
            self.failed,
            self.total()
        )
    }
}

/// How many keys, and the first few.
fn few(keys: &[Key]) -> String {
    let shown: Vec<String> = keys.iter().take(5).map(|k| k.short()).collect();
    format!("{} keys ({}, ...)", keys.len(), shown.join(", "))
}

fn api_client(api: SocketAddr) -> ApiClient {
    ApiClient::connect(api).expect("API connects")
}

/// GETs every key through `api` on one connection, pipelined; the answers in `keys`' order (None:
/// DHT FAILURE) and the answers' latencies, sorted (from the moment all GETs were sent).
fn get_all(api: SocketAddr, keys: &[Key]) -> (Vec<Option<Bytes>>, Vec<Duration>) {
    let mut c = api_client(api);
    let mut at: BTreeMap<Key, Vec<usize>> = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        at.entry(*k).or_default().push(i);
    }
    let t = Instant::now();
    for k in keys {
        c.send(&ApiRequest::Get { key: *k }).expect("GET sent");
    }
    let mut out = vec![None; keys.len()];
    let mut latencies = Vec::with_capacity(keys.len());
    for _ in 0..keys.len() {
        let (key, value) = match c.recv().expect("GET answered") {
            ApiReply::Success { key, value } => (key, Some(value)),
            ApiReply::Failure { key } => (key, None),
        };
        latencies.push(t.elapsed());
        let slot = at.get_mut(&key).and_then(|v| v.pop()).expect("a key asked");
        out[slot] = value;
    }
    (out, latencies)
}

/// INFO of the node at `p2p`.
fn info(p2p: SocketAddr) -> NodeInfo {
    client::node_info(p2p, Duration::from_secs(2)).expect("INFO")
}

/// STORAGE GET of each key at the node at `p2p` (what it holds itself, owner or replica). Three
/// at a time: a node drops answers that do not fit its send buffer (4 frames of 70 KB).
fn held(p2p: SocketAddr, keys: &[Key]) -> Vec<Option<Bytes>> {
    let mut s = TcpStream::connect(p2p).expect("P2P connects");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = vec![None; keys.len()];
    let mut buf = BytesMut::new();
    for (batch, chunk) in keys.chunks(3).enumerate() {
        let mut out = BytesMut::new();
        for (j, k) in chunk.iter().enumerate() {
            let request = (batch * 3 + j) as u64 + 1;
            Frame::new(request, PeerMsg::StorageGet { key: *k }).encode(&mut out);
        }
        s.write_all(&out).expect("STORAGE GETs sent");
        let mut answered = 0;
        while answered < chunk.len() {
            match decode_frame(&mut buf, FRAME_BYTES_MAX).expect("frames decode") {
                Some(f) => {
                    answered += 1;
                    if let PeerMsg::StorageGetSuccess { value, .. } = f.msg {
                        got[(f.request - 1) as usize] = Some(value);
                    }
                }
                None => {
                    let mut bytes = [0u8; 64 * 1024];
                    let n = s.read(&mut bytes).expect("STORAGE GETs answered");
                    assert!(n > 0, "node closed the probe connection");
                    buf.extend_from_slice(&bytes[..n]);
                }
            }
        }
    }
    got
}

/// Polls `cond` every 20 ms until it holds (true) or `within` has passed (false).
fn poll(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// `x ∈ [a, b)` clockwise: a node with id `x` would come at or after key `a` and before `b`.
fn at_or_between(x: &Id, a: &Id, b: &Id) -> bool {
    x == a || in_open(x, a, b)
}

// ---------------------------------------------------------------------------------------------
// The liar
// ---------------------------------------------------------------------------------------------

/// Liar `n` of test `test`: 127.66.`test`.`n`, never an address of the ring's nodes.
fn liar_ip(test: u8, n: u8) -> IpAddr {
    IpAddr::from([127, 66, test, n])
}

/// The ids an IP may hold.
fn slot_ids(ip: IpAddr) -> Vec<Id> {
    (0..SLOTS).map(|s| Id::of_ip_slot(ip, s)).collect()
}

fn forged(key: &Key) -> Bytes {
    Bytes::from(format!("FORGED by the liar for {}", key.short()))
}

#[derive(Default)]
struct LiarState {
    stop: AtomicBool,
    /// Answer STORAGE GET with a forged value (at version u64::MAX, to win a majority's ties).
    forge: AtomicBool,
    /// Answer PING, PREDECESSOR GET and STORAGE PUT as a willing node would.
    friendly: AtomicBool,
    /// Answer PEER FIND with a PEER FOUND naming the liar (its slot closest after the target).
    lie_found: AtomicBool,
    /// On each client request a node sends it, answer the node's neighbouring client request ids
    /// too (STORAGE FAILURE "refused", PEER FOUND naming the liar, PEER FOUND naming a node that
    /// does not exist): answers are matched by request id, and ids are handed out in order.
    spray: AtomicBool,
    /// Who the liar is, for its lies: its slot ids at its advertised addresses.
    me: Mutex<Vec<Peer>>,
    frames_in: AtomicU64,
    storage_gets_in: AtomicU64,
    forged_out: AtomicU64,
    finds_in: AtomicU64,
    found_lies_out: AtomicU64,
    sprayed_out: AtomicU64,
    /// STORAGE PUTs received (hand-offs, copies, writes made to us).
    storage_puts_in: AtomicU64,
    /// Answers to our own requests.
    put_ok: AtomicU64,
    put_refused: AtomicU64,
    put_other_failure: AtomicU64,
    pongs: AtomicU64,
    keys_accepted: Mutex<Vec<Key>>,
    /// The highest request counter (request id >> 2) seen in a node's request to us.
    request_counter: AtomicU64,
}

struct Liar {
    ip: IpAddr,
    st: Arc<LiarState>,
    listeners: Vec<SocketAddr>,
}

/// One connection the liar opened; frames may be written from several threads.
#[derive(Clone)]
struct Conn {
    w: Arc<Mutex<TcpStream>>,
}

impl Liar {
    fn new(ip: IpAddr) -> Liar {
        let mut liar = Liar {
            ip,
            st: Arc::new(LiarState::default()),
            listeners: Vec::new(),
        };
        liar.listen();
        liar
    }

    /// The liar's first advertised address.
    fn addr(&self) -> SocketAddr {
        self.listeners[0]
    }

    /// Another listener on the liar's IP; its address.
    fn listen(&mut self) -> SocketAddr {
        let l = TcpListener::bind(SocketAddr::new(self.ip, 0)).expect("liar listens");
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let st = self.st.clone();
        std::thread::spawn(move || {
            while !st.stop.load(Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let w = Arc::new(Mutex::new(s.try_clone().unwrap()));
                        let st = st.clone();
                        std::thread::spawn(move || serve(s, w, st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        self.listeners.push(addr);
        addr
    }

    /// The liar as a node it may legitimately be: slot `slot` of its IP, at `addr`.
    fn as_slot(&self, slot: u8, addr: SocketAddr) -> Peer {
        let me = Peer {
            id: Id::of_ip_slot(self.ip, slot),
            addr,
        };
        let mut known = self.st.me.lock().unwrap();
        known.retain(|p| p.id != me.id);
        known.push(me);
        me
    }

    /// A connection to `to` from the liar's own IP, opened with HELLO naming `hello` if given.
    fn dial(&self, to: SocketAddr, hello: Option<Peer>) -> Conn {
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        sock.bind(&SocketAddr::new(self.ip, 0).into())
            .expect("bind the liar's IP");
        sock.connect_timeout(&to.into(), Duration::from_secs(5))
            .expect("liar connects");
        let s: TcpStream = sock.into();
        s.set_nodelay(true).unwrap();
        let conn = Conn {
            w: Arc::new(Mutex::new(s.try_clone().unwrap())),
        };
        let (w, st) = (conn.w.clone(), self.st.clone());
        std::thread::spawn(move || serve(s, w, st));
        if let Some(node) = hello {
            conn.send(&[Frame::new(0, PeerMsg::Hello { node })]);
        }
        conn
    }

    /// 8 connections to `target`, each saying HELLO as one of the liar's slots at an address of
    /// its own, and 125 PREDECESSOR SETs on each: its own peer, made-up ids at its address, made-up
    /// ids at made-up addresses, other IPs' ids at their addresses, its other slots at its address.
    fn notify_flood(&mut self, target: SocketAddr) -> Flood {
        let mut conns = Vec::new();
        for slot in 0..SLOTS {
            let addr = if slot == 0 {
                self.addr()
            } else {
                self.listen()
            };
            let me = self.as_slot(slot, addr);
            let conn = self.dial(target, Some(me));
            let frames: Vec<Frame> = (0..125u32)
                .map(|j| {
                    let made_up = Id::hash(format!("made up {slot} {j}").as_bytes());
                    let elsewhere = IpAddr::from([10, slot, (j >> 8) as u8, j as u8]);
                    let node = match j % 5 {
                        0 => me,
                        1 => Peer {
                            id: made_up,
                            addr: me.addr,
                        },
                        2 => Peer {
                            id: made_up,
                            addr: SocketAddr::new(elsewhere, 4000 + j as u16),
                        },
                        3 => Peer {
                            id: Id::of_ip_slot(elsewhere, 0),
                            addr: SocketAddr::new(elsewhere, 4000),
                        },
                        _ => Peer {
                            id: Id::of_ip_slot(self.ip, (j % SLOTS as u32) as u8),
                            addr: me.addr,
                        },
                    };
                    Frame::new(0, PeerMsg::PredecessorSet { node })
                })
                .collect();
            conns.push((conn, frames));
        }
        let flood = Flood { conns };
        self.renotify(&flood);
        flood
    }

    /// Sends the flood's PREDECESSOR SETs (again) and waits until the node has read them: frames
    /// on one connection are handled in order, so a PING after them is answered once they were.
    fn renotify(&self, flood: &Flood) {
        let pongs = self.st.pongs.load(Relaxed);
        for (conn, frames) in &flood.conns {
            conn.send(frames);
            conn.send(&[Frame::new(7, PeerMsg::Ping)]);
        }
        let read = poll(Duration::from_secs(5), || {
            self.st.pongs.load(Relaxed) >= pongs + flood.conns.len() as u64
        });
        assert!(read, "the node did not read the PREDECESSOR SETs");
    }
}

/// The liar's PREDECESSOR SET flood: its connections and what each sends.
struct Flood {
    conns: Vec<(Conn, Vec<Frame>)>,
}

impl Flood {
    fn frames(&self) -> usize {
        self.conns.iter().map(|(_, f)| f.len()).sum()
    }
}

impl Drop for Liar {
    fn drop(&mut self) {
        self.st.stop.store(true, Relaxed);
    }
}

impl Conn {
    /// Writes the frames, in batches of about 1 MB (so that answers can go out in between).
    fn send(&self, frames: &[Frame]) {
        let mut out = BytesMut::new();
        for (i, f) in frames.iter().enumerate() {
            f.encode(&mut out);
            if out.len() >= 1 << 20 || i + 1 == frames.len() {
                let mut w = self.w.lock().unwrap();
                // A node may close a liar's connection; the test then sees what that did.
                let _ = w.write_all(&out);
                out.clear();
            }
        }
    }
}

/// Reads a connection of the liar's and answers as its policy says.
fn serve(mut r: TcpStream, w: Arc<Mutex<TcpStream>>, st: Arc<LiarState>) {
    r.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = BytesMut::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut last_spray: Option<Instant> = None;
    while !st.stop.load(Relaxed) {
        match r.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => return,
        }
        let mut answers = BytesMut::new();
        loop {
            let frame = match decode_frame(&mut buf, FRAME_BYTES_MAX) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => return,
            };
            st.frames_in.fetch_add(1, Relaxed);
            // At most one spray per 10 ms: about 19,000 frames a second, under the
            // `peer_msgs_per_s` a node grants one IP (20,000).
            let due = last_spray.is_none_or(|t| t.elapsed() >= Duration::from_millis(10));
            if st.spray.load(Relaxed) && due && spray(&st, &frame, &mut answers) {
                last_spray = Some(Instant::now());
            }
            if let Some(a) = answer(&st, frame) {
                a.encode(&mut answers);
            }
        }
        if !answers.is_empty() && w.lock().unwrap().write_all(&answers).is_err() {
            return;
        }
    }
}

/// The liar's slot closest at or after `target`.
fn closest_liar(st: &LiarState, target: &Id) -> Option<Peer> {
    let me = st.me.lock().unwrap();
    me.iter().min_by_key(|p| target.distance_to(&p.id)).copied()
}

/// A peer that names itself validly (slot 0 of an IP nobody uses) but does not exist.
fn nowhere() -> Peer {
    let ip = IpAddr::from([127, 66, 255, 254]);
    Peer {
        id: Id::of_ip_slot(ip, 0),
        addr: SocketAddr::new(ip, 9),
    }
}

/// Answers for the client request ids around `frame`'s (a node's client request to the liar).
fn spray(st: &LiarState, frame: &Frame, out: &mut BytesMut) -> bool {
    let key = match &frame.msg {
        PeerMsg::StorageGet { key } => *key,
        PeerMsg::PeerFind { target, .. } => *target,
        _ => return false,
    };
    if frame.request & 3 != PART_CLIENTS {
        return false;
    }
    let n = frame.request >> 2;
    let me = closest_liar(st, &key).unwrap_or_else(nowhere);
    for m in n.saturating_sub(32)..=n + 160 {
        if m == n {
            continue;
        }
        let msg = match m % 3 {
            0 => PeerMsg::StorageFailure {
                key,
                reason: FailureReason::Refused,
            },
            1 => PeerMsg::PeerFound {
                target: key,
                hops: 1,
                nodes: vec![me],
            },
            _ => PeerMsg::PeerFound {
                target: key,
                hops: 1,
                nodes: vec![nowhere()],
            },
        };
        Frame::new(m << 2 | PART_CLIENTS, msg).encode(out);
        st.sprayed_out.fetch_add(1, Relaxed);
    }
    true
}

fn answer(st: &LiarState, Frame { request, msg }: Frame) -> Option<Frame> {
    let is_request = matches!(
        msg,
        PeerMsg::StorageGet { .. }
            | PeerMsg::StoragePut { .. }
            | PeerMsg::PeerFind { .. }
            | PeerMsg::PredecessorGet
            | PeerMsg::PredecessorsGet
            | PeerMsg::Ping
            | PeerMsg::Sync { .. }
    );
    if is_request && request != 0 {
        st.request_counter.fetch_max(request >> 2, Relaxed);
    }
    let friendly = st.friendly.load(Relaxed);
    let reply = match msg {
        PeerMsg::StorageGet { key } => {
            st.storage_gets_in.fetch_add(1, Relaxed);
            if !st.forge.load(Relaxed) {
                return None;
            }
            st.forged_out.fetch_add(1, Relaxed);
            PeerMsg::StorageGetSuccess {
                ttl_ms: 3_600_000,
                replication: REPLICATION as u8,
                version: u64::MAX,
                key,
                value: forged(&key),
            }
        }
        PeerMsg::PeerFind { target, .. } => {
            st.finds_in.fetch_add(1, Relaxed);
            if !st.lie_found.load(Relaxed) {
                return None;
            }
            st.found_lies_out.fetch_add(1, Relaxed);
            PeerMsg::PeerFound {
                target,
                hops: 1,
                nodes: vec![closest_liar(st, &target).unwrap_or_else(nowhere)],
            }
        }
        PeerMsg::StoragePut { key, value, .. } => {
            st.storage_puts_in.fetch_add(1, Relaxed);
            if !friendly {
                return None;
            }
            PeerMsg::StoragePutSuccess {
                key,
                value_hash: Id::hash(&value),
            }
        }
        PeerMsg::Ping if friendly => PeerMsg::Pong,
        PeerMsg::PredecessorsGet if friendly => PeerMsg::Predecessors { preds: Vec::new() },
        PeerMsg::PredecessorGet if friendly => PeerMsg::PredecessorReply {
            pred: None,
            succs: Vec::new(),
        },
        PeerMsg::Pong => {
            st.pongs.fetch_add(1, Relaxed);
            return None;
        }
        PeerMsg::StoragePutSuccess { key, .. } => {
            st.put_ok.fetch_add(1, Relaxed);
            st.keys_accepted.lock().unwrap().push(key);
            return None;
        }
        PeerMsg::StorageFailure { reason, .. } => {
            match reason {
                FailureReason::Refused => st.put_refused.fetch_add(1, Relaxed),
                _ => st.put_other_failure.fetch_add(1, Relaxed),
            };
            return None;
        }
        _ => return None,
    };
    if request == 0 {
        return None;
    }
    Some(Frame::new(request, reply))
}

impl LiarState {
    fn answers_to_puts(&self) -> u64 {
        self.put_ok.load(Relaxed)
            + self.put_refused.load(Relaxed)
            + self.put_other_failure.load(Relaxed)
    }

    fn refused(&self) -> u64 {
        self.put_refused.load(Relaxed) + self.put_other_failure.load(Relaxed)
    }
}

fn copy_put(key: Key, value: Bytes, version: u64) -> PeerMsg {
    PeerMsg::StoragePut {
        ttl_ms: 12 * 3_600_000,
        replication: COPY_FLAG | REPLICATION as u8,
        version,
        key,
        value,
    }
}

/// Does any node list one of `ids`, or an address on one of `ips`, as predecessor or successor?
/// (INFO of every node.)
fn ring_lists_any(ring: &Ring, ids: &BTreeSet<Id>, ips: &BTreeSet<IpAddr>) -> Vec<String> {
    let mut found = Vec::new();
    for p in &ring.peers {
        let i = info(p.addr);
        for (what, q) in i
            .pred
            .iter()
            .map(|q| ("predecessor", q))
            .chain(i.succs.iter().map(|q| ("successor", q)))
        {
            if ids.contains(&q.id) || ips.contains(&q.addr.ip()) {
                found.push(format!(
                    "{} lists {} ({}) as {what}",
                    p.addr,
                    q.id.short(),
                    q.addr
                ));
            }
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// 1. An id that does not match its address
// ---------------------------------------------------------------------------------------------

/// A liar claims ids equal to chosen keys (so that it would be responsible for them) in HELLO,
/// PREDECESSOR SET, SUCCESSOR HINT and LEAVE, at its own address or at another IP's; and another
/// IP's id at that IP's address, spoken from its own. The liars answer probes and hand-offs and
/// forge every value asked of them. No node may list a liar, none may hand it values, and all 300
/// GETs through the attacked keys' owners (and node 0) stay right.
#[test]
fn id_not_matching_its_address_is_not_adopted() {
    let ring = ring(1, 101);
    let t = Instant::now();
    let targets: Vec<Key> = ring.keys[..4].to_vec();
    let mut claimed: BTreeSet<Id> = targets.iter().copied().collect();
    let mut ips = BTreeSet::new();
    let mut liars = Vec::new();
    let mut attacks: Vec<(Conn, Vec<Frame>)> = Vec::new();
    let mut n = 0;
    let mut next_ip = || {
        n += 1;
        liar_ip(1, n)
    };
    for key in &targets {
        let o = ring.owner(key);
        let (owner, pred) = (ring.peers[o], ring.pred_of(o));
        let liar = |ip| {
            let l = Liar::new(ip);
            l.st.friendly.store(true, Relaxed);
            l.st.forge.store(true, Relaxed);
            l.st.lie_found.store(true, Relaxed);
            l
        };
        // (a) HELLO and PREDECESSOR SET as the key, at the liar's own address.
        let a = liar(next_ip());
        let a_as_key = Peer {
            id: *key,
            addr: a.addr(),
        };
        a.st.me.lock().unwrap().push(a_as_key);
        let conn = a.dial(owner.addr, Some(a_as_key));
        let notify = PeerMsg::PredecessorSet { node: a_as_key };
        attacks.push((conn, vec![Frame::new(0, notify)]));
        // (b) Another IP's id at that IP's address, and the key at that address, spoken from the
        // liar's IP: the HELLO does not come from the IP it advertises.
        let b = liar(next_ip());
        let other_ip = next_ip();
        let other = Peer {
            id: Id::of_ip_slot(other_ip, 0),
            addr: SocketAddr::new(other_ip, b.addr().port()),
        };
        let other_as_key = Peer {
            id: *key,
            addr: other.addr,
        };
        claimed.insert(other.id);
        ips.insert(other_ip);
        let other_owner = ring.peers[ring.owner(&other.id)];
        let conn = b.dial(other_owner.addr, Some(other));
        let notify = PeerMsg::PredecessorSet { node: other };
        attacks.push((conn, vec![Frame::new(0, notify)]));
        let conn = b.dial(owner.addr, Some(other_as_key));
        let notify = PeerMsg::PredecessorSet { node: other_as_key };
        attacks.push((conn, vec![Frame::new(0, notify)]));
        // (c) A valid HELLO (slot 0 of its IP), then claims as the key: PREDECESSOR SET to the
        // owner, LEAVE "from" the owner's predecessor naming the liar-as-key as the owner's new
        // predecessor, SUCCESSOR HINT to the owner's predecessor.
        let c = liar(next_ip());
        let c_valid = c.as_slot(0, c.addr());
        let c_as_key = Peer {
            id: *key,
            addr: c.addr(),
        };
        let conn = c.dial(owner.addr, Some(c_valid));
        let leave = voidphone_dht::msg::Departure {
            node: pred,
            pred: Some(c_as_key),
            succs: vec![owner],
        };
        attacks.push((
            conn,
            vec![
                Frame::new(0, PeerMsg::PredecessorSet { node: c_as_key }),
                Frame::new(0, PeerMsg::Leave(Box::new(leave))),
            ],
        ));
        let conn = c.dial(pred.addr, Some(c_valid));
        let hint = PeerMsg::SuccessorHint { node: c_as_key };
        attacks.push((conn, vec![Frame::new(0, hint)]));
        for l in [a, b, c] {
            ips.insert(l.ip);
            liars.push(l);
        }
    }
    // The claims go out 10 times, 200 ms apart (a stabilize period), while every node's pointers
    // are read: no node may list a claimed id or any liar address.
    let mut violations = Vec::new();
    let mut checks = 0;
    for _ in 0..10 {
        for (conn, frames) in &attacks {
            conn.send(frames);
        }
        let deadline = Instant::now() + Duration::from_millis(200);
        while Instant::now() < deadline {
            violations.extend(ring_lists_any(&ring, &claimed, &ips));
            checks += 1;
            std::thread::sleep(Duration::from_millis(40));
        }
    }
    // Every claim was read: a PING sent after them on each connection is answered.
    for (conn, _) in &attacks {
        conn.send(&[Frame::new(7, PeerMsg::Ping)]);
    }
    let pongs = || liars.iter().map(|l| l.st.pongs.load(Relaxed)).sum::<u64>();
    let read = poll(Duration::from_secs(5), || pongs() == attacks.len() as u64);
    assert!(
        read,
        "{} of {} liar connections answered a PING",
        pongs(),
        attacks.len()
    );
    let mut tally = Tally::default();
    let mut apis: Vec<SocketAddr> = targets
        .iter()
        .map(|k| ring.api(&ring.peers[ring.owner(k)]))
        .collect();
    apis.push(ring.nodes[0].api);
    for api in apis {
        let t = ring.tally(api, &ring.keys, &ring.values);
        tally.right += t.right;
        tally.wrong += t.wrong;
        tally.forged += t.forged;
        tally.failed += t.failed;
    }
    let sum = |f: fn(&LiarState) -> &AtomicU64| -> u64 {
        liars.iter().map(|l| f(&l.st).load(Relaxed)).sum()
    };
    let handed = sum(|s| &s.storage_puts_in);
    eprintln!(
        "attack 1 (id not matching its address): {} liar connections, claims sent 10 times; \
         {checks} reads of all 16 nodes' pointers: {} listings of a liar; values handed to a \
         liar: {handed}; STORAGE GETs to a liar: {}, PEER FINDs: {} (forged answers {}); GETs of \
         the 300 keys through the 4 attacked owners and node 0: {}; {:.2?}",
        attacks.len(),
        violations.len(),
        sum(|s| &s.storage_gets_in),
        sum(|s| &s.finds_in),
        sum(|s| &s.forged_out) + sum(|s| &s.found_lies_out),
        tally.line(),
        t.elapsed()
    );
    assert!(
        violations.is_empty(),
        "a forged identity was adopted: {violations:?}"
    );
    assert_eq!(handed, 0, "values were handed to a liar");
    assert_eq!(tally.right, tally.total(), "GETs: {}", tally.line());
}

// ---------------------------------------------------------------------------------------------
// 2. Routing-cache poisoning, lying lookups, answers for request ids the liar guesses
// ---------------------------------------------------------------------------------------------

/// Could the liar, joined at one of its slots, be among `key`'s first `r` holders?
fn liar_could_hold(ring: &Ring, liar: IpAddr, key: &Key, r: usize) -> bool {
    let last = ring.holders(key, r)[r - 1];
    slot_ids(liar)
        .iter()
        .any(|s| at_or_between(s, key, &last.id))
}

/// GETs of the 300 keys through `api`, split by whether the liar could hold the key (as
/// responsible node or replica: forged answers must stay within those).
struct Split {
    all: Tally,
    /// Keys the liar could not hold at any of its slots.
    outside: Tally,
    /// Forged answers for keys the liar could not be responsible for (only a replica).
    forged_not_primary: usize,
    /// Latencies of the answers, sorted.
    latencies: Vec<Duration>,
    took: Duration,
}

fn gets_split(ring: &Ring, api: SocketAddr, liar: IpAddr) -> Split {
    let t = Instant::now();
    let (got, latencies) = get_all(api, &ring.keys);
    let took = t.elapsed();
    let mut s = Split {
        all: Tally::default(),
        outside: Tally::default(),
        forged_not_primary: 0,
        latencies,
        took,
    };
    for ((k, g), w) in ring.keys.iter().zip(&got).zip(&ring.values) {
        s.all.count(*k, g.as_ref(), w);
        if !liar_could_hold(ring, liar, k, REPLICATION) {
            s.outside.count(*k, g.as_ref(), w);
        }
    }
    s.forged_not_primary = s
        .all
        .wrong_keys
        .iter()
        .filter(|k| !liar_could_hold(ring, liar, k, 1))
        .count();
    s
}

impl Split {
    fn line(&self) -> String {
        format!(
            "{} in {:.2?} (latency p50 {:.2?}, p99 {:.2?}, {} above 100 ms); for the {} keys the \
             liar could not hold: {}; forged for keys it could hold only as a replica: {}",
            self.all.line(),
            self.took,
            self.latencies[self.latencies.len() / 2],
            self.latencies[self.latencies.len() * 99 / 100],
            self.latencies
                .iter()
                .filter(|l| **l > Duration::from_millis(100))
                .count(),
            self.outside.total(),
            self.outside.line(),
            self.forged_not_primary
        )
    }
}

/// The node whose GETs the liar's slots can reach most: the one with the most of them outside
/// the stretch its successor list covers (there it guesses a key's holders from its routing
/// cache).
fn cache_target(ring: &Ring, liar: IpAddr) -> Peer {
    let slots = slot_ids(liar);
    let outside = |i: usize| {
        let (me, last) = (
            ring.peers[i].id,
            ring.peers[(i + REPLICATION_MAX) % NODES].id,
        );
        slots
            .iter()
            .filter(|s| !(in_open(*s, &me, &last) || **s == last))
            .count()
    };
    let best = (0..NODES).max_by_key(|&i| (outside(i), NODES - i)).unwrap();
    ring.peers[best]
}

/// 1000 PREDECESSOR SETs to one node from one IP ([`Liar::notify_flood`]): the made-up and
/// misplaced ones must be dropped; the liar's own 8 slots it may name. Then 300 GETs through that
/// node while the liar swallows every request (a black hole): ≥ 99.9 % right. Then 300 while it
/// forges every STORAGE GET and answers every PEER FIND naming itself: no forged value for a key
/// it could not hold, ≥ 99.9 % right among those.
#[test]
fn routing_cache_poisoning() {
    let ring = ring(2, 102);
    let mut liar = Liar::new(liar_ip(2, 1));
    let target = cache_target(&ring, liar.ip);
    let t = Instant::now();
    let flood = liar.notify_flood(target.addr);
    let sent_in = t.elapsed();
    let api = ring.api(&target);
    let hole = gets_split(&ring, api, liar.ip);
    let swallowed = liar.st.storage_gets_in.load(Relaxed) + liar.st.finds_in.load(Relaxed);
    // A node forgets a peer that let its requests time out: the liar notifies it again.
    liar.renotify(&flood);
    liar.st.forge.store(true, Relaxed);
    liar.st.lie_found.store(true, Relaxed);
    let forging = gets_split(&ring, api, liar.ip);
    let info = info(target.addr);
    eprintln!(
        "attack 2a (routing-cache poisoning, read_quorum one): {} PREDECESSOR SETs over 8 \
         connections in {sent_in:.2?} (node's predecessor now {}); liar as black hole, 300 GETs \
         through the node: {}; {swallowed} requests swallowed; after {} more PREDECESSOR SETs, \
         liar forging: {}; {} forged STORAGE GET answers, {} lying PEER FOUNDs",
        flood.frames(),
        info.pred.map_or("none".into(), |p| p.addr.to_string()),
        hole.line(),
        flood.frames(),
        forging.line(),
        liar.st.forged_out.load(Relaxed),
        liar.st.found_lies_out.load(Relaxed),
    );
    assert!(
        hole.all.right * 1000 >= 999 * VALUES,
        "black hole: only {}",
        hole.all.line()
    );
    assert_eq!(
        forging.outside.wrong,
        0,
        "forged values for keys the liar cannot hold: {}",
        few(&forging.outside.wrong_keys)
    );
    assert!(
        forging.outside.right * 1000 >= 999 * forging.outside.total(),
        "forging liar: only {}",
        forging.outside.line()
    );
}

/// The same attack on a ring reading with `read_quorum = majority`: no GET may return a forged
/// value, and ≥ 99.9 % return the right one.
#[test]
fn routing_cache_poisoning_majority() {
    let ring = ring_with(3, 103, |cfg| cfg.node.read_quorum = ReadQuorum::Majority);
    let mut liar = Liar::new(liar_ip(3, 1));
    let target = cache_target(&ring, liar.ip);
    let flood = liar.notify_flood(target.addr);
    let sent = flood.frames();
    liar.st.forge.store(true, Relaxed);
    liar.st.lie_found.store(true, Relaxed);
    let api = ring.api(&target);
    let forging = gets_split(&ring, api, liar.ip);
    eprintln!(
        "attack 2a (routing-cache poisoning, read_quorum majority): {sent} PREDECESSOR SETs; \
         liar forging, 300 GETs through the node: {}; {} forged STORAGE GET answers, {} lying \
         PEER FOUNDs",
        forging.line(),
        liar.st.forged_out.load(Relaxed),
        liar.st.found_lies_out.load(Relaxed),
    );
    assert_eq!(
        forging.all.wrong,
        0,
        "majority reads returned forged values for {}",
        few(&forging.all.wrong_keys)
    );
    assert!(
        forging.all.right * 1000 >= 999 * VALUES,
        "only {}",
        forging.all.line()
    );
}

/// The liar gets into a node's routing cache as above, swallows what it is asked, and answers
/// every client request it receives also for the request ids around it (ids are handed out in
/// order; answers are matched by id): STORAGE FAILURE "refused", PEER FOUND naming itself, PEER
/// FOUND naming a node that does not exist, at about 19,000 frames a second. GETs through that
/// node for keys the liar could not hold must not fail or be forged (≥ 99.9 % right).
#[test]
fn answers_for_guessed_request_ids() {
    let ring = ring(4, 104);
    let mut liar = Liar::new(liar_ip(4, 1));
    let target = cache_target(&ring, liar.ip);
    let flood = liar.notify_flood(target.addr);
    let api = ring.api(&target);
    // Control: the same, but the liar only swallows what it is asked.
    let control = gets_split(&ring, api, liar.ip);
    let asked_control = liar.st.storage_gets_in.load(Relaxed) + liar.st.finds_in.load(Relaxed);
    liar.st.spray.store(true, Relaxed);
    let mut rounds = Vec::new();
    for _ in 0..3 {
        liar.renotify(&flood);
        rounds.push(gets_split(&ring, api, liar.ip));
    }
    let mut outside = Tally::default();
    let mut all = Tally::default();
    for r in &rounds {
        for (sum, t) in [(&mut outside, &r.outside), (&mut all, &r.all)] {
            sum.right += t.right;
            sum.wrong += t.wrong;
            sum.forged += t.forged;
            sum.failed += t.failed;
            sum.wrong_keys.extend(&t.wrong_keys);
        }
    }
    let asked = liar.st.storage_gets_in.load(Relaxed) + liar.st.finds_in.load(Relaxed);
    eprintln!(
        "attack 2b (answers for guessed request ids): control round (liar swallows, no spray): \
         {}; {asked_control} requests reached the liar; spraying: {} client requests reached \
         the liar, which sent {} answers for the ids around them; 3 × 300 GETs through the node: \
         {} (slowest {:.2?}, {} above 100 ms); for keys the liar could not hold: {}",
        control.line(),
        asked - asked_control,
        liar.st.sprayed_out.load(Relaxed),
        all.line(),
        rounds
            .iter()
            .filter_map(|r| r.latencies.last())
            .max()
            .copied()
            .unwrap_or_default(),
        rounds
            .iter()
            .flat_map(|r| &r.latencies)
            .filter(|l| **l > Duration::from_millis(100))
            .count(),
        outside.line(),
    );
    assert_eq!(
        control.all.right,
        VALUES,
        "control round: {}",
        control.all.line()
    );
    assert_eq!(
        outside.wrong,
        0,
        "forged values for keys the liar cannot hold: {}",
        few(&outside.wrong_keys)
    );
    assert!(
        outside.right * 1000 >= 999 * outside.total(),
        "only {}",
        outside.line()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Copies with a far-future version
// ---------------------------------------------------------------------------------------------

/// A liar (from test `test`'s addresses) with a slot just before the owner of at least `n` of the
/// ring's keys: placed to send copies of them (on the arc from the key to every holder). The
/// liar and those keys.
fn placed_liar(ring: &Ring, test: u8, n: usize) -> (Liar, Vec<Key>) {
    for i in 1..=250 {
        let ip = liar_ip(test, i);
        let slots = slot_ids(ip);
        let keys: Vec<Key> = ring
            .keys
            .iter()
            .filter(|k| {
                let owner = ring.peers[ring.owner(k)].id;
                slots.iter().any(|s| in_open(s, k, &owner))
            })
            .take(n)
            .copied()
            .collect();
        if keys.len() == n {
            return (Liar::new(ip), keys);
        }
    }
    panic!("no liar IP placed for {n} keys");
}

/// Sends `msg(key)` for each key to each node of `to(key)` from the liar (HELLO as its slot 0,
/// one connection per node) with request ids, and waits for the answers: (accepted, refused).
fn send_copies(
    ring: &Ring,
    liar: &Liar,
    keys: &[Key],
    to: impl Fn(&Key) -> Vec<Peer>,
    msg: impl Fn(&Key) -> PeerMsg,
) -> (u64, u64) {
    let me = liar.as_slot(0, liar.addr());
    let conns: BTreeMap<SocketAddr, Conn> = ring
        .peers
        .iter()
        .map(|p| (p.addr, liar.dial(p.addr, Some(me))))
        .collect();
    let (ok0, refused0) = (liar.st.put_ok.load(Relaxed), liar.st.refused());
    let before = liar.st.answers_to_puts();
    let mut n = 0;
    for k in keys {
        for p in to(k) {
            n += 1;
            conns[&p.addr].send(&[Frame::new(1000 + n, msg(k))]);
        }
    }
    let answered = poll(Duration::from_secs(10), || {
        liar.st.answers_to_puts() >= before + n
    });
    assert!(answered, "not every copy was answered");
    (
        liar.st.put_ok.load(Relaxed) - ok0,
        liar.st.refused() - refused0,
    )
}

/// GETs `keys` from all 16 API ports, compared with `want`.
fn on_every_port(ring: &Ring, keys: &[Key], want: &[Bytes]) -> Tally {
    let mut t = Tally::default();
    for n in &ring.nodes {
        let (got, _) = get_all(n.api, keys);
        for ((k, g), w) in keys.iter().zip(&got).zip(want) {
            t.count(*k, g.as_ref(), w);
        }
    }
    t
}

/// Honest overwrites of `keys` through the API (key i through node i mod 16), then: do all 16
/// ports serve the new values within 8 s, and still for `hold_ms` after?
/// (first reading, reading when they all did or at the deadline, time, last reading.)
fn overwrite_and_watch(ring: &Ring, keys: &[Key], hold_ms: u64) -> (Tally, Tally, Duration, Tally) {
    let new: Vec<Bytes> = keys
        .iter()
        .map(|k| Bytes::from(format!("honest overwrite of {}", k.short())))
        .collect();
    for (i, (k, v)) in keys.iter().zip(&new).enumerate() {
        api_client(ring.nodes[i % NODES].api)
            .put(*k, v, 3600, REPLICATION as u8)
            .expect("PUT");
    }
    let put_at = Instant::now();
    let first = on_every_port(ring, keys, &new);
    let mut last = Tally::default();
    poll(Duration::from_secs(8), || {
        last = on_every_port(ring, keys, &new);
        last.right == last.total()
    });
    let won_in = put_at.elapsed();
    let mut after = Tally::default();
    if last.right == last.total() {
        let until = Instant::now() + Duration::from_millis(hold_ms);
        while Instant::now() < until && after.wrong + after.failed == 0 {
            after = on_every_port(ring, keys, &new);
        }
    }
    (first, last, won_in, after)
}

/// Copies with version u64::MAX (COPY flag) for 20 keys the liar is placed to send, to all 16
/// nodes; then an honest PUT of a new value for each through the API must win on every API port,
/// and still hold over 2.5 repair rounds.
#[test]
fn far_future_version_does_not_pin() {
    let ring = ring(5, 105);
    let (liar, keys) = placed_liar(&ring, 5, 20);
    let t = Instant::now();
    let (accepted, refused) = send_copies(
        &ring,
        &liar,
        &keys,
        |_| ring.peers.clone(),
        |k| copy_put(*k, forged(k), u64::MAX),
    );
    let fakes: Vec<Bytes> = keys.iter().map(forged).collect();
    let forged_before = on_every_port(&ring, &keys, &fakes);
    let (first, last, won_in, after) =
        overwrite_and_watch(&ring, &keys, REPAIR_INTERVAL_MS * 5 / 2);
    eprintln!(
        "attack 3 (copies at version u64::MAX): {} copies to all 16 nodes for 20 keys the liar \
         is placed to send: {accepted} accepted, {refused} refused; forged value served by {} of \
         {} port×key GETs before the overwrite; honest overwrite, first reading: {}; all ports \
         right after {won_in:.2?}: {}; over 2.5 repair rounds after: {}; {:.2?}",
        keys.len() * NODES,
        forged_before.right,
        forged_before.total(),
        first.line(),
        last.right == last.total(),
        after.line(),
        t.elapsed()
    );
    assert_overwrite_held(&last, &after);
}

/// Every port served the honest overwrite (`last`), and still did after repair rounds (`after`).
fn assert_overwrite_held(last: &Tally, after: &Tally) {
    assert_eq!(
        last.right,
        last.total(),
        "the overwrite did not win: {}",
        last.line()
    );
    assert_eq!(
        after.right,
        after.total(),
        "the forged version came back: {}",
        after.line()
    );
}

/// The same with a version 50 s ahead (within `clock_skew_max_ms`, so believable), sent to the
/// replica holders only (not the responsible node). An honest overwrite right after must still win
/// on every port, and stay (repair must not pull the forged version back into the owner).
#[test]
fn version_within_clock_skew_does_not_pin() {
    let ring = ring(6, 106);
    let (liar, keys) = placed_liar(&ring, 6, 20);
    let t = Instant::now();
    let version = wall_ms() + CLOCK_SKEW_MAX_MS - 10_000;
    let (accepted, refused) = send_copies(
        &ring,
        &liar,
        &keys,
        |k| ring.holders(k, REPLICATION)[1..].to_vec(),
        |k| copy_put(*k, forged(k), version),
    );
    let (first, last, won_in, after) = overwrite_and_watch(&ring, &keys, REPAIR_INTERVAL_MS * 3);
    eprintln!(
        "attack 3b (copies at version now + 50 s to the replicas only): {} copies for 20 keys: \
         {accepted} accepted, {refused} refused; honest overwrite, first reading: {}; all ports \
         right: {} (after {won_in:.2?}: {}); over 3 repair rounds after: {}; {:.2?}",
        keys.len() * (REPLICATION - 1),
        first.line(),
        last.right == last.total(),
        last.line(),
        after.line(),
        t.elapsed()
    );
    assert_overwrite_held(&last, &after);
}

// ---------------------------------------------------------------------------------------------
// 4. A flood of copies
// ---------------------------------------------------------------------------------------------

const FLOOD_COPIES: usize = 1030;
const FLOOD_VALUE_BYTES: usize = 60_000;

/// 50 honest PUTs through the API of node `owner` for keys of its range, while `during` runs;
/// then: are they all readable there (within 5 s)? The tally and the time that took.
fn honest_puts_during(
    ring: &Ring,
    owner: usize,
    tag: &str,
    during: impl FnOnce(),
) -> (Tally, Duration) {
    let lo = ring.pred_of(owner).id;
    let hi = ring.peers[owner].id;
    let keys = ring.keys_where(tag, 50, |k| *k == hi || in_open(k, &lo, &hi));
    let values: Vec<Bytes> = keys
        .iter()
        .map(|k| Bytes::from(format!("honest {tag} {}", k.short())))
        .collect();
    let api = ring.api(&ring.peers[owner]);
    let putter = {
        let (keys, values) = (keys.clone(), values.clone());
        std::thread::spawn(move || {
            let mut c = api_client(api);
            for (k, v) in keys.iter().zip(&values) {
                c.put(*k, v, 3600, REPLICATION as u8).expect("PUT");
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    during();
    putter.join().unwrap();
    let t = Instant::now();
    let mut last = Tally::default();
    poll(Duration::from_secs(5), || {
        last = ring.tally(api, &keys, &values);
        last.right == keys.len()
    });
    (last, t.elapsed())
}

/// Sends the flood as copies with request ids and waits until every one is answered; the time.
fn flood(liar: &Liar, conn: &Conn, keys: &[Key], fill: u8) -> Duration {
    let t = Instant::now();
    let value = Bytes::from(vec![fill; FLOOD_VALUE_BYTES]);
    let before = liar.st.answers_to_puts();
    let frames: Vec<Frame> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Frame::new(i as u64 + 1, copy_put(*k, value.clone(), wall_ms())))
        .collect();
    conn.send(&frames);
    let answered = poll(Duration::from_secs(20), || {
        liar.st.answers_to_puts() >= before + keys.len() as u64
    });
    assert!(answered, "the flood was not answered");
    t.elapsed()
}

/// 1030 copies of 60 KB (COPY flag) to one node for keys the liar is not placed to send (none of
/// its slots lies between the key and the node), with 50 honest PUTs for keys the node owns
/// through its API port meanwhile: every copy is refused, the node's bytes stored do not grow by
/// them, and the honest PUTs are all stored.
#[test]
fn copy_flood_for_keys_the_liar_does_not_hold() {
    let ring = ring(7, 107);
    let ti = 7;
    let target = ring.peers[ti];
    let liar = Liar::new(liar_ip(7, 1));
    let slots = slot_ids(liar.ip);
    let keys = ring.keys_where("flood not placed", FLOOD_COPIES, |k| {
        !slots.iter().any(|s| at_or_between(s, k, &target.id))
    });
    let before = info(target.addr).bytes_stored;
    let conn = liar.dial(target.addr, Some(liar.as_slot(0, liar.addr())));
    let mut flood_time = Duration::ZERO;
    let (honest, honest_time) = honest_puts_during(&ring, ti, "honest during flood 4a", || {
        flood_time = flood(&liar, &conn, &keys, b'x');
    });
    let after = info(target.addr).bytes_stored;
    let accepted = liar.st.put_ok.load(Relaxed);
    eprintln!(
        "attack 4a (copy flood, keys the liar is not placed to send): {FLOOD_COPIES} copies of \
         {FLOOD_VALUE_BYTES} B ({} MB) answered in {flood_time:.2?}: {accepted} accepted, {} \
         refused; node's bytes stored {before} -> {after}; 50 honest PUTs meanwhile: {} \
         (readable {honest_time:.2?} after the flood)",
        FLOOD_COPIES * FLOOD_VALUE_BYTES / 1_000_000,
        liar.st.refused(),
        honest.line(),
    );
    assert_eq!(accepted, 0, "copies the liar may not send were stored");
    assert!(
        after - before < 64 * 1024,
        "bytes stored grew by {}",
        after - before
    );
    assert_eq!(
        honest.right,
        honest.total(),
        "honest PUTs: {}",
        honest.line()
    );
}

/// The same flood from a liar placed to send the keys (one of its slots lies between each key and
/// the node, so that it could be one of their holders), half of them keys the node does not
/// replicate (it is not among their first `replication_max` holders): those copies are refused,
/// the node stores at most `storage_share_per_peer` of its quota from the liar, and honest PUTs
/// keep being stored.
#[test]
fn copy_flood_from_a_placed_liar_gets_at_most_its_share() {
    let ring = ring(8, 108);
    let ti = 9;
    let target = ring.peers[ti];
    let liar = Liar::new(liar_ip(8, 1));
    let slots = slot_ids(liar.ip);
    let placed = |k: &Key| slots.iter().any(|s| at_or_between(s, k, &target.id));
    let replicates = |k: &Key| ring.holders(k, REPLICATION_MAX).contains(&target);
    let not_replicated = ring.keys_where("placed, not replicated", FLOOD_COPIES / 2, |k| {
        placed(k) && !replicates(k)
    });
    let replicated = ring.keys_where("placed, replicated", FLOOD_COPIES / 2, |k| {
        placed(k) && replicates(k)
    });
    let keys: Vec<Key> = not_replicated
        .iter()
        .zip(&replicated)
        .flat_map(|(a, b)| [*a, *b])
        .collect();
    let before = info(target.addr).bytes_stored;
    let conn = liar.dial(target.addr, Some(liar.as_slot(0, liar.addr())));
    let mut flood_time = Duration::ZERO;
    let (honest, honest_time) = honest_puts_during(&ring, ti, "honest during flood 4b", || {
        flood_time = flood(&liar, &conn, &keys, b'y');
    });
    let after = info(target.addr).bytes_stored;
    let is_flood = |v: &Option<Bytes>| v.as_ref().is_some_and(|v| v.len() == FLOOD_VALUE_BYTES);
    let held_not_replicated = held(target.addr, &not_replicated)
        .iter()
        .filter(|v| is_flood(v))
        .count();
    let held_replicated = held(target.addr, &replicated)
        .iter()
        .filter(|v| is_flood(v))
        .count();
    let share = (STORAGE_SHARE_PER_PEER * STORAGE_BYTES_MAX as f64) as u64;
    eprintln!(
        "attack 4b (copy flood from a placed liar): {} copies of {FLOOD_VALUE_BYTES} B answered \
         in {flood_time:.2?}: {} accepted, {} refused; the node holds {held_not_replicated} of \
         the {} keys it does not replicate and {held_replicated} of the {} it does; bytes \
         stored {before} -> {after} (+{} B; the per-peer share is {share} B); 50 honest PUTs \
         meanwhile: {} (readable {honest_time:.2?} after the flood)",
        keys.len(),
        liar.st.put_ok.load(Relaxed),
        liar.st.refused(),
        not_replicated.len(),
        replicated.len(),
        after - before,
        honest.line(),
    );
    assert_eq!(
        honest.right,
        honest.total(),
        "honest PUTs: {}",
        honest.line()
    );
    assert_eq!(
        held_not_replicated, 0,
        "copies for keys the node does not replicate were stored"
    );
    assert!(
        after - before <= share,
        "the liar's copies took {} B, above its share of {share} B",
        after - before
    );
}

// ---------------------------------------------------------------------------------------------
// 5. A write flood
// ---------------------------------------------------------------------------------------------

/// 400 writes of 60 KB (no COPY flag, replication byte 127) to one node for keys it owns: the node
/// takes at most `storage_share_per_peer` of its quota from the liar, no key ends up on more than
/// `replication_max` nodes, the ring's bytes grow by at most `replication_max` times what the
/// node took, honest PUTs into the flooded node's range get their copies, and 50 honest PUTs
/// (through all 16 ports) are all readable from other ports.
#[test]
fn write_flood_is_not_amplified() {
    let ring = ring(9, 109);
    let ti = 11;
    let target = ring.peers[ti];
    let lo = ring.pred_of(ti).id;
    let keys = ring.keys_where("write flood", 400, |k| {
        *k == target.id || in_open(k, &lo, &target.id)
    });
    let liar = Liar::new(liar_ip(9, 1));
    let value = Bytes::from(vec![b'z'; FLOOD_VALUE_BYTES]);
    let before = ring.bytes_stored();
    let conn = liar.dial(target.addr, Some(liar.as_slot(0, liar.addr())));
    let t = Instant::now();
    let frames: Vec<Frame> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let msg = PeerMsg::StoragePut {
                ttl_ms: 3_600_000,
                replication: 127,
                version: 0,
                key: *k,
                value: value.clone(),
            };
            Frame::new(i as u64 + 1, msg)
        })
        .collect();
    conn.send(&frames);
    let answered = poll(Duration::from_secs(20), || {
        liar.st.answers_to_puts() >= keys.len() as u64
    });
    assert!(answered, "the write flood was not answered");
    let flood_time = t.elapsed();
    // Honest PUTs for keys of the flooded node right after the flood: their copies go out while
    // the liar's writes' copies are being stored on the node's successors.
    let own_keys = ring.keys_where("honest in flooded range", 20, |k| {
        *k == target.id || in_open(k, &lo, &target.id)
    });
    let own_values: Vec<Bytes> = own_keys
        .iter()
        .map(|k| Bytes::from(format!("honest {}", k.short())))
        .collect();
    let mut c = api_client(ring.api(&target));
    for (k, v) in own_keys.iter().zip(&own_values) {
        c.put(*k, v, 3600, REPLICATION as u8).expect("PUT");
    }
    let own_put = Instant::now();
    let replicas = |keys: &[Key], values: &[Bytes]| {
        let mut n = vec![0usize; keys.len()];
        for p in &ring.peers {
            for ((h, v), want) in n.iter_mut().zip(held(p.addr, keys)).zip(values) {
                *h += usize::from(v.as_ref() == Some(want));
            }
        }
        n
    };
    let first_replicas = replicas(&own_keys, &own_values);
    let mut own_replicas = first_replicas.clone();
    let replicated = poll(Duration::from_secs(5), || {
        own_replicas = replicas(&own_keys, &own_values);
        own_replicas.iter().all(|n| *n >= REPLICATION)
    });
    let replicated_in = own_put.elapsed();
    // Copies go out unanswered: wait until the ring's byte counts stop moving.
    let mut last = ring.bytes_stored();
    let settled = poll(Duration::from_secs(6), || {
        std::thread::sleep(Duration::from_millis(300));
        let now = ring.bytes_stored();
        let same = now == last;
        last = now;
        same
    });
    let grew: Vec<u64> = last.iter().zip(&before).map(|(a, b)| a - b).collect();
    let total: u64 = grew.iter().sum();
    let at_target = grew[ti];
    let nodes_grown = grew
        .iter()
        .filter(|g| **g >= FLOOD_VALUE_BYTES as u64)
        .count();
    let accepted: Vec<Key> = liar.st.keys_accepted.lock().unwrap().clone();
    let sample: Vec<Key> = accepted.iter().copied().take(30).collect();
    let mut holders = vec![0usize; sample.len()];
    for p in &ring.peers {
        for (h, v) in holders.iter_mut().zip(held(p.addr, &sample)) {
            if v.is_some_and(|v| v.len() == FLOOD_VALUE_BYTES) {
                *h += 1;
            }
        }
    }
    let most = holders.iter().copied().max().unwrap_or(0);
    // Honest PUTs through every port, read back through the next port.
    let honest_keys = ring.keys_where("honest after write flood", 50, |_| true);
    let honest_values: Vec<Bytes> = honest_keys
        .iter()
        .map(|k| Bytes::from(format!("honest {}", k.short())))
        .collect();
    for (i, (k, v)) in honest_keys.iter().zip(&honest_values).enumerate() {
        api_client(ring.nodes[i % NODES].api)
            .put(*k, v, 3600, REPLICATION as u8)
            .expect("PUT");
    }
    let mut honest = Tally::default();
    poll(Duration::from_secs(5), || {
        honest = Tally::default();
        for (i, (k, v)) in honest_keys.iter().zip(&honest_values).enumerate() {
            let (got, _) = get_all(ring.nodes[(i + 1) % NODES].api, &[*k]);
            honest.count(*k, got[0].as_ref(), v);
        }
        honest.right == honest_keys.len()
    });
    eprintln!(
        "attack 5 (write flood, replication byte 127): {} writes of {FLOOD_VALUE_BYTES} B \
         answered in {flood_time:.2?}: {} accepted, {} refused; ring bytes settled: {settled}; \
         the node took {at_target} B, the ring {total} B ({:.2}x) on {nodes_grown} nodes; most \
         holders of one of {} sampled accepted keys: {most}; 20 honest PUTs into the flooded \
         node's range right after: copies held per key at first {:?}, {} {REPLICATION} copies \
         each after {replicated_in:.2?} ({:?}); 50 honest PUTs through every port: {}",
        keys.len(),
        accepted.len(),
        liar.st.refused(),
        total as f64 / at_target.max(1) as f64,
        sample.len(),
        first_replicas,
        if replicated { "all had" } else { "NOT all had" },
        own_replicas,
        honest.line(),
    );
    assert!(
        most <= REPLICATION_MAX,
        "a flooded key is held by {most} nodes"
    );
    let share = (STORAGE_SHARE_PER_PEER * STORAGE_BYTES_MAX as f64) as u64;
    assert!(
        at_target <= share + FLOOD_VALUE_BYTES as u64,
        "the liar's writes took {at_target} B of the node, above its share of {share} B"
    );
    assert!(
        total <= at_target * REPLICATION_MAX as u64 + 256 * 1024,
        "amplification: {total} B for {at_target} B taken"
    );
    assert_eq!(
        honest.right,
        honest.total(),
        "honest PUTs: {}",
        honest.line()
    );
}
