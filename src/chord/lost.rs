//! Ring neighbours we lost (dropped as unreachable) and when to try them again. A network partition
//! splits a Chord ring into rings that each stabilize on their own and never meet again: someone on
//! each side has to try the other side again once the network heals (issue 12). Pure bookkeeping;
//! maintenance sends the tries and reads what they find.

use crate::msg::Peer;
use crate::time::Time;
use std::net::SocketAddr;

/// Lost peers remembered at once (the oldest goes first).
pub const LOST_MAX: usize = 8;
/// How long a lost peer is tried again: a partition longer than this does not heal by itself.
pub const LOST_MEMORY_MS: u64 = 60 * 60_000;

struct Lost {
    peer: Peer,
    since: Time,
    next_try: Time,
    wait_ms: u64,
}

#[derive(Default)]
pub(super) struct LostPeers {
    lost: Vec<Lost>,
}

impl LostPeers {
    /// `peer` stopped answering: try it again after `first_wait_ms`, then less and less often. A
    /// peer remembered already keeps its backoff.
    pub fn remember(&mut self, peer: Peer, now: Time, first_wait_ms: u64) {
        if self.lost.iter().any(|l| l.peer.addr == peer.addr) {
            return;
        }
        if self.lost.len() == LOST_MAX
            && let Some(oldest) = (0..self.lost.len()).min_by_key(|&i| self.lost[i].since)
        {
            self.lost.swap_remove(oldest);
        }
        self.lost.push(Lost {
            peer,
            since: now,
            next_try: now + first_wait_ms,
            wait_ms: first_wait_ms,
        });
    }

    /// The lost peer to try now, if one is due; its next try is scheduled at once (after twice the
    /// last wait, at most `max_wait_ms`), so that a try that gets no answer needs no bookkeeping.
    /// Peers lost longer than [`LOST_MEMORY_MS`] are forgotten.
    pub fn take_due(&mut self, now: Time, max_wait_ms: u64) -> Option<Peer> {
        self.lost.retain(|l| now.ms_since(l.since) < LOST_MEMORY_MS);
        let due = self
            .lost
            .iter_mut()
            .filter(|l| l.next_try <= now)
            .min_by_key(|l| l.next_try)?;
        due.wait_ms = (due.wait_ms * 2).min(max_wait_ms);
        due.next_try = now + due.wait_ms;
        Some(due.peer)
    }

    /// The peer answered (it is back in our ring, or we are merging with its ring).
    pub fn forget(&mut self, addr: SocketAddr) {
        self.lost.retain(|l| l.peer.addr != addr);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lost.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chord::test_peer as peer;

    #[test]
    fn tries_back_off_are_bounded_and_end() {
        let mut lost = LostPeers::default();
        let t = |ms| Time::from_ms(ms);
        lost.remember(peer(1), t(0), 1000);
        assert_eq!(lost.take_due(t(999), 8000), None);
        let mut tries = Vec::new();
        let mut now = 0;
        while now < 40_000 {
            if lost.take_due(t(now), 8000).is_some() {
                tries.push(now);
            }
            now += 100;
        }
        assert_eq!(
            tries,
            vec![1000, 3000, 7000, 15_000, 23_000, 31_000, 39_000]
        );
        assert_eq!(lost.take_due(t(LOST_MEMORY_MS), 8000), None);
        assert_eq!(lost.len(), 0);
    }

    #[test]
    fn bounded_oldest_out_and_forgotten_on_answer() {
        let mut lost = LostPeers::default();
        for i in 0..LOST_MAX as u8 + 2 {
            lost.remember(peer(i), Time::from_ms(i as u64), 10);
        }
        assert_eq!(lost.len(), LOST_MAX);
        lost.forget(peer(5).addr);
        assert_eq!(lost.len(), LOST_MAX - 1);
        let due: Vec<u8> = std::iter::from_fn(|| lost.take_due(Time::from_ms(100), 1_000_000))
            .take(LOST_MAX)
            .map(|p| p.id.0[0])
            .collect();
        // Peers 0 and 1 were pushed out; each due peer is taken once.
        assert_eq!(due, vec![2, 3, 4, 6, 7, 8, 9]);
    }
}
