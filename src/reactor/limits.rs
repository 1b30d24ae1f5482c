//! The reactor's bookkeeping for holding one peer to its share (issue 10, per-peer limits): open
//! P2P connections and a message token bucket per peer IP, exponential backoff of dials per peer
//! address, and a limiter that keeps refusals from flooding the log. Pure bookkeeping over `Time`:
//! no sockets, no protocol, so every piece is tested alone.

use super::refusals::Refusal;
use crate::time::Time;
use slab::Slab;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// Where peer limits count: one IPv4 address, or one IPv6 /64 (what one host can easily hold).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpKey(IpAddr);

impl IpKey {
    pub fn of(ip: IpAddr) -> IpKey {
        match ip {
            IpAddr::V4(_) => IpKey(ip),
            // An IPv4-mapped address is that IPv4 host.
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpKey(IpAddr::V4(v4)),
                None => IpKey(IpAddr::V6((u128::from(v6) & !0u128 << 64).into())),
            },
        }
    }
}

impl std::fmt::Display for IpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// Who opened a connection: the per-IP cap counts inbound connections only (our own dials are
/// bounded by `connections_max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

/// Tokens are counted in thousandths of a message, so that a rate in messages per second refills
/// `rate` units per millisecond, exactly, in integers.
const UNITS_PER_MSG: u64 = 1000;
/// A rate-limited peer is resumed once this many milliseconds' worth of tokens have come back
/// (and at least one message's): resuming per message would cost a wake-up per message.
const RESUME_BATCH_MS: u64 = 100;

/// A token bucket of messages: refills at `rate` per second up to two seconds' worth (a burst that
/// lets a peer catch up after a pause, not one that lets a flood through).
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    units: u64,
    last: Time,
}

impl TokenBucket {
    pub fn full(rate_per_s: u64, now: Time) -> TokenBucket {
        TokenBucket {
            units: capacity(rate_per_s),
            last: now,
        }
    }

    /// Ok when a message may be taken now; else how long to wait until a batch has come back.
    pub fn ready(&mut self, rate_per_s: u64, now: Time) -> Result<(), u64> {
        self.refill(rate_per_s, now);
        if self.units >= UNITS_PER_MSG {
            return Ok(());
        }
        let batch = (rate_per_s * RESUME_BATCH_MS)
            .max(UNITS_PER_MSG)
            .min(capacity(rate_per_s));
        Err((batch - self.units).div_ceil(rate_per_s.max(1)))
    }

    /// Takes one message's token (after [`Self::ready`] said Ok).
    pub fn spend(&mut self) {
        self.units = self.units.saturating_sub(UNITS_PER_MSG);
    }

    pub fn is_full(&mut self, rate_per_s: u64, now: Time) -> bool {
        self.refill(rate_per_s, now);
        self.units >= capacity(rate_per_s)
    }

    fn refill(&mut self, rate_per_s: u64, now: Time) {
        let elapsed = now.as_ms().saturating_sub(self.last.as_ms());
        self.units = (self.units + elapsed.saturating_mul(rate_per_s)).min(capacity(rate_per_s));
        self.last = self.last.max(now);
    }
}

fn capacity(rate_per_s: u64) -> u64 {
    2 * rate_per_s * UNITS_PER_MSG
}

/// Entries past which a new IP first sweeps out the ones that hold nothing (they are otherwise
/// swept with the refusal summary, every 10 s): IPs that connect and leave cannot grow the table.
const SWEEP_AT: usize = 4096;

/// One peer IP's open P2P connections and its message bucket.
pub struct PeerIp {
    ip: IpKey,
    conns: usize,
    inbound: usize,
    bucket: TokenBucket,
}

/// The peer IPs we have P2P connections with. A connection keeps its entry's slab index, so the
/// per-frame token check is one slab access, not a hash. An entry outlives its connections until
/// its bucket is full again: closing and reopening connections does not refill a bucket.
pub struct PeerIps {
    by_ip: HashMap<IpKey, usize>,
    entries: Slab<PeerIp>,
    rate_per_s: u64,
}

impl PeerIps {
    pub fn new(rate_per_s: usize) -> PeerIps {
        PeerIps {
            by_ip: HashMap::new(),
            entries: Slab::new(),
            rate_per_s: rate_per_s as u64,
        }
    }

    /// Inbound P2P connections open from `ip` (for the per-IP cap).
    pub fn inbound(&self, ip: IpKey) -> usize {
        self.by_ip
            .get(&ip)
            .map_or(0, |&slot| self.entries[slot].inbound)
    }

