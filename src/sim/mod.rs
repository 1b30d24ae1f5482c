//! A deterministic discrete-event simulator that drives the very same [`Node`] as the reactor:
//! one heap of `(time, seq, event)`, a seeded network with latency, loss and crashes, and the
//! reference model ([`oracle`]) as the judge. The same seed gives the same trace hash.
//!
//! Messages cross the same byte codec as in production: every frame is encoded on send (after the
//! node's greeting on a link's first use), travels as bytes on a per-link FIFO stream, cut into
//! pieces that arrive separately, and is decoded on arrival with the reactor's frame size limit.

pub mod experiments;
mod nodes;
pub mod oracle;
mod queue;
mod warm;

pub use nodes::Nodes;

use crate::chord::{self, ClientId, Collected, Input, Node, Transmit};
use crate::config::NodeConfig;
use crate::id::{Id, Key};
use crate::msg::{Frame, PeerMsg};
use crate::time::{Prng, Time};
use crate::wire::api::{ApiReply, ApiRequest};
use crate::wire::p2p;
use bytes::{Bytes, BytesMut};
use queue::Queue;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;

/// The simulated network.
#[derive(Clone, Debug)]
pub struct NetConfig {
    pub latency_min_ms: u64,
    pub latency_max_ms: u64,
    /// Chance that a message is lost (the request then times out).
    pub loss: f64,
    /// The largest frame a receiver decodes (the reactor's `p2p_frame_bytes_max`).
    pub frame_bytes_max: usize,
    /// Each pair of nodes keeps one one-way delay, drawn once from the range (a wide-area network:
    /// some peers near, others far), instead of a fresh draw per message.
    pub fixed_link_latency: bool,
    /// A frame arrives in 1 to this many pieces (decoding from partial reads is exercised); 1
    /// delivers whole frames, a third of the events for scale runs.
    pub pieces_max: u64,
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            latency_min_ms: 5,
            latency_max_ms: 50,
            loss: 0.0,
            frame_bytes_max: crate::config::Config::default().reactor.p2p_frame_bytes_max,
            fixed_link_latency: false,
            pieces_max: 3,
        }
    }
}

#[derive(Debug)]
enum Event {
    /// A piece of the byte stream from `from` to `to`.
    Deliver {
        from: SocketAddr,
        to: SocketAddr,
        bytes: Bytes,
    },
    Unreachable {
        at: SocketAddr,
        peer: SocketAddr,
    },
    Timer {
        at: SocketAddr,
    },
    Client {
        at: SocketAddr,
        client: ClientId,
        req: ApiRequest,
    },
    /// A leaving node's grace period is over.
    Gone {
        at: SocketAddr,
    },
}

/// One direction of a simulated connection.
#[derive(Default)]
struct Link {
    /// When the last piece sent on it arrives: later pieces never overtake it.
    clock: Time,
    /// The sender's greeting has gone first.
    greeted: bool,
    /// Bytes arrived and not yet decoded (part of a frame).
    received: BytesMut,
}

pub struct SimNode {
    pub node: Node,
    /// The wake-up the node asked for last; older timer events are stale.
    wake: Option<Time>,
    /// Everything the node was given and put out, when it is recorded.
    pub recording: Option<Recording>,
}

/// Whether a new node's life is recorded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Record {
    No,
    Yes,
}

/// A node's life as inputs and outputs: `Node::new(config, addr, seed, born)` given `inputs` one by
/// one (each followed by a drain) puts out `transmits` and `replies` again, in order.
#[derive(Clone, Debug)]
pub struct Recording {
    pub config: NodeConfig,
    pub seed: u64,
    pub born: Time,
    pub inputs: Vec<(Time, Input)>,
    pub transmits: Vec<Transmit>,
    pub replies: Vec<(ClientId, ApiReply)>,
}

/// The answer to a probe lookup: the node named responsible, and the PEER FIND messages it took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    pub key: Key,
    pub owner: Id,
    pub path_length: u8,
}

/// The address probes are answered to; no node lives there.
pub const PROBER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::new(127, 255, 255, 254),
    1,
));

