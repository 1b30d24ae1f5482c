//! Per-hop fault tolerance for recursive lookups: the PEER FINDs this node sent on for others,
//! remembered until the next hop says it took them, so that one whose next hop is dead (refusing or
//! silent) goes on by another route.
//!
//! **What is kept.** Every PEER FIND a node forwards (a stranger's find it is the first hop of, or
//! one passing through) is recorded as a [`Forward`]: the find as it arrived (request id, target,
//! hop count, last-hop mark, `reply_to`), the peer it went to, when, and the peers already found
//! dead on its way from here, with a per-hop deadline in a timer wheel.
//!
//! **The signals.** A node that receives a PEER FIND answers the sending hop at once with FIND
//! TAKEN (type 1012, the find's request id, no body): the record is then dropped (the find is the
//! next hop's to forward now) and the round trip is measured. Bad news comes two ways:
//! - the transport's own: the driver reports the peer unreachable (a refused or broken connection:
//!   `Input::PeerUnreachable`); every record whose next hop was that peer is taken out;
//! - silence: no FIND TAKEN within the per-hop timeout (a host powered off, a black-holed link, which
//!   TCP reports only minutes later); that one record is taken out and counted
//!   (`finds_hop_timeouts`). The peer counts as dead *for that find* only: the ring view keeps it
//!   (maintenance has its own checks), and a FIND TAKEN arriving later is ignored.
//!
//! Either way the find is handled again as if it had just arrived, with the dead peer (and those
//! before it) excluded: the next-best hop is the successor-list entry now responsible for the key,
//! else the closest preceding finger or successor, never one excluded. Routing only ever picks nodes
//! in `(us, key]`, so a reroute never goes back past the key; and when the dead peer was our
//! predecessor on a last hop, the key is ours (the node between the sender and us is gone) and we
//! answer. The request id, `reply_to` and hop count go on unchanged: the hop that never arrived is
//! not counted, and the asker sees an ordinary answer, only later.
//!
//! **The per-hop timeout** adapts to the peer as TCP's retransmission timer does (RFC 6298): SRTT +
//! 4·RTTVAR from the forward → FIND TAKEN round trips to that peer, within [`HOP_TIMEOUT_MIN_MS`]
//! and `request_timeout_ms`. A peer never measured gets half of `request_timeout_ms`: a reroute
//! then still lands before the asker's own deadline. No backoff after a timeout: Karn's ambiguity
//! does not arise, since a rerouted find goes to another peer, so a FIND TAKEN arriving late (from
//! a slow peer, not a dead one) is still a clean sample and raises that peer's timeout; the last
//! [`FORWARDS_MAX`] timed-out forwards are remembered for that alone. (A backoff would make every
//! later find through a silent finger wait longer, up to `request_timeout_ms`, until the finger is
//! replaced.) The round trips of at most [`RTT_PEERS_MAX`] peers are kept, the least recently
//! measured forgotten first.
//!
//! **Bounds.** At most [`FORWARDS_MAX`] records are kept; past that the oldest is dropped (its find
//! just loses the protection). One node sends one find on again at most r times ([`reroutes_max`],
//! r = the successor list's length; the loop guard), one message at a time: each reroute excludes
//! one more dead peer, so no route repeats and each goes towards the key, and nothing is
//! multiplied. Why r and not 2 or 3: near the key a reroute walks the successor list, one refusal
//! per dead entry, and at p = 0.5 runs of dead successors are long (tests/sim_failures.rs, N = 500,
//! half the nodes crashed: a guard of 2, 4 or 6 reroutes answers 76.7, 95.3 or 99.25 % of the
//! lookups on the first attempt, 8 and more 100 %). Past r dead peers in a row the successor list
//! could not have bridged the gap either; the find is dropped and the asker's retry, after
//! stabilization, is the better bet. `HOPS_MAX` still bounds the whole path.
//!
//! **Not covered.** Finds this node starts itself are its parts' requests (`Requests`), retried by
//! them after `request_timeout_ms` when the first hop is silent (a refused first hop is retried at
//! once). A slow next hop (an ACK later than its timeout) costs a duplicate find, answered twice.

use super::routing::Find;
use crate::config::NodeConfig;
use crate::time::Time;
use crate::wheel::{TimerKey, TimerWheel};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::net::SocketAddr;

