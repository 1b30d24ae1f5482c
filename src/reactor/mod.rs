//! The production driver: one thread, one `mio::Poll`, both listeners and every connection in one
//! `Slab`, a timer wheel for idle connections, and the sans-IO [`Node`] fed from the sockets.
//!
//! Owns the sockets, buffers and timers, and nothing of the protocol: bytes are decoded here into
//! typed requests and frames (HELLO included) and handed to the core as [`Input`]s; the core's
//! outputs are encoded into per-connection write buffers that are flushed once per loop turn
//! (batched writes). The core names peers (HELLO) and says when a hung-up client is answered.

mod conn;
pub mod hub;

use crate::chord::{self, ClientId, Input, Node, Outputs, Transmit};
use crate::config::{Config, ReactorConfig};
use crate::msg::Peer;
use crate::time::Time;
use crate::wheel::TimerWheel;
use crate::wire::api::{self, ApiReply};
use crate::wire::p2p;
use bytes::{Buf, BytesMut};
use conn::{Conn, Role};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

// A reactor's tokens, offset by its `token_base` when several share one poll ([`hub`]).
const API_LISTENER: usize = 0;
const P2P_LISTENER: usize = 1;
const WAKER: usize = 2;
const SIGNALS: usize = 3;
/// Connection tokens are slab keys offset past the fixed tokens.
const FIRST_CONN: usize = 4;
/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 * 1024;
/// Socket events handled per loop turn at most.
pub const EVENTS_PER_TURN: usize = 1024;

/// Stops a running reactor from another thread (tests, testnet) or a signal.
#[derive(Clone)]
pub struct StopHandle {
    stop: Arc<AtomicU8>,
    waker: Arc<Waker>,
}

const RUNNING: u8 = 0;
const LEAVING: u8 = 1;
const KILLED: u8 = 2;
/// How long a graceful leave may take to hand values on before the node exits anyway.
const LEAVE_GRACE_MS: u64 = 3000;

impl StopHandle {
    /// Graceful: hand values on, tell the neighbours, then exit (what SIGINT/SIGTERM do).
    pub fn leave(&self) {
        let _ = self
            .stop
            .compare_exchange(RUNNING, LEAVING, Ordering::SeqCst, Ordering::SeqCst);
        let _ = self.waker.wake();
    }