pub struct Sim {
    pub seed: u64,
    now: Time,
    /// Counts scheduled events and probes (a probe's request id).
    seq: u64,
    queue: Queue<Event>,
    pub nodes: Nodes,
    node_cfg: NodeConfig,
    net: NetConfig,
    rng: Prng,
    /// Per directed link, its stream state: links are FIFO like TCP.
    /// (Only looked up, never iterated: a hash map keeps the run deterministic.)
    links: HashMap<(SocketAddr, SocketAddr), Link, BuildHasherDefault<LinkHasher>>,
    next_addr: u32,
    trace: u64,
    pub events: u64,
    pub replies: Vec<(SocketAddr, ClientId, ApiReply)>,
    pub probes: Vec<ProbeResult>,
    /// Messages and bytes sent, per P2P message type (frame header included).
    pub traffic: BTreeMap<u16, (u64, u64)>,
    probe_keys: BTreeMap<u64, Key>,
    /// Check the global ring invariants after every event (the local ones are always checked).
    pub check_every_event: bool,
    /// While the network is split: the nodes on one side; nothing crosses between the sides.
    split: Option<BTreeSet<SocketAddr>>,
    /// Nodes gone silently ([`Sim::silence`]): what is sent to them vanishes.
    silent: BTreeSet<SocketAddr>,
    /// Frames are encoded here and split off: one allocation per chunk, not per message.
    scratch: BytesMut,
    /// Reused for every input's outputs and every read's frames (no allocation per event).
    collected: Collected,
    frames: Vec<Frame>,
}

/// Up to this many nodes, every node's local invariants are checked after every event it handles;
/// in larger runs one event in [`LOCAL_CHECK_SAMPLE`] (a check costs a tenth of an event, and the
/// structure it checks outlives the event that breaks it).
const LOCAL_CHECKS_ALL_NODES_MAX: usize = 10_000;
const LOCAL_CHECK_SAMPLE: u64 = 8;

/// The encoding chunk's size, and the room left below which a new chunk is started.
const SCRATCH_BYTES: usize = 64 * 1024;
const SCRATCH_ROOM_MIN: usize = 4 * 1024;

impl Sim {
    pub fn new(seed: u64, node_cfg: NodeConfig, net: NetConfig) -> Sim {
        Sim {
            seed,
            now: Time::ZERO,
            seq: 0,
            queue: Queue::new(),
            nodes: Nodes::default(),
            node_cfg,
            net,
            rng: Prng::new(seed),
            links: HashMap::default(),
            next_addr: 0,
            trace: 0xcbf2_9ce4_8422_2325,
            events: 0,
            replies: Vec::new(),
            probes: Vec::new(),
            traffic: BTreeMap::new(),
            probe_keys: BTreeMap::new(),
            check_every_event: true,
            split: None,
            silent: BTreeSet::new(),
            scratch: BytesMut::new(),
            collected: Collected::default(),
            frames: Vec::new(),
        }
    }

    /// The Chord papers' setup: stabilize, finger fixing and predecessor checks every 30 s, a
    /// successor list of r = 20.
    pub fn paper_node_config() -> NodeConfig {
        let mut c = Sim::default_node_config();
        c.stabilize_interval_ms = 30_000;
        c.fix_fingers_interval_ms = 30_000;
        c.check_predecessor_interval_ms = 30_000;
        c.successors = 20;
        c
    }

    /// A node config tuned like the papers' simulations but faster: stabilize every second.
    pub fn default_node_config() -> NodeConfig {
        let mut c = crate::config::Config::default().node;
        c.request_timeout_ms = 500;
        c.stabilize_interval_ms = 1000;
        c.fix_fingers_interval_ms = 250;
        c.check_predecessor_interval_ms = 2000;
        c
    }

    pub fn now(&self) -> Time {
        self.now
    }

    /// FNV-1a over every event handled: equal seeds must give equal hashes.
    pub fn trace_hash(&self) -> u64 {
        self.trace
    }

    /// Adds a node at `now`; it joins through `bootstrap` (or starts the ring when `None`).
    pub fn add_node(&mut self, bootstrap: Option<SocketAddr>) -> SocketAddr {
        self.add_node_as(bootstrap, Record::No)
    }

    /// Adds a node whose every input and output is recorded ([`SimNode::recording`]).
    pub fn add_recorded_node(&mut self, bootstrap: Option<SocketAddr>) -> SocketAddr {
        self.add_node_as(bootstrap, Record::Yes)
    }

    fn add_node_as(&mut self, bootstrap: Option<SocketAddr>, record: Record) -> SocketAddr {
        self.next_addr += 1;
        let addr = nodes::addr_of(self.next_addr as usize);
        self.start_node(addr, bootstrap, record);
        addr
    }