    /// Counts a new connection with `ip`; returns its entry, for [`Self::ready`] and [`Self::detach`].
    pub fn attach(&mut self, ip: IpKey, direction: Direction, now: Time) -> usize {
        if self.entries.len() >= SWEEP_AT && !self.by_ip.contains_key(&ip) {
            self.sweep(now);
        }
        let rate = self.rate_per_s;
        let entries = &mut self.entries;
        let slot = *self.by_ip.entry(ip).or_insert_with(|| {
            entries.insert(PeerIp {
                ip,
                conns: 0,
                inbound: 0,
                bucket: TokenBucket::full(rate, now),
            })
        });
        let e = &mut self.entries[slot];
        e.conns += 1;
        if direction == Direction::Inbound {
            e.inbound += 1;
        }
        slot
    }

    /// A connection counted by [`Self::attach`] has closed.
    pub fn detach(&mut self, slot: usize, direction: Direction, now: Time) {
        let rate = self.rate_per_s;
        let e = &mut self.entries[slot];
        e.conns -= 1;
        if direction == Direction::Inbound {
            e.inbound -= 1;
        }
        if e.conns == 0 && e.bucket.is_full(rate, now) {
            let ip = e.ip;
            self.entries.remove(slot);
            self.by_ip.remove(&ip);
        }
    }

    /// Ok when a message from the entry's IP may be handled now; else how long to stop reading.
    pub fn ready(&mut self, slot: usize, now: Time) -> Result<(), u64> {
        self.entries[slot].bucket.ready(self.rate_per_s, now)
    }

    /// A message from the entry's IP was handled.
    pub fn spend(&mut self, slot: usize) {
        self.entries[slot].bucket.spend();
    }

    /// Forgets IPs without connections whose bucket has refilled (their state is the default).
    pub fn sweep(&mut self, now: Time) {
        let rate = self.rate_per_s;
        let (entries, by_ip) = (&mut self.entries, &mut self.by_ip);
        entries.retain(|_, e| {
            let keep = e.conns > 0 || !e.bucket.is_full(rate, now);
            if !keep {
                by_ip.remove(&e.ip);
            }
            keep
        });
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The first pause after a dial that got no answer; it doubles per failure up to
/// [`BACKOFF_MAX_MS`]. A peer that left must not be dialled hundreds of times a second (it was:
/// 656 connects in one second), nor forgotten for long once it is back.
pub const BACKOFF_FIRST_MS: u64 = 250;
pub const BACKOFF_MAX_MS: u64 = 30_000;
/// Peers with failed dials remembered at most; past it, peers whose pause is over are forgotten.
const BACKOFF_PEERS_MAX: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    until: Time,
}

/// Exponential backoff of dials per peer address.
#[derive(Default)]
pub struct DialBackoff {
    peers: HashMap<SocketAddr, Failures>,
}

impl DialBackoff {
    /// May we dial `peer` now?
    pub fn allows(&self, peer: SocketAddr, now: Time) -> bool {
        self.peers.get(&peer).is_none_or(|f| now >= f.until)
    }

    /// A dial of `peer` ended without an answer: the next waits longer. Returns the pause.
    pub fn failed(&mut self, peer: SocketAddr, now: Time) -> u64 {
        if self.peers.len() >= BACKOFF_PEERS_MAX && !self.peers.contains_key(&peer) {
            self.peers.retain(|_, f| f.until > now);
            if self.peers.len() >= BACKOFF_PEERS_MAX {
                return 0;
            }
        }
        let f = self.peers.entry(peer).or_insert(Failures {
            count: 0,
            until: now,
        });
        let pause = (BACKOFF_FIRST_MS << f.count.min(16)).min(BACKOFF_MAX_MS);
        f.count += 1;
        f.until = now + pause;
        pause
    }

    /// `peer` answered (a whole frame, or a HELLO naming it): dial it freely again.
    pub fn answered(&mut self, peer: SocketAddr) {
        if !self.peers.is_empty() {
            self.peers.remove(&peer);
        }
    }
}

/// At most one log line per peer IP and kind of refusal in this many milliseconds: an attacker
/// must not be able to fill the disk (10,186 WARN lines from one connection flood).
pub const LOG_INTERVAL_MS: u64 = 10_000;
/// (IP, kind) pairs remembered; past it, lines are dropped until old pairs have expired (every
/// refusal is still counted).
const LOG_KEYS_MAX: usize = 4096;

#[derive(Default)]
pub struct LogLimiter {
    last: HashMap<(IpKey, Refusal), Time>,
}

impl LogLimiter {
    /// May a line about `kind` for `ip` be logged now? Remembers that it was.
    pub fn allow(&mut self, ip: IpKey, kind: Refusal, now: Time) -> bool {
        if let Some(t) = self.last.get_mut(&(ip, kind)) {
            if now < *t + LOG_INTERVAL_MS {
                return false;
            }
            *t = now;
            return true;
        }
        if self.last.len() >= LOG_KEYS_MAX {
            self.sweep(now);
            if self.last.len() >= LOG_KEYS_MAX {
                return false;
            }
        }
        self.last.insert((ip, kind), now);
        true
    }

