//! The connections of one reactor, kept apart from the node so the node can write into them
//! through [`Outputs`]: the slab, buffers, timers, and the limits that hold each peer to its share
//! (connection budgets, per-IP caps and token buckets, frame deadlines, dial backoff). Decodes
//! bytes into [`Input`]s and encodes outputs into bytes; decides nothing of the protocol.

use super::conn::{Conn, Role};
use super::limits::{DialBackoff, Direction, IpKey, LOG_INTERVAL_MS, LogLimiter, PeerIps};
use super::refusals::{Counters, Refusal, Refusals};
use super::{FIRST_CONN, READ_CHUNK};
use crate::chord::{ClientId, Input, Node, Outputs, Transmit};
use crate::config::{Config, ReactorConfig};
use crate::id::shared_by_the_host;
use crate::msg::Peer;
use crate::time::Time;
use crate::wheel::TimerWheel;
use crate::wire::api::{self, ApiReply};
use crate::wire::p2p;
use bytes::{Buf, BytesMut};
use mio::net::TcpStream;
use mio::{Interest, Token};
use slab::Slab;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

pub(super) struct Net {
    pub(super) registry: mio::Registry,
    /// Added to every token this reactor registers.
    pub(super) token_base: usize,
    cfg: ReactorConfig,
    pub(super) conns: Slab<Conn>,
    /// Open connections per port, each against its own budget.
    api_conns: usize,
    p2p_conns: usize,
    /// Peer name → connection used to send to it.
    peers: HashMap<SocketAddr, usize>,
    idle: TimerWheel<(usize, u32)>,
    /// Partial frames' deadlines (slowloris).
    frame_deadlines: TimerWheel<(usize, u32)>,
    /// When rate-limited connections are read again.
    throttles: TimerWheel<(usize, u32)>,
    ips: PeerIps,
    backoff: DialBackoff,
    log_limit: LogLimiter,
    counters: Arc<Counters>,
    /// The refusal counts at the last summary line, and when the next may be logged.
    summary: (Refusals, Time),
    next_generation: u32,
    /// Connections with bytes to flush this turn.
    pub(super) dirty: Vec<usize>,
    /// Connections whose reading resumed (after backpressure or a rate-limit pause): their
    /// buffered frames wait.
    pub(super) resumed: Vec<usize>,
    scratch: Box<[u8]>,
    /// What happened while the node was borrowed (unreachable peers, closed clients); given to
    /// the node after the drive.
    pub(super) inputs: Vec<Input>,
    /// The node's greeting (HELLO), encoded: the first bytes of every connection we dial.
    greeting: BytesMut,
    me: Peer,
    pub(super) start: Instant,
}

pub(super) enum ReadOutcome {
    /// The socket has nothing more for now.
    Drained,
    /// The receive buffer reached its bound; more may be waiting.
    BufferFull,
    /// End of stream or a read error.
    Closed,
}

/// Why a connection ends: whether the peer failed us, and how it is logged.
pub(super) enum Closing {
    /// Nothing moved for its idle timeout.
    Idle,
    /// The other side ended its stream.
    EndOfStream,
    ConnectFailed,
    WriteFailed(io::Error),
    /// Bytes that break the protocol.
    Violation(String),
    /// A frame begun did not complete within `frame_deadline_ms`.
    FrameDeadline,
}

impl Closing {
    /// The peer failed: a dialled peer is reported unreachable.
    fn is_failure(&self) -> bool {
        matches!(self, Closing::ConnectFailed | Closing::WriteFailed(_))
    }

    /// Closes that are refusals are counted and logged through the log limiter.
    fn refusal(&self) -> Option<Refusal> {
        match self {
            Closing::Violation(_) => Some(Refusal::ProtocolViolation),
            Closing::FrameDeadline => Some(Refusal::FrameDeadline),
            _ => None,
        }
    }
}

impl fmt::Display for Closing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Closing::Idle => write!(f, "idle"),
            Closing::EndOfStream => write!(f, "closed by the other side"),
            Closing::ConnectFailed => write!(f, "connect failed"),
            Closing::WriteFailed(e) => write!(f, "write failed: {e}"),
            Closing::Violation(why) => write!(f, "{why}"),
            Closing::FrameDeadline => {
                write!(f, "a frame did not complete within frame_deadline_ms")
            }
        }
    }
}