    /// A fresh node process on `addr`, joining through `bootstrap` (or starting a ring).
    fn start_node(&mut self, addr: SocketAddr, bootstrap: Option<SocketAddr>, record: Record) {
        let mut cfg = self.node_cfg.clone();
        cfg.bootstrap = bootstrap.into_iter().collect();
        let seed = self.rng.next_u64();
        let recording = (record == Record::Yes).then(|| Recording {
            config: cfg.clone(),
            seed,
            born: self.now,
            inputs: Vec::new(),
            transmits: Vec::new(),
            replies: Vec::new(),
        });
        let node = Node::new(cfg, addr, seed, self.now);
        let wake = None;
        self.nodes.insert(
            addr,
            SimNode {
                node,
                wake,
                recording,
            },
        );
        self.after_handle(addr);
    }

    /// Adds nodes until there are `n`, at random times within `spread_ms`, each joining through a
    /// random node added before it (the first starts the ring).
    pub fn grow(&mut self, n: usize, spread_ms: u64) {
        let mut addrs: Vec<SocketAddr> = if self.nodes.is_empty() {
            vec![self.add_node(None)]
        } else {
            self.nodes.keys().copied().collect()
        };
        let mut times: Vec<u64> = (addrs.len()..n)
            .map(|_| self.rng.below(spread_ms.max(1)))
            .collect();
        times.sort();
        let start = self.now;
        for t in times {
            self.run_until(start + t);
            let via = addrs[self.rng.below(addrs.len() as u64) as usize];
            addrs.push(self.add_node(Some(via)));
        }
    }

    /// Runs until every node's successor list and predecessor match the oracle; returns how long
    /// that took, or the oracle's complaint after `limit_ms`.
    pub fn converge(&mut self, limit_ms: u64) -> Result<u64, String> {
        match self.run_until_cond(100, limit_ms, |s| oracle::check_ideal(s).is_ok()) {
            Some(ms) => Ok(ms),
            None => Err(oracle::check_ideal(self).unwrap_err()),
        }
    }

    /// Probes `count` random keys from random nodes and waits for the answers; returns the path
    /// lengths, having checked every answer against the oracle.
    pub fn probe_random(&mut self, count: usize) -> Result<Vec<u8>, String> {
        self.probes.clear();
        let addrs: Vec<SocketAddr> = self.nodes.keys().copied().collect();
        for _ in 0..count {
            let at = addrs[self.rng.below(addrs.len() as u64) as usize];
            let key = Id::hash(&self.rng.next_u64().to_be_bytes());
            self.probe(at, key);
        }
        self.run_for(10_000);
        // Lost messages lose probes (the prober does not retry); without loss, all must answer.
        if self.probes.len() != count && self.net.loss == 0.0 {
            return Err(format!("{} of {count} probes answered", self.probes.len()));
        }
        let sorted = self.live_sorted();
        for p in &self.probes {
            let want = oracle::owner(&sorted, &p.key);
            if p.owner != want {
                return Err(format!(
                    "probe for {:?} answered {:?}, oracle {:?}",
                    p.key, p.owner, want
                ));
            }
        }
        Ok(self.probes.iter().map(|p| p.path_length).collect())
    }

    /// The node stops at once: messages to it fail, nothing is handed over.
    pub fn crash(&mut self, addr: SocketAddr) {
        self.nodes.remove(&addr);
    }

    /// The node is gone without a word (powered off, a black-holed link): messages to it vanish,
    /// and no sender hears that it is unreachable; requests to it time out.
    pub fn silence(&mut self, addr: SocketAddr) {
        self.nodes.remove(&addr);
        self.silent.insert(addr);
    }

    /// An operator's restart in place: the process at `addr` is gone at once (whatever it still
    /// had to send is lost, as with a crash) and a fresh node starts on the same address, joining
    /// through `bootstrap`; with a pinned `id_slot` it comes back as the same identity.
    pub fn restart(&mut self, addr: SocketAddr, bootstrap: SocketAddr) {
        self.nodes.remove(&addr);
        self.start_node(addr, Some(bootstrap), Record::No);
    }

    /// Graceful leave: the node hands its values on and tells its neighbours, and is gone once the
    /// hand-off is acknowledged (or after 3 s, like the reactor).
    pub fn leave(&mut self, addr: SocketAddr) {
        if !self.nodes.contains_key(&addr) {
            return;
        }
        self.input(addr, Input::Leave);
        self.schedule(self.now + 3000, Event::Gone { at: addr });
    }