    /// Abrupt, like a crash: exit at once, telling nobody.
    pub fn kill(&self) {
        self.stop.store(KILLED, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

pub struct Reactor {
    /// Its own poll, unless it shares one ([`hub`]).
    poll: Option<Poll>,
    node: Node,
    net: Net,
    api_listener: TcpListener,
    p2p_listener: TcpListener,
    stop: Arc<AtomicU8>,
    waker: Arc<Waker>,
    signals: Option<mio::net::UnixStream>,
    /// When the node's next timer is due.
    next_timeout: Option<Time>,
    /// Set once a graceful leave starts: the node exits by then at the latest.
    leave_deadline: Option<Time>,
}

/// The connections, kept apart from the node so the node can write into them through [`Outputs`].
struct Net {
    registry: mio::Registry,
    /// Added to every token this reactor registers.
    token_base: usize,
    cfg: ReactorConfig,
    conns: Slab<Conn>,
    /// Peer name → connection used to send to it.
    peers: HashMap<SocketAddr, usize>,
    idle: TimerWheel<(usize, u32)>,
    next_generation: u32,
    /// Connections with bytes to flush this turn.
    dirty: Vec<usize>,
    /// Connections whose reading resumed after backpressure: their buffered frames wait.
    resumed: Vec<usize>,
    scratch: Box<[u8]>,
    /// What happened while the node was borrowed (unreachable peers, closed clients); given to
    /// the node after the drive.
    inputs: Vec<Input>,
    /// The node's greeting (HELLO), encoded: the first bytes of every connection we dial.
    greeting: BytesMut,
    me: Peer,
    start: Instant,
}

impl Reactor {
    /// Binds both listeners (port 0 picks a free port) and creates the node, with its own poll.
    pub fn bind(cfg: &Config, seed: u64) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), Token(WAKER))?);
        let mut reactor = Reactor::bind_on(cfg, seed, poll.registry(), 0, waker)?;
        reactor.poll = Some(poll);
        Ok(reactor)
    }

    /// Binds a node whose sockets go in a shared poll's `registry` with tokens from `token_base`;
    /// `waker` wakes that poll.
    pub(crate) fn bind_on(
        cfg: &Config,
        seed: u64,
        registry: &mio::Registry,
        token_base: usize,
        waker: Arc<Waker>,
    ) -> io::Result<Reactor> {
        let api_listener = listen(cfg.reactor.api_address, registry, token_base + API_LISTENER)?;
        let p2p_listener = listen(cfg.reactor.p2p_address, registry, token_base + P2P_LISTENER)?;
        let p2p_addr = p2p_listener.local_addr()?;
        let mut node = Node::new(cfg.node.clone(), p2p_addr, seed, Time::ZERO);
        // Write versions come from the wall clock (time 0 of the node's clock is now).
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        node.handle_input(Input::WallClock { epoch_ms: epoch }, Time::ZERO);
        let net = Net::new(cfg, registry.try_clone()?, token_base, &node);
        let mut reactor = Reactor {
            poll: None,
            node,
            net,
            api_listener,
            p2p_listener,
            stop: Arc::new(AtomicU8::new(RUNNING)),
            waker,
            signals: None,
            next_timeout: None,
            leave_deadline: None,
        };
        reactor.next_timeout = reactor.flush_outputs();
        Ok(reactor)
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_listener.local_addr().expect("bound listener")
    }

    pub fn p2p_addr(&self) -> SocketAddr {
        self.p2p_listener.local_addr().expect("bound listener")
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            stop: self.stop.clone(),
            waker: self.waker.clone(),
        }
    }

    /// SIGINT and SIGTERM stop the loop (through a self-pipe, so the poll wakes at once).
    pub fn stop_on_signals(&mut self) -> io::Result<()> {
        let (read, write) = std::os::unix::net::UnixStream::pair()?;
        read.set_nonblocking(true)?;
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGINT, write.try_clone()?)?;
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGTERM, write)?;
        let mut read = mio::net::UnixStream::from_std(read);
        self.net.registry.register(
            &mut read,
            Token(self.net.token_base + SIGNALS),
            Interest::READABLE,
        )?;
        self.signals = Some(read);
        Ok(())
    }

    /// Runs until stopped.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_PER_TURN);
        while self.turn(&mut events)? {}
        Ok(())
    }

    /// One turn of the loop on the reactor's own poll: waits for socket events (no longer than the
    /// next timer), handles them, fires due timers and flushes the outputs. False once the node has
    /// stopped.
    fn turn(&mut self, events: &mut Events) -> io::Result<bool> {
        if !self.keep_running() {
            return Ok(false);
        }
        let now = self.net.now();
        let wait = self
            .next_wake()
            .map(|t| Duration::from_millis(t.ms_since(now)));
        let poll = self.poll.as_mut().expect("a reactor with its own poll");
        if let Err(e) = poll.poll(events, wait) {
            if e.kind() == ErrorKind::Interrupted {
                return Ok(true);
            }
            return Err(e);
        }
        for event in events.iter() {
            self.on_event(event.token().0, event);
        }
        self.after_events();
        Ok(true)
    }

    /// Starts a graceful leave when asked; false once the node should stop (killed, or its leave
    /// has handed everything on or run out of time).
    pub(crate) fn keep_running(&mut self) -> bool {
        let now = self.net.now();
        match self.stop.load(Ordering::SeqCst) {
            KILLED => return self.stopped(),
            LEAVING if self.leave_deadline.is_none() => {
                self.node.handle_input(Input::Leave, now);
                self.leave_deadline = Some(now + LEAVE_GRACE_MS);
                self.next_timeout = self.flush_outputs();
            }
            _ => {}
        }
        if let Some(deadline) = self.leave_deadline {
            let flushed = self.net.conns.iter().all(|(_, c)| c.wbuf.is_empty());
            if (self.node.leave_done() && flushed) || now >= deadline {
                return self.stopped();
            }
        }
        true
    }

    /// One socket event; `token` is the poll's token (with this reactor's base).
    pub(crate) fn on_event(&mut self, token: usize, event: &mio::event::Event) {
        match token - self.net.token_base {
            API_LISTENER => self.accept(Role::Api),
            P2P_LISTENER => self.accept(Role::Peer),
            WAKER => {}
            SIGNALS => self.on_signal(),
            t => self.on_conn_event(t - FIRST_CONN, event),
        }
    }

    /// After a batch of events: due timers, idle connections, and every output flushed.
    pub(crate) fn after_events(&mut self) {
        let now = self.net.now();
        if self.next_timeout.is_some_and(|t| t <= now) {
            self.node.handle_input(Input::Timeout, now);
        }
        self.net.expire_idle(now);
        self.next_timeout = self.flush_outputs();
        while !self.net.resumed.is_empty() {
            for key in std::mem::take(&mut self.net.resumed) {
                match self.net.conns.get(key) {
                    // Its socket is at its end: only the requests already read remain.
                    Some(c) if c.hung_up => self.handle_frames(key, self.net.now()),
                    Some(_) => self.on_readable(key, false),
                    None => {}
                }
            }
            self.next_timeout = self.flush_outputs();
        }
    }

    fn stopped(&self) -> bool {
        log::info!("[{}] stopping", self.node.me().id.short());
        false
    }

    /// When the next timer is due, in the reactor's clock (node timers, idle connections, and
    /// while leaving a 20 ms check of the hand-off).
    fn next_wake(&self) -> Option<Time> {
        let now = self.net.now();
        [
            self.next_timeout,
            self.net.idle.next_deadline(),
            self.leave_deadline.map(|_| now + 20),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// [`Self::next_wake`] as an instant, for a shared thread's timeout.
    pub fn next_wake_instant(&self) -> Option<Instant> {
        self.next_wake()
            .map(|t| self.net.start + Duration::from_millis(t.as_ms()))
    }

    fn on_signal(&mut self) {
        let mut buf = [0u8; 64];
        if let Some(s) = self.signals.as_mut() {
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        }
        log::info!("signal received; leaving the ring");
        let _ = self
            .stop
            .compare_exchange(RUNNING, LEAVING, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Drains the node into the connections, gives it what happened meanwhile, and writes.
    fn flush_outputs(&mut self) -> Option<Time> {
        let mut next = chord::drive(&mut self.node, &mut self.net);
        while !self.net.inputs.is_empty() {
            let now = self.net.now();
            for input in std::mem::take(&mut self.net.inputs) {
                self.node.handle_input(input, now);
            }
            next = chord::drive(&mut self.node, &mut self.net);
        }
        for key in std::mem::take(&mut self.net.dirty) {
            self.net.flush(key);
        }
        // Flushing may have found broken connections.
        if !self.net.inputs.is_empty() {
            self.flush_outputs()
        } else {
            next
        }
    }

    fn accept(&mut self, role: Role) {
        loop {
            let listener = if role == Role::Api {
                &self.api_listener
            } else {
                &self.p2p_listener
            };
            match listener.accept() {
                Ok((stream, remote)) => {
                    if self.net.conns.len() >= self.net.cfg.connections_max {
                        log::warn!(
                            "refusing {:?} connection from {}: connections_max {} reached",
                            role,
                            remote,
                            self.net.cfg.connections_max
                        );
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    if let Err(e) = self.net.add(stream, role, remote, false) {
                        log::warn!("cannot register connection from {remote}: {e}");
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn on_conn_event(&mut self, key: usize, event: &mio::event::Event) {
        if event.is_writable() && self.net.conns.contains(key) {
            self.net.on_writable(key);
        }
        // The other side closed (or failed): read on to the end of the stream, which raises no
        // further edge.
        let to_end = event.is_read_closed() || event.is_error();
        if (event.is_readable() || to_end)
            && self
                .net
                .conns
                .get(key)
                .is_some_and(|c| !c.reading_paused && c.connected)
        {
            self.on_readable(key, to_end);
        }
    }

    /// Reads what the socket has, a buffer's worth at a time, handling whole frames after each
    /// (stopping when the reply buffer is full: backpressure). Epoll is edge-triggered, so reading
    /// goes on until the socket is empty (or at `to_end`, closed), or until reading is paused (the
    /// resume reads again).
    fn on_readable(&mut self, key: usize, to_end: bool) {
        loop {
            let now = self.net.now();
            let outcome = self.net.read_some(key, now, to_end);
            self.handle_frames(key, now);
            match outcome {
                ReadOutcome::Drained => return,
                ReadOutcome::Closed => return self.net.hang_up(key),
                ReadOutcome::BufferFull
                    if self.net.conns.get(key).is_none_or(|c| c.reading_paused) =>
                {
                    return;
                }
                ReadOutcome::BufferFull => {}
            }
        }
    }

    fn handle_frames(&mut self, key: usize, now: Time) {
        loop {
            let Some(c) = self.net.conns.get_mut(key) else {
                return;
            };
            if c.wbuf.len() >= self.net.cfg.connection_buffer_bytes_max {
                self.net.pause_reading(key);
                return;
            }
            match c.role {
                Role::Api => match api::decode_request(&mut c.rbuf) {
                    Ok(Some(req)) => {
                        let client = client_id(key, c.generation);
                        self.node
                            .handle_input(Input::ClientRequest { client, req }, now);
                    }
                    // After the end of stream a partial frame can never complete: every request
                    // is in, the node says when every answer is out.
                    Ok(None) if c.hung_up => {
                        c.rbuf.clear();
                        if !c.hangup_reported {
                            c.hangup_reported = true;
                            let client = client_id(key, c.generation);
                            self.node.handle_input(Input::ClientHungUp { client }, now);
                            chord::drain(&mut self.node, &mut self.net);
                        }
                        return;
                    }
                    Ok(None) => return,
                    Err(e) => {
                        return self
                            .net
                            .close(key, &format!("API protocol violation: {e}"), false);
                    }
                },
                Role::Peer => {
                    match p2p::decode_frame(&mut c.rbuf, self.net.cfg.p2p_frame_bytes_max) {
                        Ok(Some(frame)) => {
                            let from = c.peer_name;
                            self.node
                                .handle_input(Input::PeerFrame { from, frame }, now);
                        }
                        Ok(None) => return,
                        Err(e) => {
                            return self.net.close(
                                key,
                                &format!("P2P protocol violation: {e}"),
                                false,
                            );
                        }
                    }
                }
            }
            // Replies land in the write buffers now, so the bound above sees them.
            chord::drain(&mut self.node, &mut self.net);
        }
    }
}

fn client_id(key: usize, generation: u32) -> ClientId {
    ((generation as u64) << 32) | key as u64
}

enum ReadOutcome {
    /// The socket has nothing more for now.
    Drained,
    /// The receive buffer reached its bound; more may be waiting.
    BufferFull,
    /// End of stream or a read error.
    Closed,
}

/// A non-blocking connect to `peer` from our own IP: peers check that a HELLO comes from the IP it
/// advertises (several nodes on one host each have an address of their own, 127.0.0.x in tests).
fn connect_from(ip: std::net::IpAddr, peer: SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::for_address(peer), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    if !ip.is_unspecified() && ip.is_ipv4() == peer.is_ipv4() {
        socket.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
    }
    match socket.connect(&SockAddr::from(peer)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// A listener on `addr`, registered for `token`.
fn listen(addr: SocketAddr, registry: &mio::Registry, token: usize) -> io::Result<TcpListener> {
    let mut listener = TcpListener::bind(addr)?;
    registry.register(&mut listener, Token(token), Interest::READABLE)?;
    Ok(listener)
}

impl Net {
    fn new(cfg: &Config, registry: mio::Registry, token_base: usize, node: &Node) -> Net {
        let mut greeting = BytesMut::new();
        node.greeting().encode(&mut greeting);
        Net {
            registry,
            token_base,
            cfg: cfg.reactor.clone(),
            conns: Slab::new(),
            peers: HashMap::new(),
            idle: TimerWheel::new(100, 512, Time::ZERO),
            next_generation: 0,
            dirty: Vec::new(),
            resumed: Vec::new(),
            scratch: vec![0u8; READ_CHUNK].into_boxed_slice(),
            inputs: Vec::new(),
            greeting,
            me: node.me(),
            start: Instant::now(),
        }
    }

    /// Reads into the connection's buffer until WouldBlock, end of stream or the buffer bound (the
    /// largest frame plus one read). Reads go through one reused scratch buffer, so only what
    /// arrived is appended (no zeroing per read).
    fn read_some(&mut self, key: usize, now: Time, to_end: bool) -> ReadOutcome {
        let Some(c) = self.conns.get_mut(key) else {
            return ReadOutcome::Closed;
        };
        let frame_max = match c.role {
            Role::Api => u16::MAX as usize,
            Role::Peer => self.cfg.p2p_frame_bytes_max,
        };
        c.last_active = now;
        while c.rbuf.len() < frame_max + READ_CHUNK {
            match c.stream.read(&mut self.scratch[..]) {
                Ok(0) => return ReadOutcome::Closed,
                // A short read emptied the socket: anything arriving later raises a new edge, so
                // the read that would only say WouldBlock is saved (one syscall per message). Not
                // when the other side has closed: its end of stream raises no further edge.
                Ok(n) if n < self.scratch.len() && !to_end => {
                    c.rbuf.extend_from_slice(&self.scratch[..n]);
                    return ReadOutcome::Drained;
                }
                Ok(n) => c.rbuf.extend_from_slice(&self.scratch[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return ReadOutcome::Drained,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("read from {} failed: {e}", c.remote);
                    return ReadOutcome::Closed;
                }
            }
        }
        ReadOutcome::BufferFull
    }

    fn now(&self) -> Time {
        Time(self.start.elapsed().as_millis() as u64)
    }

    fn add(
        &mut self,
        mut stream: TcpStream,
        role: Role,
        remote: SocketAddr,
        outbound: bool,
    ) -> io::Result<usize> {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let interest = if outbound {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        self.registry.register(
            &mut stream,
            Token(self.token_base + FIRST_CONN + key),
            interest,
        )?;
        self.next_generation = self.next_generation.wrapping_add(1);
        let now = Time(self.start.elapsed().as_millis() as u64);
        entry.insert(Conn::new(
            stream,
            role,
            self.next_generation,
            remote,
            outbound,
            now,
        ));
        let timeout_ms = self.idle_timeout_ms(role);
        let generation = self.next_generation;
        self.conns[key].idle_timer = Some(self.idle.insert(now + timeout_ms, (key, generation)));
        if role == Role::Peer {
            self.peers.entry(remote).or_insert(key);
        }
        Ok(key)
    }

    fn idle_timeout_ms(&self, role: Role) -> u64 {
        1000 * match role {
            Role::Api => self.cfg.api_idle_timeout_s,
            Role::Peer => self.cfg.peer_idle_timeout_s,
        }
    }

    /// The connection to send to `peer` on: an existing one, or a new outbound one that starts with HELLO.
    fn conn_to(&mut self, peer: SocketAddr) -> Option<usize> {
        if let Some(&key) = self.peers.get(&peer) {
            return Some(key);
        }
        if self.conns.len() >= self.cfg.connections_max {
            log::warn!(
                "[{}] cannot dial {}: connections_max reached",
                self.me.id.short(),
                peer
            );
            return None;
        }
        let stream = match connect_from(self.me.addr.ip(), peer) {
            Ok(s) => s,
            Err(e) => {
                log::debug!("[{}] connect to {} failed: {e}", self.me.id.short(), peer);
                self.inputs.push(Input::PeerUnreachable { peer });
                return None;
            }
        };
        let _ = stream.set_nodelay(true);
        let key = self.add(stream, Role::Peer, peer, true).ok()?;
        self.peers.insert(peer, key);
        let greeting = &self.greeting;
        self.conns[key].wbuf.extend_from_slice(greeting);
        Some(key)
    }

    /// The connection `key` speaks for `node` (its HELLO said so): frames to it may use it.
    fn name_peer(&mut self, key: usize, node: Peer) {
        let c = &mut self.conns[key];
        if self.peers.get(&c.peer_name) == Some(&key) {
            self.peers.remove(&c.peer_name);
        }
        c.peer_name = node.addr;
        self.peers.entry(node.addr).or_insert(key);
    }

    fn on_writable(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if c.outbound && !c.connected {
            match c.stream.take_error() {
                Ok(None) if c.stream.peer_addr().is_ok() => c.connected = true,
                Ok(None) => return, // not yet connected (spurious wake-up)
                _ => return self.close(key, "connect failed", true),
            }
        }
        self.flush(key);
    }

    /// Writes the buffer until it is empty or the socket is full; keeps WRITABLE interest only
    /// while bytes remain, and resumes reading once the buffer has drained below half.
    fn flush(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if !c.connected {
            return;
        }
        while !c.wbuf.is_empty() {
            match c.stream.write(&c.wbuf) {
                Ok(0) => return self.close(key, "write returned 0", true),
                // Moves the start only: no shared handle is made, the buffer is reused.
                Ok(n) => c.wbuf.advance(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return self.close(key, &format!("write failed: {e}"), true),
            }
        }
        let below_half = c.wbuf.len() < self.cfg.connection_buffer_bytes_max / 2;
        if c.hung_up {
            // Answer every request read before the end of stream, then close.
            if c.wbuf.is_empty() && c.answered_all {
                return self.close(key, "closed by the other side", false);
            }
            if below_half && (!c.rbuf.is_empty() || !c.hangup_reported) {
                self.resumed.push(key);
            }
        }
        let want_writable = !c.wbuf.is_empty();
        let resume = c.reading_paused && !c.hung_up && below_half;
        if resume {
            c.reading_paused = false;
            self.resumed.push(key);
        }
        if want_writable != c.writable_interest || resume {
            c.writable_interest = want_writable;
            self.reregister(key);
        }
    }

    /// End of stream from the other side. A client still gets the answers to what it asked (a
    /// half-closed socket can still be written), then the connection closes; a peer closes at once.
    fn hang_up(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.role == Role::Peer {
            return self.close(key, "closed by the other side", false);
        }
        c.hung_up = true;
        c.reading_paused = true;
        self.reregister(key);
        self.flush(key);
    }

    fn pause_reading(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if !c.reading_paused {
            log::debug!(
                "pausing reads from {}: {} bytes unsent",
                c.remote,
                c.wbuf.len()
            );
            c.reading_paused = true;
            self.reregister(key);
        }
    }

    fn reregister(&mut self, key: usize) {
        let c = &mut self.conns[key];
        let interest = match (c.reading_paused, c.writable_interest) {
            (false, false) => Interest::READABLE,
            (false, true) => Interest::READABLE | Interest::WRITABLE,
            // Never both off: keep WRITABLE so a drained buffer wakes us.
            (true, _) => Interest::WRITABLE,
        };
        if let Err(e) = self.registry.reregister(
            &mut c.stream,
            Token(self.token_base + FIRST_CONN + key),
            interest,
        ) {
            log::warn!("reregister failed for {}: {e}", c.remote);
        }
    }

    fn close(&mut self, key: usize, why: &str, unreachable: bool) {
        let Some(mut c) = self.conns.try_remove(key) else {
            return;
        };
        let _ = self.registry.deregister(&mut c.stream);
        if let Some(t) = c.idle_timer {
            self.idle.cancel(t);
        }
        if self.peers.get(&c.peer_name) == Some(&key) {
            self.peers.remove(&c.peer_name);
        }
        let level = if unreachable || why.contains("violation") {
            log::Level::Info
        } else {
            log::Level::Debug
        };
        log::log!(
            level,
            "[{}] closing {:?} connection with {} ({}): {}",
            self.me.id.short(),
            c.role,
            c.peer_name,
            c.remote,
            why
        );
        if unreachable && c.role == Role::Peer && c.outbound {
            self.inputs
                .push(Input::PeerUnreachable { peer: c.peer_name });
        }
        if c.role == Role::Api {
            let client = client_id(key, c.generation);
            self.inputs.push(Input::ClientGone { client });
        }
    }

    fn expire_idle(&mut self, now: Time) {
        let mut expired = Vec::new();
        self.idle.expire(now, &mut expired);
        for (key, generation) in expired {
            let Some(c) = self.conns.get(key).filter(|c| c.generation == generation) else {
                continue;
            };
            let deadline = c.last_active + self.idle_timeout_ms(c.role);
            if deadline > now {
                let t = self.idle.insert(deadline, (key, generation));
                self.conns[key].idle_timer = Some(t);
            } else {
                self.conns[key].idle_timer = None;
                self.close(key, "idle", false);
            }
        }
    }

    /// The connection of `client`, unless it has gone (its slab slot may hold another by now).
    fn live_client(&self, client: ClientId) -> Option<usize> {
        let (key, generation) = ((client & 0xffff_ffff) as usize, (client >> 32) as u32);
        self.conns
            .get(key)
            .filter(|c| c.generation == generation)
            .map(|_| key)
    }

    fn mark_dirty(&mut self, key: usize) {
        if self.conns[key].wbuf.is_empty() {
            self.dirty.push(key);
        }
    }
}

impl Outputs for Net {
    fn transmit(&mut self, t: Transmit) {
        let Some(key) = self.conn_to(t.to) else {
            return;
        };
        let limit = self
            .cfg
            .connection_buffer_bytes_max
            .max(4 * self.cfg.p2p_frame_bytes_max);
        self.mark_dirty(key);
        let wbuf = &mut self.conns[key].wbuf;
        let before = wbuf.len();
        if before + t.frame.encode(wbuf) > limit {
            wbuf.truncate(before);
            log::warn!(
                "[{}] send buffer to {} full; dropping a type {} frame",
                self.me.id.short(),
                t.to,
                t.frame.msg.msg_type()
            );
        }
    }

    fn client_reply(&mut self, client: ClientId, reply: ApiReply) {
        let Some(key) = self.live_client(client) else {
            return; // the client has gone
        };
        self.mark_dirty(key);
        reply.encode(&mut self.conns[key].wbuf);
    }

    fn peer_named(&mut self, conn: SocketAddr, node: Peer) {
        if let Some(&key) = self.peers.get(&conn) {
            self.name_peer(key, node);
        }
    }

    fn client_done(&mut self, client: ClientId) {
        let Some(key) = self.live_client(client) else {
            return;
        };
        self.conns[key].answered_all = true;
        self.mark_dirty(key);
    }
}

/// A node running on its own thread, or sharing one ([`hub`]); for tests, testnets and benches.
/// Dropping it stops the node.
pub struct RunningNode {
    pub api: SocketAddr,
    pub p2p: SocketAddr,
    pub id: crate::id::Id,
    stop: StopHandle,
    exit: Exit,
}

/// How to wait for a stopped node to be gone.
enum Exit {
    Thread(std::thread::JoinHandle<io::Result<()>>),
    /// The shared thread says so when it has dropped the node.
    Shared(std::sync::mpsc::Receiver<()>),
    Gone,
}

impl RunningNode {
    /// Binds a node for `cfg` and runs it on a new thread.
    pub fn spawn(cfg: &Config, seed: u64) -> io::Result<RunningNode> {
        let reactor = Reactor::bind(cfg, seed)?;
        let (api, p2p, id, stop) = RunningNode::names(&reactor);
        let thread = std::thread::Builder::new()
            .name(format!("node-{}", p2p.port()))
            .spawn(move || reactor.run())?;
        Ok(RunningNode {
            api,
            p2p,
            id,
            stop,
            exit: Exit::Thread(thread),
        })
    }

    /// A node run by a shared thread, which says on `exit` when it has dropped the node.
    fn shared(reactor: &Reactor, exit: std::sync::mpsc::Receiver<()>) -> RunningNode {
        let (api, p2p, id, stop) = RunningNode::names(reactor);
        RunningNode {
            api,
            p2p,
            id,
            stop,
            exit: Exit::Shared(exit),
        }
    }

    fn names(reactor: &Reactor) -> (SocketAddr, SocketAddr, crate::id::Id, StopHandle) {
        (
            reactor.api_addr(),
            reactor.p2p_addr(),
            reactor.node().me().id,
            reactor.stop_handle(),
        )
    }

    /// Leaves the ring gracefully (values handed on) and waits until the node is gone.
    pub fn leave(mut self) {
        self.stop.leave();
        self.join();
    }

    /// Stops the node abruptly, like a crash, and waits until it is gone.
    pub fn kill(mut self) {
        self.stop.kill();
        self.join();
    }

    fn join(&mut self) {
        match std::mem::replace(&mut self.exit, Exit::Gone) {
            Exit::Thread(t) => {
                let _ = t.join();
            }
            // An error means the shared thread has ended: the node is gone too.
            Exit::Shared(rx) => {
                let _ = rx.recv();
            }
            Exit::Gone => {}
        }
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        self.stop.kill();
        self.join();
    }
}
