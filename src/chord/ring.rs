//! The routing state of one node: predecessor, successor list and finger table, with the pure
//! decisions made from them (who is responsible, where to forward). No messages, no time.

use crate::id::{Id, in_half_open, in_open};
use crate::msg::Peer;

pub const FINGERS: usize = 256;

#[derive(Clone, Debug)]
pub struct Ring {
    pub me: Peer,
    pub pred: Option<Peer>,
    /// Successors in ring order from `me`, distinct, never `me`; empty means "alone".
    succs: Vec<Peer>,
    succs_max: usize,
    /// finger[i] = the first live node known to follow `me + 2^i` (an acceleration only).
    fingers: Fingers,
    /// Our predecessor's predecessor list as it last told us (see [`Ring::pred_chain`]).
    far_preds: Vec<Peer>,
    /// Successor-list entries we asked directly, and whether they answered. The list comes from
    /// our successor, second-hand: an entry routes lookups only once it has answered us.
    asked: Vec<(std::net::SocketAddr, bool)>,
}

/// Our predecessors as far as we know them, the closest first (see [`Ring::pred_chain`]).
pub struct PredChain {
    pub nodes: Vec<Peer>,
    /// The chain came round to us: it holds every other node of the ring.
    pub whole_ring: bool,
}

impl Ring {
    pub fn new(me: Peer, succs_max: usize) -> Ring {
        Ring {
            me,
            pred: None,
            succs: Vec::new(),
            succs_max,
            fingers: Fingers::new(),
            far_preds: Vec::new(),
            asked: Vec::new(),
        }
    }

    /// `addr` answered us directly: as a successor it may route lookups.
    pub fn heard_from(&mut self, addr: std::net::SocketAddr) {
        if !self.succs.iter().any(|p| p.addr == addr) {
            return;
        }
        match self.asked.iter_mut().find(|(a, _)| *a == addr) {
            Some(entry) => entry.1 = true,
            None => self.asked.push((addr, true)),
        }
    }

    /// May a lookup go to successor `addr`? The first successor answers every stabilize round;
    /// the others once they answered us.
    pub fn has_answered(&self, addr: std::net::SocketAddr) -> bool {
        self.succs.first().is_some_and(|p| p.addr == addr)
            || self.asked.iter().any(|&(a, heard)| a == addr && heard)
    }

    /// The successors not asked yet, marked asked: the caller pings them (once each while they
    /// stay in the list; one that does not answer stays unused for routing).
    pub fn successors_to_confirm(&mut self, max: usize) -> Vec<Peer> {
        let new: Vec<Peer> = self
            .succs
            .iter()
            .filter(|p| !self.asked.iter().any(|(a, _)| *a == p.addr))
            .take(max)
            .copied()
            .collect();
        self.asked.extend(new.iter().map(|p| (p.addr, false)));
        new
    }

    /// Keeps what our predecessor says of its own predecessors (at most `max`).
    pub fn set_far_preds(&mut self, mut list: Vec<Peer>, max: usize) {
        list.truncate(max);
        self.far_preds = list;
    }

    /// Our predecessor, then the predecessors it told us of, up to `max` nodes, each strictly
    /// further back round the ring than the one before: an entry out of order (a stale list) ends
    /// the chain, and coming back to us means the chain holds the whole ring.
    pub fn pred_chain(&self, max: usize) -> PredChain {
        let me = self.me.id;
        let mut nodes: Vec<Peer> = Vec::with_capacity(max);
        let mut whole_ring = false;
        for p in self.pred.iter().chain(&self.far_preds) {
            if p.id == me {
                whole_ring = true;
                break;
            }
            let further = nodes
                .last()
                .is_none_or(|last| last.id.distance_to(&me) < p.id.distance_to(&me));
            if nodes.len() == max || !further {
                break;
            }
            nodes.push(*p);
        }
        PredChain { nodes, whole_ring }
    }

    pub fn succs(&self) -> &[Peer] {
        &self.succs
    }

    /// The first successor, or `me` when alone.
    pub fn successor(&self) -> Peer {
        self.succs.first().copied().unwrap_or(self.me)
    }

