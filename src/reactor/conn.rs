//! One TCP connection's state: its role, peer name and bounded read/write buffers.

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
    /// We dialled it (then connect errors mean "unreachable").
    pub outbound: bool,
    /// Outbound connections are usable once the connect completed.
    pub connected: bool,
    pub rbuf: BytesMut,
    pub wbuf: BytesMut,
    /// Reading stopped because the write buffer is full (backpressure).
    pub reading_paused: bool,
    pub writable_interest: bool,
    pub last_active: Time,
    pub idle_timer: Option<TimerKey>,
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
        outbound: bool,
        now: Time,
    ) -> Conn {
        Conn {
            stream,
            role,
            generation,
            remote,
            peer_name: remote,
            outbound,
            connected: !outbound,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            reading_paused: false,
            writable_interest: outbound,
            last_active: now,
            idle_timer: None,
            hung_up: false,
            hangup_reported: false,
            answered_all: false,
        }
    }
}