/// The most forwards remembered; past it the oldest is forgotten.
pub(super) const FORWARDS_MAX: usize = 4096;

/// The finds a node remembers having handled, to drop one that comes again with the same hop
/// count: a copy made by a spurious hop timeout (the slow hop forwards it too) that meets the
/// original. Each copy would otherwise be forwarded, and may be copied again further on: in a mass
/// join of 4096 nodes with finds relayed through joining nodes (tried, not kept), hop timeouts
/// doubled every 2.5 s up to 18 GB of messages in flight; with this, the ring formed in 9.5 s.
/// A find that comes round again with more hops (a loop of pointers that disagree while a ring
/// forms) is handled again: the pointers may have changed since, and `HOPS_MAX` bounds it
/// (dropping those lost 1–4 lookups in 60,000 under churn). 8 bytes each.
pub(super) const RECENT_FINDS_MAX: usize = 256;

/// 64 bits that tell finds apart: the asker, its request id, the target, FIND VALUE or not and the
/// hop count, folded by multiplying with odd constants (every node runs every find it receives
/// through this, so no general-purpose hash). Not a defence against a chosen collision, which
/// only gets the colliding find dropped by this node.
fn fingerprint(find: &Find) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let word = |i: usize| u64::from_le_bytes(find.target.0[i..i + 8].try_into().expect("8 bytes"));
    let ip = match find.reply_to.ip() {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            (bits as u64) ^ ((bits >> 64) as u64).rotate_left(29)
        }
    };
    let asker = (ip << 16) ^ u64::from(find.reply_to.port());
    let extra = (u64::from(find.hops) << 1) | u64::from(find.read);
    [
        word(0),
        word(8),
        word(16),
        word(24),
        find.request,
        asker,
        extra,
    ]
    .iter()
    .fold(0u64, |h, w| (h.rotate_left(23) ^ w).wrapping_mul(K))
}

/// The per-hop timeout's floor: a FIND TAKEN is sent the moment the find is read, but the receiver
/// may be busy with a batch of frames, and a spurious timeout costs a duplicate find.
pub(super) const HOP_TIMEOUT_MIN_MS: u64 = 50;

/// RFC 6298's clock granularity G in `SRTT + max(G, 4·RTTVAR)`: on a path whose round trip never
/// varies RTTVAR decays to 0 and the timer would fire the very moment FIND TAKEN is due (measured on a
/// simulated WAN of fixed link delays, N = 300: 4615 spurious hop timeouts, each a duplicate find, in
/// a run of 100 writes and 100 reads; none with G).
pub(super) const HOP_TIMEOUT_SLACK_MS: u64 = 10;

/// The peers whose round trip is kept. A node forwards to its fingers and successors (about
/// log2 N + r, 30 at N = 1000) and now and then to a cached node; 1024 covers that many times over
/// at 40 bytes each.
pub(super) const RTT_PEERS_MAX: usize = 1024;

/// The most times one node sends one find on again after a dead next hop (the loop guard): r, the
/// length of its successor list.
pub(super) fn reroutes_max(cfg: &NodeConfig) -> usize {
    cfg.successors
}

/// A PEER FIND we sent on, kept until FIND TAKEN, its per-hop timeout, or its next hop is reported
/// unreachable.
#[derive(Clone, Debug)]
pub(super) struct Forward {
    /// The find as it arrived to us.
    pub find: Find,
    /// The peer it went to.
    pub to: SocketAddr,
    pub at: Time,
    /// Peers found dead on its way from us, in the order they were tried (`to` not included).
    pub dead: Vec<SocketAddr>,
}

pub(super) struct Forwards {
    /// By a counter: in sending order, the oldest first.
    open: BTreeMap<u64, Open>,
    /// `(request id, next hop, counter)` of every open forward: where a FIND TAKEN finds its own.
    by_ack: BTreeSet<(u64, SocketAddr, u64)>,
    /// Per-hop deadlines, by counter.
    deadlines: TimerWheel<u64>,
    next: u64,
    rtt: RttTable,
    /// Timed-out forwards, `(request id, next hop)` → when sent: a late FIND TAKEN is a round-trip
    /// sample. In timing-out order, at most [`FORWARDS_MAX`].
    late: BTreeMap<(u64, SocketAddr), Time>,
    late_order: VecDeque<((u64, SocketAddr), Time)>,
    /// Fingerprints of about the last [`RECENT_FINDS_MAX`] finds that reached us, by their low
    /// bits (allocated with the first find: 2 KB).
    recent: Option<Box<[u64; RECENT_FINDS_MAX]>>,
}