    /// Replaces the successor list with `list` as given in ring order (Zave: `s :: succs(s)`), keeping
    /// only entries that lie strictly further round the ring than the one before: an entry that wraps
    /// back past `me` (a stale list in a small ring) is never adopted unverified. Cut to r. Finger 0
    /// follows the first successor.
    pub fn set_succs(&mut self, list: impl IntoIterator<Item = Peer>) {
        let me = self.me.id;
        let mut v: Vec<Peer> = Vec::with_capacity(self.succs_max);
        for p in list {
            if v.len() == self.succs_max {
                break;
            }
            let further = v
                .last()
                .is_none_or(|last| me.distance_to(&last.id) < me.distance_to(&p.id));
            if p.id != me && further {
                v.push(p);
            }
        }
        self.succs = v;
        self.fingers.set(0, self.succs.first().copied());
        let succs = &self.succs;
        self.asked
            .retain(|(a, _)| succs.iter().any(|p| p.addr == *a));
    }

    /// Is `addr` our only successor, with no other node known to take its place?
    pub fn is_last_resort(&self, addr: std::net::SocketAddr) -> bool {
        self.succs.len() == 1
            && self.succs[0].addr == addr
            && self.ahead_peers().iter().all(|p| p.addr == addr)
    }

    /// The predecessor or successor-list entry at `addr`, if it is one.
    pub fn neighbour(&self, addr: std::net::SocketAddr) -> Option<Peer> {
        self.pred
            .iter()
            .chain(&self.succs)
            .find(|p| p.addr == addr)
            .copied()
    }

    /// Forgets a peer everywhere (it is dead or gone). When it was the last successor, the closest
    /// other known node takes its place; with none known we are alone. Returns whether it was known.
    pub fn remove(&mut self, addr: std::net::SocketAddr) -> bool {
        self.remove_where(|p| p.addr == addr)
    }

    /// Forgets `peer` under this id only: its address may speak for another id by now (a node
    /// that moved to another of its slots).
    pub fn remove_peer(&mut self, peer: Peer) -> bool {
        self.remove_where(|p| *p == peer)
    }

    fn remove_where(&mut self, gone: impl Fn(&Peer) -> bool) -> bool {
        let mut known = false;
        if self.pred.as_ref().is_some_and(&gone) {
            self.pred = None;
            known = true;
        }
        self.far_preds.retain(|p| !gone(p));
        for (from, to) in self.fingers.ranges_where(&gone) {
            // Finger 0 follows the successor list (below).
            if from.max(1) < to {
                self.fingers.set_range(from.max(1), to, None);
                known = true;
            }
        }
        if self.succs.iter().any(&gone) {
            known = true;
            if self.succs.len() > 1 {
                self.succs.retain(|p| !gone(p));
            } else {
                let me = self.me.id;
                let mut others: Vec<Peer> = self
                    .ahead_peers()
                    .into_iter()
                    .filter(|p| !gone(p))
                    .collect();
                others.sort_by_key(|p| me.distance_to(&p.id));
                others.truncate(self.succs_max);
                self.succs = others;
            }
        }
        self.fingers.set(0, self.succs.first().copied());
        known
    }

    /// Is this node responsible for `key`, i.e. `key ∈ (pred, me]`? Alone, it owns everything.
    /// Without a predecessor it cannot tell, and claims nothing: claiming wrongly would place a
    /// joining node at the wrong spot of the ring.
    pub fn owns(&self, key: &Id) -> bool {
        match self.pred {
            _ if self.succs.is_empty() => true,
            Some(p) => in_half_open(key, &p.id, &self.me.id),
            None => false,
        }
    }

    /// The successor-list entry responsible for `key` (`key ∈ (previous entry, entry]`), if the key
    /// falls within the stretch of ring our successor list covers: a lookup's last hops for free.
    pub fn owner_in_succs(&self, key: &Id) -> Option<(usize, Peer)> {
        let mut prev = self.me.id;
        for (i, s) in self.succs.iter().enumerate() {
            if in_half_open(key, &prev, &s.id) {
                return Some((i, *s));
            }
            prev = s.id;
        }
        None
    }

