//! The production driver: one thread, one `mio::Poll`, both listeners and every connection in one
//! `Slab` (`net.rs`), timer wheels for idle connections, frame deadlines and rate-limit pauses, and
//! the sans-IO [`Node`] fed from the sockets.
//!
//! Owns the sockets, buffers and timers, and nothing of the protocol: bytes are decoded here into
//! typed requests and frames (HELLO included) and handed to the core as [`Input`]s; the core's
//! outputs are encoded into per-connection write buffers that are flushed once per loop turn
//! (batched writes). The core names peers (HELLO) and says when a hung-up client is answered.
//!
//! The limits that keep one peer from starving the others are enforced here, on bytes and
//! connections only (`limits.rs`): separate connection budgets for the API and P2P ports, a cap
//! on inbound P2P connections per IP, a message token bucket per peer IP (reading pauses, nothing
//! is dropped), a deadline for every frame begun (slowloris), and exponential backoff of dials to
//! peers that do not answer. Every refusal is counted ([`Refusals`]) and logged at most once per
//! IP and kind every 10 s, with a summary line at most every 10 s.

mod conn;
pub mod hub;
mod limits;
mod net;
mod refusals;
mod running;

pub use refusals::{Refusal, Refusals};
pub use running::RunningNode;

use crate::chord::{self, Input, Node};
use crate::config::Config;
use crate::time::Time;
use conn::Role;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use net::{Net, ReadOutcome};
use refusals::Counters;
use std::io::{self, ErrorKind, Read};
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
        let counters = Arc::new(Counters::default());
        let net = Net::new(cfg, registry.try_clone()?, token_base, &node, counters);
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

    /// What this node has refused so far (connections, dials, frames; see [`Refusal`]).
    pub fn refusals(&self) -> Refusals {
        self.net.refusals()
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
        let refused = self.net.refusals().total();
        if refused != self.node.stats().driver_refusals {
            let total = refused;
            self.node.handle_input(Input::DriverRefusals { total }, now);
        }
        if self.next_timeout.is_some_and(|t| t <= now) {
            self.node.handle_input(Input::Timeout, now);
        }
        self.net.on_time(now);
        self.next_timeout = self.flush_outputs();
        while !self.net.resumed.is_empty() {
            for key in std::mem::take(&mut self.net.resumed) {
                self.resume(key);
            }
            self.next_timeout = self.flush_outputs();
        }
    }

    /// Reads again from a connection whose backpressure or rate-limit pause is over.
    fn resume(&mut self, key: usize) {
        match self.net.conns.get(key) {
            // Its socket is at its end: only the frames already read remain.
            Some(c) if c.hung_up => {
                self.handle_frames(key, self.net.now());
                self.net.close_if_drained(key);
            }
            Some(c) if c.reads_blocked() => {}
            Some(_) => self.on_readable(key, false),
            None => {}
        }
    }

    fn stopped(&self) -> bool {
        log::info!("[{}] stopping", self.node.me().id.short());
        false
    }

    /// When the next timer is due, in the reactor's clock (node timers, connection timers, and
    /// while leaving a 20 ms check of the hand-off).
    fn next_wake(&self) -> Option<Time> {
        let now = self.net.now();
        [
            self.next_timeout,
            self.net.next_deadline(),
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
        self.net.follow_id(&self.node);
        let mut next = chord::drive(&mut self.node, &mut self.net);
        while !self.net.inputs.is_empty() {
            let now = self.net.now();
            for input in std::mem::take(&mut self.net.inputs) {
                self.node.handle_input(input, now);
            }
            self.net.follow_id(&self.node);
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

    /// Takes every waiting connection on the `role` port; the budgets decide which stay.
    fn accept(&mut self, role: Role) {
        loop {
            let listener = match role {
                Role::Api => &self.api_listener,
                Role::Peer => &self.p2p_listener,
            };
            match listener.accept() {
                Ok((stream, remote)) => self.net.admit(stream, role, remote),
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
                .is_some_and(|c| !c.reads_blocked() && c.connected)
        {
            self.on_readable(key, to_end);
        }
    }

    /// Reads what the socket has, a buffer's worth at a time, handling whole frames after each
    /// (stopping when the reply buffer is full, backpressure, or the peer's IP is out of tokens,
    /// the rate limit). Epoll is edge-triggered, so reading
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
                    if self.net.conns.get(key).is_none_or(|c| c.reads_blocked()) =>
                {
                    return;
                }
                ReadOutcome::BufferFull => {}
            }
        }
    }

    /// Hands the connection's whole frames to the core one at a time, each followed by a drain so
    /// that its replies land in the write buffers before the next (the backpressure bound sees them).
    fn handle_frames(&mut self, key: usize, now: Time) {
        while let Some(input) = self.net.next_input(key, now) {
            self.node.handle_input(input, now);
            chord::drain(&mut self.node, &mut self.net);
        }
    }
}

/// A listener on `addr`, registered for `token`.
fn listen(addr: SocketAddr, registry: &mio::Registry, token: usize) -> io::Result<TcpListener> {
    let mut listener = TcpListener::bind(addr)?;
    registry.register(&mut listener, Token(token), Interest::READABLE)?;
    Ok(listener)
}