struct Open {
    fwd: Forward,
    timer: TimerKey,
}

impl Forwards {
    pub fn new(now: Time) -> Forwards {
        Forwards {
            open: BTreeMap::new(),
            by_ack: BTreeSet::new(),
            deadlines: TimerWheel::new(10, 256, now),
            next: 0,
            rtt: RttTable::default(),
            late: BTreeMap::new(),
            late_order: VecDeque::new(),
            recent: None,
        }
    }

    /// Notes that `find` reached us; true when it had already (the same asker, request id, target
    /// and hop count).
    pub fn repeated(&mut self, find: &Find) -> bool {
        // Direct-mapped: a print's slot holds the last find that fell there, so about the last
        // RECENT_FINDS_MAX finds are remembered, in constant time (a FIFO scanned on every find
        // made a routing step 8 % slower). 0 marks an empty slot.
        let print = fingerprint(find) | 1;
        let recent = self
            .recent
            .get_or_insert_with(|| Box::new([0; RECENT_FINDS_MAX]));
        let slot = &mut recent[(print >> 1) as usize % RECENT_FINDS_MAX];
        std::mem::replace(slot, print) == print
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// How long to wait for `peer`'s FIND TAKEN, at most `ceiling_ms`.
    pub fn hop_timeout_ms(&self, peer: SocketAddr, ceiling_ms: u64) -> u64 {
        self.rtt.timeout_ms(peer, ceiling_ms)
    }

    /// Remembers a forward made now (`fwd.at`) until `timeout_ms` from then; past the bound the
    /// oldest is forgotten.
    pub fn record(&mut self, fwd: Forward, timeout_ms: u64) {
        if self.open.len() == FORWARDS_MAX
            && let Some(&oldest) = self.open.keys().next()
        {
            self.remove(oldest);
        }
        let key = self.next;
        self.next += 1;
        let timer = self.deadlines.insert(fwd.at + timeout_ms, key);
        self.by_ack.insert((fwd.find.request, fwd.to, key));
        self.open.insert(key, Open { fwd, timer });
        debug_assert_eq!(self.open.len(), self.by_ack.len());
        debug_assert_eq!(self.open.len(), self.deadlines.len());
    }

    /// FIND TAKEN for `request` from `from`: the oldest forward it answers is done, and its round
    /// trip measured. False when there is none (late, after a reroute: then only measured; or
    /// made up).
    pub fn take_acked(&mut self, request: u64, from: SocketAddr, now: Time) -> bool {
        let first = self
            .by_ack
            .range((request, from, 0)..=(request, from, u64::MAX))
            .next()
            .map(|&(.., key)| key);
        let Some(fwd) = first.and_then(|key| self.remove(key)) else {
            if let Some(at) = self.late.remove(&(request, from)) {
                self.rtt.sample(from, now.ms_since(at));
            }
            return false;
        };
        self.rtt.sample(from, now.ms_since(fwd.at));
        true
    }

    /// The forwards that went to `peer`, taken out, oldest first.
    pub fn take_to(&mut self, peer: SocketAddr) -> Vec<Forward> {
        let keys: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, o)| o.fwd.to == peer)
            .map(|(k, _)| *k)
            .collect();
        keys.into_iter().filter_map(|k| self.remove(k)).collect()
    }

    /// The forwards whose next hop missed its deadline, taken out, oldest first (remembered in
    /// `late` meanwhile).
    pub fn take_expired(&mut self, now: Time) -> Vec<Forward> {
        let mut keys = Vec::new();
        self.deadlines.expire(now, &mut keys);
        keys.sort_unstable(); // in sending order
        let expired: Vec<Forward> = keys
            .into_iter()
            .filter_map(|k| {
                let open = self.open.remove(&k)?;
                self.by_ack.remove(&(open.fwd.find.request, open.fwd.to, k));
                Some(open.fwd)
            })
            .collect();
        for f in &expired {
            self.remember_late((f.find.request, f.to), f.at);
        }
        expired
    }

    pub fn next_deadline(&self) -> Option<Time> {
        self.deadlines.next_deadline()
    }

    fn remember_late(&mut self, id: (u64, SocketAddr), at: Time) {
        if self.late_order.len() == FORWARDS_MAX
            && let Some((old, old_at)) = self.late_order.pop_front()
            && self.late.get(&old) == Some(&old_at)
        {
            self.late.remove(&old);
        }
        self.late.insert(id, at);
        self.late_order.push_back((id, at));
    }

    fn remove(&mut self, key: u64) -> Option<Forward> {
        let open = self.open.remove(&key)?;
        self.deadlines.cancel(open.timer);
        self.by_ack
            .remove(&(open.fwd.find.request, open.fwd.to, key));
        Some(open.fwd)
    }
}