    /// The known node that most closely precedes `key` (Chord's closest_preceding_node over fingers and
    /// successor list), skipping the first `skip` candidates so that retries take another route.
    pub fn closest_preceding(&self, key: &Id, skip: usize) -> Option<Peer> {
        let me = self.me.id;
        if skip == 0 {
            // The hot path, without allocating: fingers grow in distance with their index, so the
            // highest finger before the key is the best finger; a successor may still be closer.
            let finger = self
                .fingers
                .peers()
                .rev()
                .find(|p| in_open(&p.id, &me, key));
            let succ = self
                .succs
                .iter()
                .rev()
                .find(|p| in_open(&p.id, &me, key) && self.has_answered(p.addr));
            return match (finger, succ) {
                (Some(f), Some(s)) if me.distance_to(&s.id) > me.distance_to(&f.id) => Some(*s),
                (Some(f), _) => Some(*f),
                (None, s) => s.copied(),
            };
        }
        let mut cands: Vec<Peer> = self
            .fingers
            .peers()
            .chain(self.succs.iter().filter(|p| self.has_answered(p.addr)))
            .filter(|p| in_open(&p.id, &me, key))
            .copied()
            .collect();
        // Closest to the key first: largest distance from me.
        cands.sort_by_key(|p| std::cmp::Reverse(me.distance_to(&p.id)));
        cands.dedup_by_key(|p| p.id);
        cands.get(skip.min(cands.len().saturating_sub(1))).copied()
    }

    /// Is one of our successors at an id in `[from, to)`? Then a node at `to` is not responsible
    /// for a key at `from`. (Successors only: they answer us every stabilize round. A finger may be
    /// dead, and the answer that would replace it must not be refused because of it.)
    pub fn knows_node_in(&self, from: &Id, to: &Id) -> bool {
        let inside = |id: &Id| id == from || in_open(id, from, to);
        self.succs.iter().any(|p| inside(&p.id))
    }

    pub fn set_finger(&mut self, i: usize, p: Peer) {
        if p.id != self.me.id {
            self.fingers.set(i, Some(p));
        }
    }

    /// The distinct nodes known ahead of us (fingers and successors): the only fallback successors.
    /// Never the predecessor: taking it as successor would close a tiny ring behind our back.
    fn ahead_peers(&self) -> Vec<Peer> {
        let mut v: Vec<Peer> = self
            .fingers
            .peers()
            .chain(self.succs.iter())
            .copied()
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Structural invariants (STYLE.md "assertions are the executable spec").
    pub fn check_invariants(&self) {
        assert!(
            self.succs.len() <= self.succs_max,
            "successor list longer than r"
        );
        assert!(
            self.succs.iter().all(|p| p.id != self.me.id),
            "me in my successor list"
        );
        for w in self.succs.windows(2) {
            assert!(
                self.me.id.distance_to(&w[0].id) < self.me.id.distance_to(&w[1].id),
                "successor list not ordered by ring distance"
            );
        }
        assert_eq!(
            self.fingers.get(0),
            self.succs.first().copied(),
            "finger[0] is not the successor"
        );
        assert!(
            self.pred.is_none_or(|p| p.id != self.me.id),
            "me as my own predecessor"
        );
    }
}

/// The finger table as runs of equal entries: most of the 256 fingers name the same few nodes (at
/// 10^5 nodes the first ~240 all name the successor), and each run is kept once: about 20 runs of
/// 72 bytes instead of 256 entries of 64 (16 KiB a node, 1.6 GB at 10^5 simulated nodes).
#[derive(Clone, Debug)]
struct Fingers {
    /// `(first index, entry)`: the run covers the indices up to the next run's first; the first
    /// run starts at 0, and neighbouring runs differ.
    runs: Vec<(u16, Option<Peer>)>,
}

impl Fingers {
    fn new() -> Fingers {
        Fingers {
            runs: vec![(0, None)],
        }
    }

    fn get(&self, i: usize) -> Option<Peer> {
        let k = self.runs.partition_point(|(start, _)| *start as usize <= i) - 1;
        self.runs[k].1
    }

