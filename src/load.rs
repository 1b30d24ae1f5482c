//! The load generator behind `voidphone-dht bench`, in the spirit of `redis-benchmark`: one thread,
//! one mio poll loop, C connections spread over the given API addresses, each sending rounds of P
//! pipelined requests and waiting for their answers. A load tool that used a thread per connection
//! would spend the CPU of a 2-core machine on its own context switches instead of the node's.

use crate::id::{Id, Key};
use crate::wire::api::{self, ApiReply, ApiRequest};
use bytes::{Buf, Bytes, BytesMut};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Get,
    /// A round of PUTs ends with one GET of the last key: DHT PUT has no answer, and the GET's
    /// answer shows the node has taken every PUT of the round.
    Put,
}

impl Op {
    /// The operation `bench --op NAME` names, if any.
    pub fn from_name(name: &str) -> Option<Op> {
        match name {
            "get" => Some(Op::Get),
            "put" => Some(Op::Put),
            _ => None,
        }
    }

    /// The name `bench` takes and prints.
    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
        }
    }
}

#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub apis: Vec<SocketAddr>,
    pub conns: usize,
    pub pipeline: usize,
    pub duration: Duration,
    pub op: Op,
    /// Keys are SHA-256 of 0..keys (as big-endian u64), taken in turn by the connections.
    pub keys: u64,
    pub value_bytes: usize,
}

#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Requests answered (PUTs: taken by the node) within the duration.
    pub ops: u64,
    /// GETs answered DHT FAILURE.
    pub misses: u64,
    /// Round latencies in microseconds, sorted.
    pub rounds_us: Vec<u32>,
}

impl LoadReport {
    /// The `q`-quantile of round latency in microseconds.
    pub fn round_us(&self, q: f64) -> u32 {
        let n = self.rounds_us.len();
        if n == 0 {
            return 0;
        }
        self.rounds_us[((n as f64 * q) as usize).min(n - 1)]
    }
}

/// The key the load uses for index `i`.
pub fn key(i: u64) -> Key {
    Id::hash(&i.to_be_bytes())
}

struct LoadConn {
    stream: TcpStream,
    out: BytesMut,
    input: BytesMut,
    /// Answers still expected in this round.
    awaiting: usize,
    round_start: Instant,
    next_key: u64,
}

/// Runs the load and reports; an I/O error or an unreadable answer ends the run with that error.
pub fn run(spec: &LoadSpec) -> io::Result<LoadReport> {
    let mut poll = Poll::new()?;
    let mut conns = connect_all(spec, &poll)?;
    let value = Bytes::from(vec![0x5a; spec.value_bytes]);
    let mut report = LoadReport::default();
    let deadline = Instant::now() + spec.duration;
    for conn in conns.iter_mut() {
        start_round(spec, conn, &value);
        flush(conn)?;
    }
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 64 * 1024];
    while Instant::now() < deadline {
        match poll.poll(&mut events, Some(deadline - Instant::now().min(deadline))) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => result?,
        }
        for event in &events {
            let conn = &mut conns[event.token().0];
            if event.is_writable() {
                flush(conn)?;
            }
            // A node that closes the connection (or fails it) ends the run with an error.
            let closing = event.is_read_closed() || event.is_error();
            if !event.is_readable() && !closing {
                continue;
            }
            read_all(&mut conn.stream, &mut conn.input, &mut scratch, closing)?;
            take_answers(spec, conn, &mut report)?;
            if conn.awaiting == 0 && Instant::now() < deadline {
                report.ops += spec.pipeline as u64;
                report
                    .rounds_us
                    .push(conn.round_start.elapsed().as_micros() as u32);
                start_round(spec, conn, &value);
                flush(conn)?;
            }
        }
    }
    report.rounds_us.sort_unstable();
    Ok(report)
}