    /// Splits the network in two: `side` on one side, every other node on the other. Messages
    /// between the sides are lost (like a link down: requests time out) until [`Sim::heal`]. The
    /// ring-wide invariants cannot hold meanwhile: they are no longer checked after every event.
    pub fn split(&mut self, side: BTreeSet<SocketAddr>) {
        self.check_every_event = false;
        self.split = Some(side);
    }

    pub fn heal(&mut self) {
        self.split = None;
    }

    fn across_the_split(&self, from: SocketAddr, to: SocketAddr) -> bool {
        self.split
            .as_ref()
            .is_some_and(|side| side.contains(&from) != side.contains(&to))
    }

    /// Changes the chance that a message is lost, from now on.
    pub fn set_loss(&mut self, loss: f64) {
        self.net.loss = loss;
    }

    /// Delivers `frame` to `to` as if `from` had sent it now (tests forge late or odd messages).
    pub fn deliver(&mut self, from: SocketAddr, to: SocketAddr, frame: Frame) {
        let mut bytes = BytesMut::new();
        frame.encode(&mut bytes);
        let bytes = bytes.freeze();
        self.schedule(self.now, Event::Deliver { from, to, bytes });
    }

    pub fn client_request(&mut self, at: SocketAddr, client: ClientId, req: ApiRequest) {
        self.schedule(self.now, Event::Client { at, client, req });
    }

    /// Asks node `at` (as a stranger would) who is responsible for `key`; the answer lands in `probes`.
    pub fn probe(&mut self, at: SocketAddr, key: Key) {
        self.seq += 1;
        let request = self.seq;
        self.probe_keys.insert(request, key);
        let msg = PeerMsg::PeerFind {
            target: key,
            hops: 0,
            last_hop: false,
            reply_to: PROBER,
            read: false,
        };
        self.deliver(PROBER, at, Frame::new(request, msg));
    }

    /// Runs events until simulated time `until`.
    pub fn run_until(&mut self, until: Time) {
        while let Some((time, event)) = self.queue.pop_until(until) {
            self.now = time;
            self.step(event);
        }
        self.now = self.now.max(until);
    }

    pub fn run_for(&mut self, ms: u64) {
        self.run_until(self.now + ms);
    }

    /// Runs in steps of `step_ms` until `cond` holds; returns the time it took, or `None` by `limit_ms`.
    pub fn run_until_cond(
        &mut self,
        step_ms: u64,
        limit_ms: u64,
        mut cond: impl FnMut(&Sim) -> bool,
    ) -> Option<u64> {
        let start = self.now;
        while self.now.ms_since(start) < limit_ms {
            if cond(self) {
                return Some(self.now.ms_since(start));
            }
            self.run_for(step_ms);
        }
        cond(self).then(|| self.now.ms_since(start))
    }

    fn step(&mut self, event: Event) {
        self.events += 1;
        match event {
            Event::Deliver { from, to, bytes } => {
                if to == PROBER || self.nodes.contains_key(&to) {
                    self.receive(from, to, &bytes);
                }
            }
            Event::Unreachable { at, peer } => {
                self.hash_event(2, at, 0);
                self.input(at, Input::PeerUnreachable { peer });
            }
            Event::Timer { at } => {
                let Some(n) = self.nodes.get_mut(&at) else {
                    return;
                };
                if n.wake != Some(self.now) {
                    return; // superseded by a later request
                }
                n.wake = None;
                self.hash_event(3, at, 0);
                self.input(at, Input::Timeout);
            }
            Event::Gone { at } => {
                // Not a node restarted on the address meanwhile.
                if self.nodes.get(&at).is_some_and(|n| n.node.leaving()) {
                    self.nodes.remove(&at);
                }
            }
            Event::Client { at, client, req } => {
                self.hash_event(4, at, client);
                self.input(at, Input::ClientRequest { client, req });
            }
        }
    }