/// Round-trip estimates per peer, as RFC 6298 keeps them (microseconds).
#[derive(Default)]
struct RttTable {
    peers: BTreeMap<SocketAddr, Rtt>,
    /// When each peer was last measured (a counter), for forgetting the least recent.
    by_age: BTreeMap<u64, SocketAddr>,
    clock: u64,
}

struct Rtt {
    srtt_us: u64,
    rttvar_us: u64,
    measured: u64,
}

impl RttTable {
    fn timeout_ms(&self, peer: SocketAddr, ceiling_ms: u64) -> u64 {
        let ceiling_ms = ceiling_ms.max(HOP_TIMEOUT_MIN_MS);
        let Some(r) = self.peers.get(&peer) else {
            return (ceiling_ms / 2).max(HOP_TIMEOUT_MIN_MS);
        };
        let rto_ms =
            (r.srtt_us + (4 * r.rttvar_us).max(HOP_TIMEOUT_SLACK_MS * 1000)).div_ceil(1000);
        rto_ms.clamp(HOP_TIMEOUT_MIN_MS, ceiling_ms)
    }

    /// A round trip of `ms` to `peer` (RFC 6298 §2: α = 1/8, β = 1/4).
    fn sample(&mut self, peer: SocketAddr, ms: u64) {
        let r_us = ms * 1000;
        self.clock += 1;
        let measured = self.clock;
        if let Some(r) = self.peers.get_mut(&peer) {
            self.by_age.remove(&r.measured);
            r.rttvar_us = (3 * r.rttvar_us + r.srtt_us.abs_diff(r_us)) / 4;
            r.srtt_us = (7 * r.srtt_us + r_us) / 8;
            r.measured = measured;
        } else {
            if self.peers.len() >= RTT_PEERS_MAX
                && let Some((_, oldest)) = self.by_age.pop_first()
            {
                self.peers.remove(&oldest);
            }
            let rtt = Rtt {
                srtt_us: r_us,
                rttvar_us: r_us / 2,
                measured,
            };
            self.peers.insert(peer, rtt);
        }
        self.by_age.insert(measured, peer);
        debug_assert_eq!(self.peers.len(), self.by_age.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chord::test_peer as peer;

    fn fwd(request: u64, to: u8, at: u64) -> Forward {
        Forward {
            find: Find {
                request,
                target: peer(200).id,
                hops: 1,
                last_hop: false,
                reply_to: peer(1).addr,
                read: false,
            },
            to: peer(to).addr,
            at: Time::from_ms(at),
            dead: Vec::new(),
        }
    }

    fn requests(fwds: &[Forward]) -> Vec<u64> {
        fwds.iter().map(|f| f.find.request).collect()
    }

    #[test]
    fn forwards_to_a_dead_peer_are_taken_in_order_and_the_rest_stay() {
        let mut f = Forwards::new(Time::ZERO);
        f.record(fwd(1, 10, 0), 500);
        f.record(fwd(2, 20, 10), 500);
        f.record(fwd(3, 10, 20), 500);
        assert_eq!(requests(&f.take_to(peer(10).addr)), vec![1, 3]);
        assert_eq!(f.len(), 1);
        assert!(f.take_to(peer(10).addr).is_empty());
        // Their deadlines went with them.
        assert_eq!(requests(&f.take_expired(Time::from_ms(10_000))), vec![2]);
    }

    #[test]
    fn an_ack_from_the_next_hop_ends_a_forward_and_only_that_one() {
        let mut f = Forwards::new(Time::ZERO);
        f.record(fwd(1, 10, 0), 500);
        f.record(fwd(1, 20, 0), 500);
        f.record(fwd(2, 10, 0), 500);
        // The right id from another peer, or an unknown id: ignored.
        assert!(!f.take_acked(1, peer(30).addr, Time::from_ms(40)));
        assert!(!f.take_acked(9, peer(10).addr, Time::from_ms(40)));
        assert!(f.take_acked(1, peer(10).addr, Time::from_ms(40)));
        assert!(!f.take_acked(1, peer(10).addr, Time::from_ms(41)), "twice");
        assert_eq!(f.len(), 2);
        assert_eq!(requests(&f.take_expired(Time::from_ms(500))), vec![1, 2]);
        // A late ACK after the timeout finds nothing.
        assert!(!f.take_acked(2, peer(10).addr, Time::from_ms(501)));
    }

    #[test]
    fn forwards_expire_at_their_deadline_and_the_table_is_bounded() {
        let mut f = Forwards::new(Time::ZERO);
        f.record(fwd(1, 10, 0), 100);
        f.record(fwd(2, 10, 50), 500);
        assert!(f.take_expired(Time::from_ms(99)).is_empty());
        assert_eq!(requests(&f.take_expired(Time::from_ms(100))), vec![1]);
        assert_eq!(f.next_deadline(), Some(Time::from_ms(550)));
        for i in 0..FORWARDS_MAX as u64 + 10 {
            f.record(fwd(i + 10, 20, 1000), 500);
        }
        assert_eq!(f.len(), FORWARDS_MAX);
        let taken = f.take_to(peer(20).addr);
        assert_eq!(
            taken.first().map(|x| x.find.request),
            Some(20),
            "oldest dropped"
        );
        assert_eq!(f.len(), 0);
        assert!(f.take_expired(Time::from_ms(100_000)).is_empty());
    }

    #[test]
    fn the_hop_timeout_follows_rfc_6298_within_its_floor_and_ceiling() {
        let mut f = Forwards::new(Time::ZERO);
        let (a, b) = (peer(10).addr, peer(20).addr);
        // Never measured: half the ceiling.
        assert_eq!(f.hop_timeout_ms(a, 1000), 500);
        // First sample R = 40: SRTT 40, RTTVAR 20, timeout 120.
        f.record(fwd(1, 10, 0), 500);
        assert!(f.take_acked(1, a, Time::from_ms(40)));
        assert_eq!(f.hop_timeout_ms(a, 1000), 120);
        // R = 40 again: RTTVAR 15, timeout 100; the ceiling caps it.
        f.record(fwd(2, 10, 100), 500);
        assert!(f.take_acked(2, a, Time::from_ms(140)));
        assert_eq!(f.hop_timeout_ms(a, 1000), 100);
        assert_eq!(f.hop_timeout_ms(a, 80), 80);
        // A fast peer gets the floor.
        f.record(fwd(3, 20, 0), 500);
        assert!(f.take_acked(3, b, Time::from_ms(1)));
        assert_eq!(f.hop_timeout_ms(b, 1000), HOP_TIMEOUT_MIN_MS);
        // A timeout alone changes nothing; the late ACK of a timed-out forward is a sample
        // (R = 400: SRTT 85, RTTVAR 101.25, timeout 490), though it ends no forward.
        f.record(fwd(4, 10, 200), 100);
        assert_eq!(f.take_expired(Time::from_ms(300)).len(), 1);
        assert_eq!(f.hop_timeout_ms(a, 1000), 100);
        assert!(!f.take_acked(4, a, Time::from_ms(600)));
        assert_eq!(f.hop_timeout_ms(a, 1000), 490);
        // Once only.
        assert!(!f.take_acked(4, a, Time::from_ms(900)));
        assert_eq!(f.hop_timeout_ms(a, 1000), 490);
    }

    #[test]
    fn the_rtt_table_is_bounded_and_forgets_the_least_recently_measured() {
        let mut t = RttTable::default();
        let addr = |i: usize| SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 1));
        for i in 0..RTT_PEERS_MAX {
            t.sample(addr(i), 10);
        }
        t.sample(addr(0), 10); // measured again: now the most recent
        t.sample(addr(RTT_PEERS_MAX), 10);
        assert_eq!(t.peers.len(), RTT_PEERS_MAX);
        assert!(t.peers.contains_key(&addr(0)));
        assert!(!t.peers.contains_key(&addr(1)));
    }
}
