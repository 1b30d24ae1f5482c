//! A bounded cache of nodes seen recently (in PEER FOUND lists, successor lists, notifies). It lets
//! the asker name a key's responsible node without a lookup, so small rings answer in one hop. A
//! wrong guess costs one round trip: the node answers "not responsible", and a real lookup follows.

use crate::id::{Id, Key};
use crate::msg::Peer;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

pub struct PeerCache {
    by_id: BTreeMap<Id, Peer>,
    /// Per cached node that answered a lookup as responsible, the farthest target (counterclockwise)
    /// it answered for: it is responsible for every key from there up to itself, until the ring
    /// changes there (a guess it then refuses drops the node, see [`PeerCache::forget`]).
    answered_from: BTreeMap<Id, Id>,
    /// Insertion order, for evicting the oldest entry when full.
    order: VecDeque<Id>,
    max: usize,
}

impl PeerCache {
    pub fn new(max: usize) -> PeerCache {
        PeerCache {
            by_id: BTreeMap::new(),
            answered_from: BTreeMap::new(),
            order: VecDeque::new(),
            max,
        }
    }

    pub fn learn(&mut self, p: Peer) {
        if self.max == 0 || self.by_id.insert(p.id, p).is_some() {
            return;
        }
        self.order.push_back(p.id);
        while self.by_id.len() > self.max {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
                self.answered_from.remove(&old);
            }
        }
    }

    /// Forgets `peer` under its id only (its address may speak for another id by now).
    pub fn forget_peer(&mut self, peer: Peer) {
        if self.by_id.get(&peer.id) == Some(&peer) {
            self.by_id.remove(&peer.id);
            self.answered_from.remove(&peer.id);
            self.order.retain(|i| *i != peer.id);
        }
    }

    pub fn forget(&mut self, addr: SocketAddr) {
        let gone: Vec<Id> = self
            .by_id
            .values()
            .filter(|p| p.addr == addr)
            .map(|p| p.id)
            .collect();
        for id in gone {
            self.by_id.remove(&id);
            self.answered_from.remove(&id);
            self.order.retain(|i| *i != id);
        }
    }

    /// `owner` (cached now) answered a lookup for `target` as the node responsible for it.
    pub fn answered(&mut self, owner: Peer, target: &Id) {
        if self.by_id.get(&owner.id) != Some(&owner) {
            return;
        }
        let from = self.answered_from.entry(owner.id).or_insert(*target);
        if target.distance_to(&owner.id) > from.distance_to(&owner.id) {
            *from = *target;
        }
    }

    /// Is the first cached node after `key` known to be responsible for it: has it answered, as
    /// responsible, for a target at or before `key` (and after its cached predecessor)?
    pub fn known_responsible(&self, key: &Key) -> bool {
        let Some(after) = self.first_after_or_at(key) else {
            return false;
        };
        self.answered_from
            .get(&after.id)
            .is_some_and(|from| key.distance_to(&after.id) <= from.distance_to(&after.id))
    }

    fn first_after_or_at(&self, key: &Key) -> Option<Peer> {
        self.clockwise_from(key).next()
    }

    /// Every cached node clockwise from `key` (it included), once round the ring.
    pub fn clockwise_from(&self, key: &Key) -> impl Iterator<Item = Peer> + '_ {
        self.by_id
            .range(*key..)
            .chain(self.by_id.range(..*key))
            .map(|(_, p)| *p)
    }

    /// Every cached node, in id order.
    pub fn peers(&self) -> impl Iterator<Item = Peer> + '_ {
        self.by_id.values().copied()
    }

    /// The first cached node clockwise after `id` (not `id` itself).
    /// The cached node closest before `id` (wrapping round), if any.
    pub fn last_before(&self, id: &Id) -> Option<Peer> {
        let before = self.by_id.range(..*id).next_back();
        before
            .or_else(|| self.by_id.iter().next_back())
            .map(|(_, p)| *p)
    }

    pub fn first_after(&self, id: &Id) -> Option<Peer> {
        use std::ops::Bound::{Excluded, Unbounded};
        self.by_id
            .range((Excluded(*id), Unbounded))
            .chain(self.by_id.range(..*id))
            .map(|(_, p)| *p)
            .next()
    }

    /// The cached node that would be responsible for `key` (the first at or after it, `me`
    /// included), followed by the next `more` cached nodes: a guess at the key's holders, appended
    /// to `out` (a reused buffer).
    pub fn holders_into(&self, key: &Key, me: Peer, more: usize, out: &mut Vec<Peer>) {
        let start = out.len();
        out.extend(
            self.clockwise_from(key)
                .filter(|p| p.id != me.id)
                .take(more + 1),
        );
        // `me` goes in its place, by clockwise distance from the key.
        let at = out[start..]
            .iter()
            .position(|p| key.distance_to(&me.id) < key.distance_to(&p.id))
            .map_or(out.len(), |i| start + i);
        out.insert(at, me);
        out.truncate(start + more + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chord::test_peer as peer;

    #[test]
    fn holders_follow_the_key_in_ring_order_with_me_in_place() {
        let mut c = PeerCache::new(10);
        for b in [10, 50, 200] {
            c.learn(peer(b));
        }
        let ids = |v: Vec<Peer>| v.iter().map(|p| p.id.0[0]).collect::<Vec<_>>();
        let holders = |c: &PeerCache, key: &Key, me: Peer, more: usize| {
            let mut out = Vec::new();
            c.holders_into(key, me, more, &mut out);
            out
        };
        assert_eq!(
            ids(holders(&c, &peer(20).id, peer(100), 2)),
            vec![50, 100, 200]
        );
        assert_eq!(
            ids(holders(&c, &peer(210).id, peer(100), 2)),
            vec![10, 50, 100]
        );
        assert_eq!(ids(holders(&c, &peer(60).id, peer(100), 1)), vec![100, 200]);
        assert_eq!(ids(holders(&c, &peer(50).id, peer(100), 0)), vec![50]);
    }

    #[test]
    fn bounded_fifo_and_forget() {
        let mut c = PeerCache::new(2);
        c.learn(peer(1));
        c.learn(peer(2));
        c.learn(peer(1));
        c.learn(peer(3));
        assert_eq!(c.by_id.len(), 2);
        let mut out = vec![peer(7)];
        c.holders_into(&peer(1).id, peer(9), 0, &mut out);
        assert_eq!(out, vec![peer(7), peer(2)]);
        c.forget(peer(3).addr);
        assert_eq!(c.by_id.len(), 1);
    }

    #[test]
    fn a_node_that_answered_for_a_target_is_known_responsible_from_there_to_itself() {
        let mut c = PeerCache::new(10);
        for b in [10, 50, 200] {
            c.learn(peer(b));
        }
        assert!(!c.known_responsible(&peer(40).id));
        c.answered(peer(50), &peer(30).id);
        c.answered(peer(50), &peer(45).id); // nearer: the range stays (30, 50]
        let known = |c: &PeerCache, b: u8| c.known_responsible(&peer(b).id);
        assert!(known(&c, 30) && known(&c, 40) && known(&c, 50));
        assert!(!known(&c, 29) && !known(&c, 60));
        // Wrapping round: 10 answered for 220.
        c.answered(peer(10), &peer(220).id);
        assert!(known(&c, 230) && known(&c, 5) && !known(&c, 210));
        // Forgotten with the node; a node not cached is not recorded.
        c.forget(peer(50).addr);
        assert!(!known(&c, 40));
        c.answered(peer(60), &peer(55).id);
        assert!(!known(&c, 58));
    }

    #[test]
    fn first_after_wraps_and_skips_the_id_itself() {
        let mut c = PeerCache::new(10);
        assert!(c.first_after(&peer(5).id).is_none());
        for b in [10, 50] {
            c.learn(peer(b));
        }
        assert_eq!(c.first_after(&peer(10).id).unwrap().id, peer(50).id);
        assert_eq!(c.first_after(&peer(60).id).unwrap().id, peer(10).id);
        assert_eq!(c.first_after(&peer(0).id).unwrap().id, peer(10).id);
    }

    #[test]
    fn last_before_wraps_and_skips_the_id_itself() {
        let mut c = PeerCache::new(10);
        assert!(c.last_before(&peer(5).id).is_none());
        for b in [10, 50] {
            c.learn(peer(b));
        }
        assert_eq!(c.last_before(&peer(50).id).unwrap().id, peer(10).id);
        assert_eq!(c.last_before(&peer(60).id).unwrap().id, peer(50).id);
        assert_eq!(c.last_before(&peer(5).id).unwrap().id, peer(50).id);
    }
}