    /// Bytes arrive on the link `from → to`: every whole frame is decoded and handed in. Bytes that
    /// break the protocol close the link, as the reactor would close the connection.
    fn receive(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        let link = self.links.entry((from, to)).or_default();
        link.received.extend_from_slice(bytes);
        let mut frames = std::mem::take(&mut self.frames);
        let broken = loop {
            match p2p::decode_frame(&mut link.received, self.net.frame_bytes_max) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        if link.received.is_empty() {
            // Most reads end on a frame boundary: millions of idle links keep no buffer.
            link.received = BytesMut::new();
        }
        for frame in frames.drain(..) {
            self.hash_event(1, to, frame.msg.msg_type() as u64);
            if to == PROBER {
                self.on_probe_answer(frame);
            } else {
                self.input(to, Input::PeerFrame { from, frame });
            }
        }
        self.frames = frames;
        if let Some(e) = broken {
            log::warn!("sim: link {from} → {to} closed: {e}");
            self.links.remove(&(from, to));
            let at = self.now + self.net.latency_min_ms;
            self.schedule(at, Event::Unreachable { at: from, peer: to });
        }
    }

    /// Hands `input` to the live node at `at`, checks it, then delivers its outputs.
    fn input(&mut self, at: SocketAddr, input: Input) {
        let check_local = self.nodes.len() <= LOCAL_CHECKS_ALL_NODES_MAX
            || self.events.is_multiple_of(LOCAL_CHECK_SAMPLE);
        let Some(n) = self.nodes.get_mut(&at) else {
            return;
        };
        if let Some(r) = n.recording.as_mut() {
            r.inputs.push((self.now, input.clone()));
        }
        n.node.handle_input(input, self.now);
        let mut out = std::mem::take(&mut self.collected);
        // A wake-up in the past (timers may be conservative) is due now.
        let wake = chord::drive(&mut n.node, &mut out).map(|t| t.max(self.now));
        if check_local {
            n.node.check_invariants();
        }
        if let Some(r) = n.recording.as_mut() {
            r.transmits.extend(out.transmits.iter().cloned());
            r.replies.extend(out.replies.iter().cloned());
        }
        let rearm = wake != n.wake;
        n.wake = wake;
        let gone = n.node.leave_done();
        self.deliver_outputs(at, out, wake.filter(|_| rearm));
        if gone {
            self.nodes.remove(&at);
        }
        if self.check_every_event
            && let Err(e) = oracle::check_rings(self)
        {
            panic!(
                "seed {}: invariant broken at {} ms: {e} (replay with SIM_SEED={})",
                self.seed, self.now.0, self.seed
            );
        }
    }

    fn on_probe_answer(&mut self, frame: Frame) {
        // The first hop's FIND TAKEN is no answer.
        let PeerMsg::PeerFound { hops, nodes, .. } = frame.msg else {
            return;
        };
        if let Some(key) = self.probe_keys.remove(&frame.request) {
            // The prober's own message to the first node is not part of the lookup path.
            self.probes.push(ProbeResult {
                key,
                owner: nodes[0].id,
                path_length: hops.saturating_sub(1),
            });
        }
    }

    /// Drains the node's outputs into the network and re-arms its timer.
    fn after_handle(&mut self, at: SocketAddr) {
        let mut out = Collected::default();
        let n = self.nodes.get_mut(&at).expect("live node");
        let wake = chord::drive(&mut n.node, &mut out).map(|t| t.max(self.now));
        if let Some(r) = n.recording.as_mut() {
            r.transmits.extend(out.transmits.iter().cloned());
        }
        let rearm = wake != n.wake;
        n.wake = wake;
        self.deliver_outputs(at, out, wake.filter(|_| rearm));
    }

    /// Sends what node `at` put out, and schedules its wake-up when it asked for a new one.
    fn deliver_outputs(&mut self, at: SocketAddr, mut out: Collected, wake: Option<Time>) {
        if let Some(t) = wake {
            self.schedule(t, Event::Timer { at });
        }
        for t in out.transmits.drain(..) {
            self.transmit(at, t);
        }
        for (client, reply) in out.replies.drain(..) {
            self.replies.push((at, client, reply));
        }
        // Kept for the next input, with its capacity.
        self.collected = out;
    }

    /// The one-way delay of a message from `from` to `to`.
    fn latency(&mut self, from: SocketAddr, to: SocketAddr) -> u64 {
        let spread = self.net.latency_max_ms - self.net.latency_min_ms + 1;
        let draw = if self.net.fixed_link_latency {
            // The same for both directions and every message: a hash of the pair and the seed.
            let (a, b) = if from < to { (from, to) } else { (to, from) };
            let mut h = Prng::new(self.seed ^ pair_hash(a, b));
            h.below(spread)
        } else {
            self.rng.below(spread)
        };
        self.net.latency_min_ms + draw
    }

    fn transmit(&mut self, from: SocketAddr, t: Transmit) {
        let latency = self.latency(from, t.to);
        if self.scratch.capacity() < SCRATCH_ROOM_MIN {
            self.scratch = BytesMut::with_capacity(SCRATCH_BYTES);
        }
        let len = t.frame.encode(&mut self.scratch);
        let mut bytes = self.scratch.split();
        let counter = self.traffic.entry(t.frame.msg.msg_type()).or_default();
        counter.0 += 1;
        counter.1 += len as u64;
        // (Unless a node started on the address since.)
        if self.silent.contains(&t.to) && !self.nodes.contains_key(&t.to) {
            return;
        }
        if t.to != PROBER && !self.nodes.contains_key(&t.to) {
            // Connection refused: the sender learns it after a round trip.
            let peer = t.to;
            let at = self.now + 2 * latency;
            return self.schedule(at, Event::Unreachable { at: from, peer });
        }
        // A lost message is lost whole: the stream stays in step, the request times out.
        if self.net.loss > 0.0 && self.rng.chance(self.net.loss) {
            return;
        }
        if self.across_the_split(from, t.to) {
            return;
        }
        let link = self.links.entry((from, t.to)).or_default();
        if !link.greeted && from != PROBER {
            link.greeted = true;
            let mut greeted = BytesMut::new();
            self.nodes[&from].node.greeting().encode(&mut greeted);
            greeted.unsplit(bytes);
            bytes = greeted;
        }
        let at = (self.now + latency).max(link.clock);
        // Pieces arrive one millisecond apart: frames are decoded from partial reads.
        let pieces = 1 + self.rng.below(self.net.pieces_max.max(1));
        link.clock = at + (pieces - 1);
        let mut bytes = bytes.freeze();
        for i in 0..pieces {
            let cut = if i + 1 == pieces {
                bytes.len()
            } else {
                self.rng.below(bytes.len() as u64 + 1) as usize
            };
            let piece = bytes.split_to(cut);
            let to = t.to;
            self.schedule(
                at + i,
                Event::Deliver {
                    from,
                    to,
                    bytes: piece,
                },
            );
        }
    }

    fn schedule(&mut self, time: Time, event: Event) {
        self.seq += 1;
        self.queue.push(time, event);
    }

    fn hash_event(&mut self, kind: u64, at: SocketAddr, detail: u64) {
        let port = at.port() as u64;
        let ip = match at.ip() {
            std::net::IpAddr::V4(v) => u32::from(v) as u64,
            std::net::IpAddr::V6(_) => 0,
        };
        for x in [self.now.0, kind, ip, port, detail] {
            self.trace = (self.trace ^ x).wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// Live node addresses in ring (id) order.
    pub fn live_sorted(&self) -> Vec<(Id, SocketAddr)> {
        let mut v: Vec<(Id, SocketAddr)> = self
            .nodes
            .iter()
            .map(|(a, n)| (n.node.me().id, *a))
            .collect();
        v.sort();
        v
    }

    pub fn node(&self, addr: SocketAddr) -> &Node {
        &self.nodes[&addr].node
    }
}

/// The seed to run: `SIM_SEED` from the environment (to replay a failure), else `default`.
pub fn seed_from_env(default: u64) -> u64 {
    std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The link table's hash: a multiply-rotate over the words of an address pair, mixed at the end
/// (SplitMix64's finalizer). SipHash's defence against chosen keys buys nothing in a simulator, and
/// at 10^5 nodes it cost as much as the lookups themselves.
#[derive(Default)]
struct LinkHasher(u64);

impl Hasher for LinkHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, x: u8) {
        self.write_u64(x.into());
    }

    fn write_u16(&mut self, x: u16) {
        self.write_u64(x.into());
    }

    fn write_u32(&mut self, x: u32) {
        self.write_u64(x.into());
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }

    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// FNV-1a over two addresses (for [`NetConfig::fixed_link_latency`]).
fn pair_hash(a: SocketAddr, b: SocketAddr) -> u64 {
    let bytes = |s: SocketAddr| {
        let ip = match s.ip() {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(v6) => v6.octets(),
        };
        ip.into_iter().chain(s.port().to_be_bytes())
    };
    bytes(a)
        .chain(bytes(b))
        .fold(0xcbf2_9ce4_8422_2325, |h, byte| {
            (h ^ byte as u64).wrapping_mul(0x0100_0000_01b3)
        })
}