/// Opens `spec.conns` connections, spread in turn over the API addresses; connection `c` is
/// registered as `Token(c)` and starts its keys at `c`, so the connections take keys in turn.
fn connect_all(spec: &LoadSpec, poll: &Poll) -> io::Result<Vec<LoadConn>> {
    let mut conns = Vec::with_capacity(spec.conns);
    for c in 0..spec.conns {
        conns.push(connect(spec.apis[c % spec.apis.len()], c, poll)?);
    }
    Ok(conns)
}

/// One non-blocking connection. No Nagle: it would hold a round's small requests back until an
/// ACK arrives and add that wait to the measured latency.
fn connect(api: SocketAddr, c: usize, poll: &Poll) -> io::Result<LoadConn> {
    let std_stream = std::net::TcpStream::connect(api)?;
    std_stream.set_nodelay(true)?;
    std_stream.set_nonblocking(true)?;
    let mut stream = TcpStream::from_std(std_stream);
    // Edge-triggered: WRITABLE only fires when a full send buffer drains, so it can stay on.
    poll.registry().register(
        &mut stream,
        Token(c),
        Interest::READABLE | Interest::WRITABLE,
    )?;
    Ok(LoadConn {
        stream,
        out: BytesMut::new(),
        input: BytesMut::with_capacity(64 * 1024),
        awaiting: 0,
        round_start: Instant::now(),
        next_key: c as u64,
    })
}

/// Encodes the next round of requests into the connection's output.
fn start_round(spec: &LoadSpec, conn: &mut LoadConn, value: &Bytes) {
    for _ in 0..spec.pipeline {
        conn.next_key = (conn.next_key + spec.conns as u64) % spec.keys;
        let key = key(conn.next_key);
        let req = match spec.op {
            Op::Get => ApiRequest::Get { key },
            Op::Put => ApiRequest::Put {
                ttl_s: 3600,
                replication: 3,
                key,
                value: value.clone(),
            },
        };
        req.encode(&mut conn.out);
    }
    conn.awaiting = spec.pipeline;
    if spec.op == Op::Put {
        ApiRequest::Get {
            key: key(conn.next_key),
        }
        .encode(&mut conn.out);
        conn.awaiting = 1;
    }
    conn.round_start = Instant::now();
}

/// Writes what the socket takes; the rest goes when WRITABLE fires.
fn flush(conn: &mut LoadConn) -> io::Result<()> {
    while !conn.out.is_empty() {
        match conn.stream.write(&conn.out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => conn.out.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads until the socket is empty (epoll is edge-triggered), or at `to_end` (the node closed) to
/// the end of the stream.
fn read_all(
    stream: &mut TcpStream,
    input: &mut BytesMut,
    scratch: &mut [u8],
    to_end: bool,
) -> io::Result<()> {
    loop {
        match stream.read(scratch) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            // A short read emptied the socket; later bytes raise a new edge.
            Ok(n) if n < scratch.len() && !to_end => {
                input.extend_from_slice(&scratch[..n]);
                return Ok(());
            }
            Ok(n) => input.extend_from_slice(&scratch[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Decodes every whole answer in the connection's input and counts it off the round; an answer
/// beyond the round's requests means the node and this tool disagree, and ends the run.
fn take_answers(spec: &LoadSpec, conn: &mut LoadConn, report: &mut LoadReport) -> io::Result<()> {
    while let Some(reply) = api::decode_reply(&mut conn.input)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
    {
        conn.awaiting = conn.awaiting.checked_sub(1).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "an answer nobody asked for")
        })?;
        if spec.op == Op::Get && matches!(reply, ApiReply::Failure { .. }) {
            report.misses += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_an_empty_and_a_full_report() {
        let mut r = LoadReport::default();
        assert_eq!(r.round_us(0.99), 0);
        r.rounds_us = (1..=100).collect();
        assert_eq!(r.round_us(0.5), 51);
        assert_eq!(r.round_us(0.99), 100);
        assert_eq!(r.round_us(1.0), 100);
    }
}
