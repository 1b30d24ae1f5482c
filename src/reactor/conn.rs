//! One TCP connection's state: its role, peer name, bounded read/write buffers, and where it stands
//! against the limits (its peer IP's entry, a partial frame's start, a rate-limit pause).

use super::limits::Direction;
use crate::time::Time;
use crate::wheel::TimerKey;
use bytes::BytesMut;
use mio::net::TcpStream;
use std::net::SocketAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A VoidPhone module speaking the API.
    Api,
    /// Another node (or the `ring` command) speaking the P2P protocol.
    Peer,
}

pub struct Conn {
    pub stream: TcpStream,
    pub role: Role,
    /// Distinguishes this connection from earlier ones in the same slab slot.
    pub generation: u32,
    /// The remote socket address (for logs).
    pub remote: SocketAddr,
    /// Peer connections: the name the core knows the peer by — its advertised address once it said
    /// HELLO (or the address we dialled), else its socket address.
    pub peer_name: SocketAddr,
    /// Outbound: we dialled it (then connect errors mean "unreachable").
    pub direction: Direction,
    /// Outbound connections are usable once the connect completed.
    pub connected: bool,
    /// A whole frame has arrived on it: the other side speaks (a dial that ends before this failed).
    pub answered: bool,
    pub rbuf: BytesMut,
    pub wbuf: BytesMut,
    /// Reading stopped because the write buffer is full (backpressure).
    pub reading_paused: bool,
    /// Reading stopped because the peer's IP has used up its messages for now (rate limit).
    pub throttled: bool,
    pub writable_interest: bool,
    pub last_active: Time,
    pub idle_timer: Option<TimerKey>,
    /// When the partial frame at the end of `rbuf` began (its first bytes were read), if any.
    pub partial_since: Option<Time>,
    /// The pending check of that frame's deadline (one at a time).
    pub frame_timer: Option<TimerKey>,
    /// P2P connections: their peer IP's entry in the reactor's `PeerIps`.
    pub ip_slot: Option<usize>,
    /// The client ended its stream: answer what it asked, then close.
    pub hung_up: bool,
    /// The core has been told of the hang-up (once every request read was handed to it).
    pub hangup_reported: bool,
    /// The core has answered every request of this hung-up client.
    pub answered_all: bool,
}

impl Conn {
    pub fn new(
        stream: TcpStream,
        role: Role,
        generation: u32,
        remote: SocketAddr,
        direction: Direction,
        now: Time,
    ) -> Conn {
        let outbound = direction == Direction::Outbound;
        Conn {
            stream,
            role,
            generation,
            remote,
            peer_name: remote,
            direction,
            connected: !outbound,
            answered: false,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            reading_paused: false,
            throttled: false,
            writable_interest: outbound,
            last_active: now,
            idle_timer: None,
            partial_since: None,
            frame_timer: None,
            ip_slot: None,
            hung_up: false,
            hangup_reported: false,
            answered_all: false,
        }
    }

    pub fn outbound(&self) -> bool {
        self.direction == Direction::Outbound
    }

    /// Not to be read now: backpressure or the rate limit holds it.
    pub fn reads_blocked(&self) -> bool {
        self.reading_paused || self.throttled
    }
}