impl Net {
    pub(super) fn new(
        cfg: &Config,
        registry: mio::Registry,
        token_base: usize,
        node: &Node,
        counters: Arc<Counters>,
    ) -> Net {
        let mut greeting = BytesMut::new();
        node.greeting().encode(&mut greeting);
        Net {
            registry,
            token_base,
            cfg: cfg.reactor.clone(),
            conns: Slab::new(),
            api_conns: 0,
            p2p_conns: 0,
            peers: HashMap::new(),
            idle: TimerWheel::new(100, 512, Time::ZERO),
            frame_deadlines: TimerWheel::new(100, 512, Time::ZERO),
            throttles: TimerWheel::new(10, 256, Time::ZERO),
            ips: PeerIps::new(cfg.reactor.peer_msgs_per_s),
            backoff: DialBackoff::default(),
            log_limit: LogLimiter::default(),
            counters,
            summary: (Refusals::default(), Time(LOG_INTERVAL_MS)),
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

    /// A joining node may take another of its slot ids (issue 11): connections dialled from now
    /// on greet with the id it has now.
    pub(super) fn follow_id(&mut self, node: &Node) {
        if node.me() != self.me {
            self.me = node.me();
            self.greeting.clear();
            node.greeting().encode(&mut self.greeting);
        }
    }

    pub(super) fn now(&self) -> Time {
        Time(self.start.elapsed().as_millis() as u64)
    }

    pub(super) fn refusals(&self) -> Refusals {
        self.counters.snapshot()
    }

    pub(super) fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// The earliest of the connection timers (idle, frame deadlines, rate-limit pauses).
    pub(super) fn next_deadline(&self) -> Option<Time> {
        [
            self.idle.next_deadline(),
            self.frame_deadlines.next_deadline(),
            self.throttles.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires the connection timers that are due, and logs the refusal summary when it is time.
    pub(super) fn on_time(&mut self, now: Time) {
        self.expire_idle(now);
        self.expire_frame_deadlines(now);
        self.expire_throttles(now);
        self.summarize(now);
    }

    /// A connection from `remote` on the `role` port, unless that port's budget (or for a peer,
    /// its IP's share) is used up: then it is dropped, counted, and logged at most once a while.
    pub(super) fn admit(&mut self, stream: TcpStream, role: Role, remote: SocketAddr) {
        if let Err((kind, key, max)) = self.room_for(role, remote.ip()) {
            return self.refuse(
                kind,
                remote.ip(),
                format_args!("refusing {role:?} connection from {remote}: {key} ({max}) reached"),
            );
        }
        let _ = stream.set_nodelay(true);
        if let Err(e) = self.add(stream, role, remote, Direction::Inbound) {
            log::warn!("cannot register connection from {remote}: {e}");
        }
    }

    /// Room for one more inbound connection? Else the refusal and the limit (key, value).
    fn room_for(&self, role: Role, ip: IpAddr) -> Result<(), (Refusal, &'static str, usize)> {
        let cfg = &self.cfg;
        match role {
            Role::Api if self.api_conns >= cfg.api_connections_max => Err((
                Refusal::ApiConnections,
                "api_connections_max",
                cfg.api_connections_max,
            )),
            Role::Api => Ok(()),
            Role::Peer if self.p2p_conns >= cfg.connections_max => Err((
                Refusal::P2pConnections,
                "connections_max",
                cfg.connections_max,
            )),
            Role::Peer
                if !shared_by_the_host(ip)
                    && self.ips.inbound(IpKey::of(ip)) >= cfg.p2p_connections_per_ip_max =>
            {
                Err((
                    Refusal::P2pConnectionsPerIp,
                    "p2p_connections_per_ip_max",
                    cfg.p2p_connections_per_ip_max,
                ))
            }
            Role::Peer => Ok(()),
        }
    }

    /// Counts a refusal; logs it unless a line of this kind for this IP went out lately.
    fn refuse(&mut self, kind: Refusal, ip: IpAddr, what: fmt::Arguments<'_>) {
        self.counters.count(kind);
        let now = self.now();
        if self.log_limit.allow(IpKey::of(ip), kind, now) {
            log::log!(
                kind.log_level(),
                "[{}] {what} (more of this kind from {} counted, not logged, for {} s)",
                self.me.id.short(),
                IpKey::of(ip),
                LOG_INTERVAL_MS / 1000
            );
        }
    }

    /// At most every [`LOG_INTERVAL_MS`]: one info line with what was refused since the last one
    /// (when anything was); also forgets peer IPs and log keys whose state has run out.
    fn summarize(&mut self, now: Time) {
        let (last, next_at) = self.summary;
        if now < next_at {
            return;
        }
        let counts = self.counters.snapshot();
        let new = counts.since(&last);
        if new.total() > 0 {
            log::info!(
                "[{}] refused in the last {} s: {new}",
                self.me.id.short(),
                (now.ms_since(next_at) + LOG_INTERVAL_MS) / 1000
            );
        }
        self.summary = (counts, now + LOG_INTERVAL_MS);
        self.ips.sweep(now);
        self.log_limit.sweep(now);
    }

    /// Reads into the connection's buffer until WouldBlock, end of stream or the buffer bound (the
    /// largest frame plus one read). Reads go through one reused scratch buffer, so only what
    /// arrived is appended (no zeroing per read).
    pub(super) fn read_some(&mut self, key: usize, now: Time, to_end: bool) -> ReadOutcome {
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

    /// The next whole frame in the connection's buffer as the core's input, if it may be handed in
    /// now: not while its reply buffer is full (backpressure) or its peer IP is out of tokens (rate
    /// limit; the frame stays buffered). Bytes that break the protocol close the connection.
    pub(super) fn next_input(&mut self, key: usize, now: Time) -> Option<Input> {
        let c = self.conns.get_mut(key)?;
        if c.wbuf.len() >= self.cfg.connection_buffer_bytes_max {
            self.pause_reading(key);
            return None;
        }
        match c.role {
            Role::Api => self.next_request(key, now),
            Role::Peer => self.next_peer_frame(key, now),
        }
    }

    fn next_request(&mut self, key: usize, now: Time) -> Option<Input> {
        let c = &mut self.conns[key];
        let client = client_id(key, c.generation);
        match api::decode_request(&mut c.rbuf) {
            Ok(Some(req)) => {
                c.partial_since = None;
                Some(Input::ClientRequest { client, req })
            }
            // After the end of stream a partial frame can never complete: every request is in,
            // the node says when every answer is out.
            Ok(None) if c.hung_up => {
                c.rbuf.clear();
                let first = !std::mem::replace(&mut c.hangup_reported, true);
                first.then_some(Input::ClientHungUp { client })
            }
            Ok(None) => {
                self.note_partial(key, now);
                None
            }
            Err(e) => {
                let why = format!("API protocol violation: {e}");
                self.close(key, Closing::Violation(why));
                None
            }
        }
    }

    fn next_peer_frame(&mut self, key: usize, now: Time) -> Option<Input> {
        let c = &mut self.conns[key];
        if c.rbuf.is_empty() {
            c.partial_since = None;
            return None;
        }
        if let Some(slot) = c.ip_slot
            && let Err(wait_ms) = self.ips.ready(slot, now)
        {
            self.throttle(key, now, wait_ms);
            return None;
        }
        match p2p::decode_frame(&mut c.rbuf, self.cfg.p2p_frame_bytes_max) {
            Ok(Some(frame)) => {
                c.partial_since = None;
                if let Some(slot) = c.ip_slot {
                    self.ips.spend(slot);
                }
                if !c.answered {
                    c.answered = true;
                    self.backoff.answered(c.peer_name);
                }
                let from = c.peer_name;
                Some(Input::PeerFrame { from, frame })
            }
            Ok(None) => {
                self.note_partial(key, now);
                None
            }
            Err(e) => {
                let why = format!("P2P protocol violation: {e}");
                self.close(key, Closing::Violation(why));
                None
            }
        }
    }

    /// The buffer ends in a partial frame (or is empty): remember when that frame began, and make
    /// sure a check of its deadline is pending.
    fn note_partial(&mut self, key: usize, now: Time) {
        let c = &mut self.conns[key];
        if c.rbuf.is_empty() {
            c.partial_since = None;
            return;
        }
        if c.partial_since.is_some() {
            return;
        }
        c.partial_since = Some(now);
        if c.frame_timer.is_none() {
            let deadline = now + self.cfg.frame_deadline_ms;
            c.frame_timer = Some(self.frame_deadlines.insert(deadline, (key, c.generation)));
        }
    }

    /// Slowloris: closes connections whose partial frame has been incomplete for longer than
    /// `frame_deadline_ms`; re-checks later the ones whose current frame began later.
    fn expire_frame_deadlines(&mut self, now: Time) {
        let mut due = Vec::new();
        self.frame_deadlines.expire(now, &mut due);
        for (key, generation) in due {
            let Some(c) = timed_conn(&mut self.conns, key, generation) else {
                continue;
            };
            c.frame_timer = None;
            let Some(since) = c.partial_since else {
                continue;
            };
            let deadline = since + self.cfg.frame_deadline_ms;
            if deadline > now {
                c.frame_timer = Some(self.frame_deadlines.insert(deadline, (key, generation)));
            } else {
                self.close(key, Closing::FrameDeadline);
            }
        }
    }

    /// Stops reading a peer connection whose IP is out of tokens until `wait_ms` have passed. The
    /// frames already read stay buffered; unread bytes stay in the kernel, and TCP's flow control
    /// slows the sender.
    fn throttle(&mut self, key: usize, now: Time, wait_ms: u64) {
        let c = &mut self.conns[key];
        c.throttled = true;
        // The hold-up is ours: a frame held back is not the sender's to finish in time.
        c.partial_since = None;
        let remote = c.remote;
        self.throttles.insert(now + wait_ms, (key, c.generation));
        self.reregister(key);
        let rate = self.cfg.peer_msgs_per_s;
        self.refuse(
            Refusal::Throttled,
            remote.ip(),
            format_args!(
                "pausing reads from peer {remote}: its IP sent past peer_msgs_per_s ({rate})"
            ),
        );
    }

    /// Rate-limited connections whose pause is over are read again (through `resumed`).
    fn expire_throttles(&mut self, now: Time) {
        let mut due = Vec::new();
        self.throttles.expire(now, &mut due);
        for (key, generation) in due {
            let Some(c) = timed_conn(&mut self.conns, key, generation) else {
                continue;
            };
            c.throttled = false;
            if !c.hung_up {
                self.reregister(key);
            }
            self.resumed.push(key);
        }
    }

    fn add(
        &mut self,
        mut stream: TcpStream,
        role: Role,
        remote: SocketAddr,
        direction: Direction,
    ) -> io::Result<usize> {
        let key = self.conns.vacant_key();
        let interest = match direction {
            Direction::Outbound => Interest::READABLE | Interest::WRITABLE,
            Direction::Inbound => Interest::READABLE,
        };
        let token = Token(self.token_base + FIRST_CONN + key);
        self.registry.register(&mut stream, token, interest)?;
        self.next_generation = self.next_generation.wrapping_add(1);
        let generation = self.next_generation;
        let now = self.now();
        let mut c = Conn::new(stream, role, generation, remote, direction, now);
        let timeout_ms = self.idle_timeout_ms(role);
        c.idle_timer = Some(self.idle.insert(now + timeout_ms, (key, generation)));
        match role {
            Role::Api => self.api_conns += 1,
            Role::Peer => {
                self.p2p_conns += 1;
                // 127.0.0.1 and ::1 are every local process's address (several nodes of one host
                // share them, told apart by port): no per-IP limit applies to this host.
                if !shared_by_the_host(remote.ip()) {
                    c.ip_slot = Some(self.ips.attach(IpKey::of(remote.ip()), direction, now));
                }
                self.peers.entry(remote).or_insert(key);
            }
        }
        let inserted = self.conns.insert(c);
        debug_assert_eq!(inserted, key);
        Ok(key)
    }

    fn idle_timeout_ms(&self, role: Role) -> u64 {
        1000 * match role {
            Role::Api => self.cfg.api_idle_timeout_s,
            Role::Peer => self.cfg.peer_idle_timeout_s,
        }
    }

    /// The connection to send to `peer` on: an existing one, or a new outbound one that starts
    /// with HELLO. A peer whose recent dials got no answer is not dialled while it backs off: the
    /// core hears at once that it is unreachable and fails over.
    fn conn_to(&mut self, peer: SocketAddr) -> Option<usize> {
        if let Some(&key) = self.peers.get(&peer) {
            return Some(key);
        }
        let now = self.now();
        if !self.backoff.allows(peer, now) {
            self.refuse(
                Refusal::DialBackoff,
                peer.ip(),
                format_args!("not dialling {peer}: its last dials got no answer (backing off)"),
            );
            self.unreachable(peer);
            return None;
        }
        if self.p2p_conns >= self.cfg.connections_max {
            let max = self.cfg.connections_max;
            self.refuse(
                Refusal::DialConnections,
                peer.ip(),
                format_args!("cannot dial {peer}: connections_max ({max}) reached"),
            );
            return None;
        }
        self.dial(peer, now)
    }

    fn dial(&mut self, peer: SocketAddr, now: Time) -> Option<usize> {
        let stream = match connect_from(self.me.addr.ip(), peer) {
            Ok(s) => s,
            Err(e) => {
                log::debug!("[{}] connect to {} failed: {e}", self.me.id.short(), peer);
                self.backoff.failed(peer, now);
                self.unreachable(peer);
                return None;
            }
        };
        let _ = stream.set_nodelay(true);
        let key = self
            .add(stream, Role::Peer, peer, Direction::Outbound)
            .ok()?;
        self.peers.insert(peer, key);
        let greeting = &self.greeting;
        self.conns[key].wbuf.extend_from_slice(greeting);
        Some(key)
    }

    /// Tells the core `peer` is unreachable (once per batch of inputs: one is enough for it to
    /// fail every request to that peer over).
    fn unreachable(&mut self, peer: SocketAddr) {
        let known = self
            .inputs
            .iter()
            .any(|i| matches!(i, Input::PeerUnreachable { peer: p } if *p == peer));
        if !known {
            self.inputs.push(Input::PeerUnreachable { peer });
        }
    }

    /// The connection `key` speaks for `node` (its HELLO said so): frames to it may use it, and
    /// dials to it need not back off.
    fn name_peer(&mut self, key: usize, node: Peer) {
        let c = &mut self.conns[key];
        if self.peers.get(&c.peer_name) == Some(&key) {
            self.peers.remove(&c.peer_name);
        }
        c.peer_name = node.addr;
        self.peers.entry(node.addr).or_insert(key);
        self.backoff.answered(node.addr);
    }

    pub(super) fn on_writable(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if c.outbound() && !c.connected {
            match c.stream.take_error() {
                Ok(None) if c.stream.peer_addr().is_ok() => c.connected = true,
                Ok(None) => return, // not yet connected (spurious wake-up)
                _ => return self.close(key, Closing::ConnectFailed),
            }
        }
        self.flush(key);
    }

    /// Writes the buffer until it is empty or the socket is full; keeps WRITABLE interest only
    /// while bytes remain, and resumes reading once the buffer has drained below half.
    pub(super) fn flush(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if !c.connected {
            return;
        }
        while !c.wbuf.is_empty() {
            match c.stream.write(&c.wbuf) {
                Ok(0) => return self.close(key, Closing::WriteFailed(ErrorKind::WriteZero.into())),
                // Moves the start only: no shared handle is made, the buffer is reused.
                Ok(n) => c.wbuf.advance(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return self.close(key, Closing::WriteFailed(e)),
            }
        }
        let below_half = c.wbuf.len() < self.cfg.connection_buffer_bytes_max / 2;
        if c.hung_up && c.role == Role::Api {
            // Answer every request read before the end of stream, then close.
            if c.wbuf.is_empty() && c.answered_all {
                return self.close(key, Closing::EndOfStream);
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
    /// half-closed socket can still be written), then the connection closes. A peer closes at
    /// once, unless frames it sent wait behind its rate limit: they are handled first.
    pub(super) fn hang_up(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.role == Role::Peer && !c.throttled {
            return self.close(key, Closing::EndOfStream);
        }
        c.hung_up = true;
        c.reading_paused = true;
        self.reregister(key);
        self.flush(key);
    }

    /// A hung-up peer whose frames have all been handed in is closed.
    pub(super) fn close_if_drained(&mut self, key: usize) {
        if self
            .conns
            .get(key)
            .is_some_and(|c| c.role == Role::Peer && c.hung_up && !c.throttled)
        {
            self.close(key, Closing::EndOfStream);
        }
    }

    pub(super) fn pause_reading(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if !c.reading_paused {
            log::debug!(
                "pausing reads from {}: {} bytes unsent",
                c.remote,
                c.wbuf.len()
            );
            c.reading_paused = true;
            // The hold-up is ours: a frame held back is not the sender's to finish in time.
            c.partial_since = None;
            self.reregister(key);
        }
    }

    fn reregister(&mut self, key: usize) {
        let c = &mut self.conns[key];
        let interest = match (c.reads_blocked(), c.writable_interest) {
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

    /// Closes a connection and tells the core what it must know: a dialled peer that failed us is
    /// unreachable, a client is gone. A dial that ends before its peer said anything counts
    /// against that peer's backoff (a peer that accepts and hangs up is as dead as one that
    /// refuses), unless we closed it for idleness.
    fn close(&mut self, key: usize, why: Closing) {
        let Some(mut c) = self.conns.try_remove(key) else {
            return;
        };
        let now = self.now();
        self.forget(key, &mut c, now);
        let dial_failed =
            c.role == Role::Peer && c.outbound() && !c.answered && !matches!(why, Closing::Idle);
        if dial_failed {
            self.backoff.failed(c.peer_name, now);
        }
        self.log_close(&c, &why);
        if c.role == Role::Peer && c.outbound() && (why.is_failure() || dial_failed) {
            self.unreachable(c.peer_name);
        }
        if c.role == Role::Api {
            let client = client_id(key, c.generation);
            self.inputs.push(Input::ClientGone { client });
        }
    }

    /// Removes closed connection `key` from the poll, the timers, the peer table and the budgets.
    fn forget(&mut self, key: usize, c: &mut Conn, now: Time) {
        let _ = self.registry.deregister(&mut c.stream);
        if let Some(t) = c.idle_timer.take() {
            self.idle.cancel(t);
        }
        if let Some(t) = c.frame_timer.take() {
            self.frame_deadlines.cancel(t);
        }
        if self.peers.get(&c.peer_name) == Some(&key) {
            self.peers.remove(&c.peer_name);
        }
        match c.role {
            Role::Api => self.api_conns -= 1,
            Role::Peer => {
                self.p2p_conns -= 1;
                if let Some(slot) = c.ip_slot.take() {
                    self.ips.detach(slot, c.direction, now);
                }
            }
        }
    }

    fn log_close(&mut self, c: &Conn, why: &Closing) {
        let short = self.me.id.short();
        let (role, name, remote) = (c.role, c.peer_name, c.remote);
        if let Some(kind) = why.refusal() {
            return self.refuse(
                kind,
                remote.ip(),
                format_args!("closing {role:?} connection with {name} ({remote}): {why}"),
            );
        }
        let level = if why.is_failure() {
            log::Level::Info
        } else {
            log::Level::Debug
        };
        log::log!(
            level,
            "[{short}] closing {role:?} connection with {name} ({remote}): {why}"
        );
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
                self.close(key, Closing::Idle);
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
            let msg_type = t.frame.msg.msg_type();
            self.refuse(
                Refusal::SendBufferFull,
                t.to.ip(),
                format_args!(
                    "send buffer to {} full; dropping a type {msg_type} frame",
                    t.to
                ),
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

pub(super) fn client_id(key: usize, generation: u32) -> ClientId {
    ((generation as u64) << 32) | key as u64
}

/// A non-blocking connect to `peer` from our own IP: peers check that a HELLO comes from the IP it
/// advertises (several nodes on one host each have an address of their own, 127.0.0.x in tests).
fn connect_from(ip: IpAddr, peer: SocketAddr) -> io::Result<TcpStream> {
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

/// The connection a timer entry names, unless its slab slot has been reused since (a free function,
/// so the caller may use the other fields of `Net` while it holds the connection).
fn timed_conn(conns: &mut Slab<Conn>, key: usize, generation: u32) -> Option<&mut Conn> {
    conns.get_mut(key).filter(|c| c.generation == generation)
}