    fn set(&mut self, i: usize, entry: Option<Peer>) {
        if self.get(i) != entry {
            self.set_range(i, i + 1, entry);
        }
    }

    /// Entries `from..to` become `entry`.
    fn set_range(&mut self, from: usize, to: usize, entry: Option<Peer>) {
        assert!(from < to && to <= FINGERS);
        let mut runs: Vec<(u16, Option<Peer>)> = Vec::with_capacity(self.runs.len() + 2);
        let mut push = |start: usize, e: Option<Peer>| {
            if runs.last().is_none_or(|(_, last)| *last != e) {
                runs.push((start as u16, e));
            }
        };
        for (k, &(start, e)) in self.runs.iter().enumerate() {
            let (start, end) = (start as usize, self.end_of(k));
            if start >= to {
                push(start, e);
                continue;
            }
            if start < from {
                push(start, e);
            }
            if (start..end).contains(&from) {
                push(from, entry);
            }
            if start < to && to < end {
                push(to, e);
            }
        }
        self.runs = runs;
    }

    fn end_of(&self, k: usize) -> usize {
        self.runs
            .get(k + 1)
            .map_or(FINGERS, |(start, _)| *start as usize)
    }

    /// The nodes of the table in index order, once per run.
    fn peers(&self) -> impl DoubleEndedIterator<Item = &Peer> {
        self.runs.iter().filter_map(|(_, e)| e.as_ref())
    }

