//! What the reactor refused, counted: every connection turned away, dial not made, connection
//! slowed or closed for a limit. The counters are shared with whoever holds the node (a
//! [`super::RunningNode`] in tests) because the reactor itself runs on another thread; only the
//! reactor writes them.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// One kind of refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// An API connection turned away: `api_connections_max` open.
    ApiConnections,
    /// A P2P connection turned away: `connections_max` open.
    P2pConnections,
    /// A P2P connection turned away: `p2p_connections_per_ip_max` open from its IP.
    P2pConnectionsPerIp,
    /// A dial not made: `connections_max` open.
    DialConnections,
    /// A frame for a peer not dialled because its last dials got no answer (backoff): the core is
    /// told at once that the peer is unreachable.
    DialBackoff,
    /// Reading from a peer connection paused: its IP has used up `peer_msgs_per_s`.
    Throttled,
    /// A connection closed because a frame begun did not complete within `frame_deadline_ms`.
    FrameDeadline,
    /// A connection closed for bytes that break the protocol.
    ProtocolViolation,
    /// A frame for a peer dropped: its send buffer was full.
    SendBufferFull,
}

impl Refusal {
    pub const ALL: [Refusal; 9] = [
        Refusal::ApiConnections,
        Refusal::P2pConnections,
        Refusal::P2pConnectionsPerIp,
        Refusal::DialConnections,
        Refusal::DialBackoff,
        Refusal::Throttled,
        Refusal::FrameDeadline,
        Refusal::ProtocolViolation,
        Refusal::SendBufferFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Refusal::ApiConnections => "api connections",
            Refusal::P2pConnections => "p2p connections",
            Refusal::P2pConnectionsPerIp => "p2p connections per ip",
            Refusal::DialConnections => "dials at connections_max",
            Refusal::DialBackoff => "dials backing off",
            Refusal::Throttled => "peers throttled",
            Refusal::FrameDeadline => "frame deadlines",
            Refusal::ProtocolViolation => "protocol violations",
            Refusal::SendBufferFull => "send buffers full",
        }
    }

    /// Turning away connections or frames is worth a warning (someone may be misconfigured or
    /// hostile); slowing a peer or backing off from a silent one is routine.
    pub fn log_level(self) -> log::Level {
        match self {
            Refusal::Throttled | Refusal::DialBackoff => log::Level::Info,
            _ => log::Level::Warn,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A snapshot of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refusals {
    counts: [u64; Refusal::ALL.len()],
}

impl Refusals {
    pub fn get(&self, kind: Refusal) -> u64 {
        self.counts[kind.index()]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// What was counted since `earlier` (a snapshot of the same counters).
    pub fn since(&self, earlier: &Refusals) -> Refusals {
        let mut d = Refusals::default();
        for (i, c) in d.counts.iter_mut().enumerate() {
            *c = self.counts[i].saturating_sub(earlier.counts[i]);
        }
        d
    }
}

/// The non-zero counts, e.g. `p2p connections per ip 12, frame deadlines 1`.
impl fmt::Display for Refusals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for kind in Refusal::ALL.into_iter().filter(|k| self.get(*k) > 0) {
            let sep = if first { "" } else { ", " };
            write!(f, "{sep}{} {}", kind.name(), self.get(kind))?;
            first = false;
        }
        if first {
            write!(f, "none")?;
        }
        Ok(())
    }
}

/// The live counters. Relaxed atomics: one writer, and readers only want a recent figure.
#[derive(Default)]
pub struct Counters {
    counts: [AtomicU64; Refusal::ALL.len()],
}

impl Counters {
    pub fn count(&self, kind: Refusal) {
        self.counts[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Refusals {
        let mut s = Refusals::default();
        for (i, c) in s.counts.iter_mut().enumerate() {
            *c = self.counts[i].load(Ordering::Relaxed);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_snapshots_and_differences() {
        let c = Counters::default();
        c.count(Refusal::Throttled);
        let a = c.snapshot();
        c.count(Refusal::Throttled);
        c.count(Refusal::FrameDeadline);
        let b = c.snapshot();
        assert_eq!((b.get(Refusal::Throttled), b.total()), (2, 3));
        let d = b.since(&a);
        assert_eq!(d.to_string(), "peers throttled 1, frame deadlines 1");
        assert_eq!(Refusals::default().to_string(), "none");
        for (i, k) in Refusal::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
    }
}