    /// Forgets pairs whose interval is over.
    pub fn sweep(&mut self, now: Time) {
        self.last.retain(|_, t| now < *t + LOG_INTERVAL_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpKey {
        IpKey::of(text.parse().unwrap())
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(ip("2001:db8:1:2:aaaa::1"), ip("2001:db8:1:2:bbbb::9"));
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        assert_eq!(ip("::ffff:10.0.0.1"), ip("10.0.0.1"));
        assert_ne!(ip("10.0.0.1"), ip("10.0.0.2"));
        assert_eq!(ip("2001:db8:1:2::7").to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn bucket_allows_two_seconds_burst_then_the_rate() {
        let mut b = TokenBucket::full(100, Time(0));
        let mut taken = 0;
        while b.ready(100, Time(0)).is_ok() {
            b.spend();
            taken += 1;
        }
        assert_eq!(taken, 200);
        // Empty: resumed once 100 ms' worth (10 messages) have come back.
        assert_eq!(b.ready(100, Time(0)), Err(100));
        assert_eq!(b.ready(100, Time(5)), Err(95));
        for _ in 0..10 {
            assert!(b.ready(100, Time(100)).is_ok());
            b.spend();
        }
        assert!(b.ready(100, Time(100)).is_err());
        assert!(b.is_full(100, Time(2100)));
    }

    #[test]
    fn a_slow_rate_resumes_after_one_message() {
        let mut b = TokenBucket::full(1, Time(0));
        b.spend();
        b.spend();
        assert_eq!(b.ready(1, Time(0)), Err(1000));
    }

    #[test]
    fn peer_ips_count_inbound_and_keep_an_empty_bucket_after_close() {
        let mut ips = PeerIps::new(100);
        let a = ip("10.0.0.1");
        let s1 = ips.attach(a, Direction::Inbound, Time(0));
        let s2 = ips.attach(a, Direction::Outbound, Time(0));
        assert_eq!(s1, s2);
        assert_eq!(ips.inbound(a), 1);
        while ips.ready(s1, Time(0)).is_ok() {
            ips.spend(s1);
        }
        ips.detach(s1, Direction::Inbound, Time(0));
        ips.detach(s2, Direction::Outbound, Time(0));
        // Reconnecting does not refill the bucket.
        let s3 = ips.attach(a, Direction::Inbound, Time(1));
        assert!(ips.ready(s3, Time(1)).is_err());
        ips.detach(s3, Direction::Inbound, Time(1));
        ips.sweep(Time(1));
        assert_eq!(ips.len(), 1);
        ips.sweep(Time(5000));
        assert_eq!((ips.len(), ips.inbound(a)), (0, 0));
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_an_answer_resets_it() {
        let peer: SocketAddr = "10.0.0.1:7".parse().unwrap();
        let mut b = DialBackoff::default();
        assert!(b.allows(peer, Time(0)));
        let pauses: Vec<u64> = (0..10).map(|_| b.failed(peer, Time(0))).collect();
        assert_eq!(&pauses[..4], &[250, 500, 1000, 2000]);
        assert_eq!(pauses[9], BACKOFF_MAX_MS);
        assert!(!b.allows(peer, Time(29_999)));
        assert!(b.allows(peer, Time(30_000)));
        b.answered(peer);
        assert_eq!(b.failed(peer, Time(0)), 250);
    }

    #[test]
    fn log_limiter_allows_one_line_per_ip_and_kind_per_interval() {
        let mut l = LogLimiter::default();
        let a = ip("10.0.0.1");
        assert!(l.allow(a, Refusal::Throttled, Time(0)));
        assert!(!l.allow(a, Refusal::Throttled, Time(9_999)));
        assert!(l.allow(a, Refusal::FrameDeadline, Time(9_999)));
        assert!(l.allow(ip("10.0.0.2"), Refusal::Throttled, Time(1)));
        assert!(l.allow(a, Refusal::Throttled, Time(10_000)));
    }
}