    /// The index ranges whose entry satisfies `pred`.
    fn ranges_where(&self, pred: impl Fn(&Peer) -> bool) -> Vec<(usize, usize)> {
        (0..self.runs.len())
            .filter(|&k| self.runs[k].1.as_ref().is_some_and(&pred))
            .map(|k| (self.runs[k].0 as usize, self.end_of(k)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chord::test_peer as peer;

    /// The runs hold what a plain array of 256 entries would, whatever is set.
    #[test]
    fn finger_runs_behave_as_a_plain_table() {
        let mut rng = crate::time::Prng::new(4);
        let mut f = Fingers::new();
        let mut model: Vec<Option<Peer>> = vec![None; FINGERS];
        for _ in 0..5000 {
            let entry = match rng.below(5) {
                0 => None,
                _ => Some(peer(rng.below(6) as u8)),
            };
            let from = rng.below(FINGERS as u64) as usize;
            let to = match rng.below(3) {
                0 => from + 1,
                _ => from + 1 + rng.below((FINGERS - from) as u64) as usize,
            };
            if to == from + 1 {
                f.set(from, entry);
            } else {
                f.set_range(from, to, entry);
            }
            model[from..to].fill(entry);
            let runs_of_model: Vec<Peer> = model
                .iter()
                .enumerate()
                .filter(|&(i, e)| i == 0 || model[i - 1] != *e)
                .filter_map(|(_, e)| *e)
                .collect();
            assert_eq!(f.peers().copied().collect::<Vec<_>>(), runs_of_model);
            assert!(
                f.runs
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 != w[1].1)
            );
            let i = rng.below(FINGERS as u64) as usize;
            assert_eq!(f.get(i), model[i]);
        }
        assert!((0..FINGERS).all(|i| f.get(i) == model[i]));
        let p = peer(3);
        for (from, to) in f.ranges_where(|q| *q == p) {
            assert!(model[from..to].iter().all(|e| *e == Some(p)));
        }
    }

    #[test]
    fn successor_list_is_cleaned_sorted_and_cut() {
        let mut r = Ring::new(peer(100), 3);
        r.set_succs([
            peer(120),
            peer(100),
            peer(150),
            peer(130),
            peer(150),
            peer(5),
            peer(20),
            peer(50),
        ]);
        let ids: Vec<u8> = r.succs().iter().map(|p| p.id.0[0]).collect();
        assert_eq!(ids, vec![120, 150, 5]);
        // An entry that wraps back before an earlier one is not adopted.
        r.set_succs([peer(150), peer(120)]);
        assert_eq!(r.succs(), &[peer(150)]);
        assert_eq!(r.fingers.get(0), Some(peer(150)));
        r.check_invariants();
    }

    #[test]
    fn second_hand_successors_route_only_once_they_answered() {
        let mut r = Ring::new(peer(100), 4);
        r.set_succs([peer(120), peer(150), peer(200)]);
        let key = peer(210).id;
        // The first successor answers every round; the rest are our successor's word.
        assert_eq!(r.closest_preceding(&key, 0), Some(peer(120)));
        assert_eq!(r.closest_preceding(&key, 1), Some(peer(120)));
        assert_eq!(r.successors_to_confirm(1), vec![peer(120)]);
        assert_eq!(r.successors_to_confirm(8), vec![peer(150), peer(200)]);
        assert!(r.successors_to_confirm(8).is_empty(), "each asked once");
        r.heard_from(peer(200).addr);
        assert_eq!(r.closest_preceding(&key, 0), Some(peer(200)));
        assert_eq!(r.closest_preceding(&key, 1), Some(peer(120)));
        // A new list keeps what is known of the entries it still holds.
        r.set_succs([peer(120), peer(200), peer(220)]);
        assert!(r.has_answered(peer(200).addr) && !r.has_answered(peer(220).addr));
        assert_eq!(r.successors_to_confirm(8), vec![peer(220)]);
    }

    #[test]
    fn pred_chain_goes_back_in_order_and_knows_a_whole_ring() {
        let ids = |c: &PredChain| c.nodes.iter().map(|p| p.id.0[0]).collect::<Vec<u8>>();
        let mut r = Ring::new(peer(100), 3);
        r.pred = Some(peer(90));
        r.set_far_preds(vec![peer(80), peer(85), peer(70)], 8);
        // 85 lies after 80 going back: a stale entry ends the chain.
        let chain = r.pred_chain(8);
        assert_eq!((ids(&chain), chain.whole_ring), (vec![90, 80], false));
        r.set_far_preds(vec![peer(80), peer(200), peer(150), peer(100), peer(90)], 8);
        let chain = r.pred_chain(8);
        assert_eq!(
            (ids(&chain), chain.whole_ring),
            (vec![90, 80, 200, 150], true)
        );
        assert_eq!(ids(&r.pred_chain(2)), vec![90, 80]);
        // A forgotten node leaves the chain; without a predecessor it starts further back.
        r.remove(peer(90).addr);
        assert_eq!(ids(&r.pred_chain(8)), vec![80, 200, 150]);
    }

    #[test]
    fn ownership_follows_pred_and_alone_owns_all() {
        let mut r = Ring::new(peer(100), 3);
        let k = |b: u8| peer(b).id;
        assert!(r.owns(&k(7)));
        r.set_succs([peer(200)]);
        assert!(
            !r.owns(&k(100)),
            "without a predecessor a node claims nothing"
        );
        r.pred = Some(peer(50));
        assert!(r.owns(&k(100)) && r.owns(&k(51)) && !r.owns(&k(50)) && !r.owns(&k(150)));
        assert_eq!(r.owner_in_succs(&k(150)), Some((0, peer(200))));
        assert_eq!(r.owner_in_succs(&k(200)), Some((0, peer(200))));
        assert_eq!(r.owner_in_succs(&k(201)), None);
    }

    #[test]
    fn closest_preceding_uses_fingers_and_successors_and_skips_for_retries() {
        let mut r = Ring::new(peer(0), 4);
        r.set_succs([peer(10), peer(20)]);
        r.set_finger(6, peer(64));
        r.set_finger(7, peer(130));
        let key = peer(140).id;
        assert_eq!(r.closest_preceding(&key, 0), Some(peer(130)));
        assert_eq!(r.closest_preceding(&key, 1), Some(peer(64)));
        assert_eq!(r.closest_preceding(&key, 9), Some(peer(10)));
        assert_eq!(r.closest_preceding(&peer(5).id, 0), None);
        assert!(r.remove(peer(130).addr));
        assert_eq!(r.closest_preceding(&key, 0), Some(peer(64)));
    }
}
