//! Key-space balance (issue 11): how evenly the ring's key space is shared, and where on the ring a
//! node should stand.
//!
//! A node may take any of its IP's `id_slots_per_ip` ids (`SHA-256(IP ‖ slot)`,
//! [`Id::of_addr_slot`]); it cannot pick a point freely, but it can pick among those candidates.
//! For each candidate `c` a lookup gives its successor `s`, and `s`'s predecessor is `p`: taking
//! `c` gives the node the range `(p, c]` and leaves `s` with `(c, s]`. [`choose_slot`] takes the
//! candidate that most lowers the sum of squared ranges (it maximizes `(c − p)·(s − c)`, splitting
//! large ranges near their middle). Running nodes keep lowering that sum: a node with a large
//! range invites the holder of a spare slot inside it to move there ([`invite`], from spare-slot
//! records keyed by slot id, which the range owner holds), and the invited node checks the move
//! ([`best_move`]); a node with a small range may also look at its own other slots
//! ([`rebalance_slot`]). `examples/balance.rs` measures these against the other schemes
//! (`cargo run --release --example balance`).
//!
//! Everything here is pure: ring points in, numbers and decisions out.

use crate::id::Id;

/// Statistics of per-node loads (keys, bytes or range lengths): the mean and the 1st percentile,
/// 99th percentile and maximum, each as a ratio to the mean.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Balance {
    pub nodes: usize,
    pub mean: f64,
    /// 1st percentile / mean (nearest rank).
    pub p1: f64,
    /// 99th percentile / mean (nearest rank: on fewer than 100 nodes, the maximum).
    pub p99: f64,
    /// Maximum / mean.
    pub max: f64,
    /// Nodes with a load of zero.
    pub empty: usize,
}

impl Balance {
    /// The statistics of `loads`, one per node; `None` when there is no node or no load at all.
    pub fn of(loads: &[f64]) -> Option<Balance> {
        if loads.is_empty() {
            return None;
        }
        let mut sorted = loads.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mean = sorted.iter().sum::<f64>() / sorted.len() as f64;
        if mean <= 0.0 {
            return None;
        }
        let rank = |q: f64| {
            // Nearest rank: the smallest value with at least q of the values at or below it.
            let i = (q * sorted.len() as f64).ceil() as usize;
            sorted[i.clamp(1, sorted.len()) - 1]
        };
        Some(Balance {
            nodes: sorted.len(),
            mean,
            p1: rank(0.01) / mean,
            p99: rank(0.99) / mean,
            max: sorted[sorted.len() - 1] / mean,
            empty: sorted.iter().filter(|&&l| l == 0.0).count(),
        })
    }

    /// [`Balance::of`] on whole counts (keys or bytes per node).
    pub fn of_counts(loads: &[u64]) -> Option<Balance> {
        Balance::of(&loads.iter().map(|&l| l as f64).collect::<Vec<_>>())
    }
}

/// The share of the ring in `(from, to]`, in `[0, 1]`; `from == to` is the whole ring (a node
/// alone owns everything). Computed on the top 128 bits: precision enough for balance.
pub fn arc_fraction(from: &Id, to: &Id) -> f64 {
    if from == to {
        return 1.0;
    }
    let d = from.distance_to(to);
    let top = u128::from_be_bytes(d.0[..16].try_into().expect("16 bytes"));
    // The low 128 bits add at most 2^-128: below f64's resolution here, but never let a
    // nonzero distance read as an empty range.
    let frac = top as f64 / 2f64.powi(128);
    if frac == 0.0 { f64::MIN_POSITIVE } else { frac }
}

/// The range each node owns, as a share of the ring, for node ids sorted ascending: node `i` owns
/// `(ids[i-1], ids[i]]`, the first one wrapping around from the last.
pub fn ring_arcs(sorted_ids: &[Id]) -> Vec<f64> {
    let n = sorted_ids.len();
    (0..n)
        .map(|i| arc_fraction(&sorted_ids[(i + n - 1) % n], &sorted_ids[i]))
        .collect()
}

/// The mean range per node a node can estimate from its successor list: `successors` (nearest
/// first) span as many ranges as there are of them, counted from `me`.
pub fn mean_arc_estimate(me: &Id, successors: &[Id]) -> Option<f64> {
    let last = successors.last()?;
    if last == me {
        return None;
    }
    Some(arc_fraction(me, last) / successors.len() as f64)
}

/// One of a node's candidate ids and where it lands: `succ` is the node a lookup of `id` finds,
/// `pred` that node's predecessor. On a ring of one node, `pred == succ`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub slot: u8,
    pub id: Id,
    pub pred: Id,
    pub succ: Id,
}

impl Candidate {
    /// `(c − p, s − c)` as shares of the ring: the range the node would own and the range left to
    /// its successor. `None` when a node already holds the id.
    pub fn split(&self) -> Option<(f64, f64)> {
        if self.id == self.pred || self.id == self.succ {
            return None;
        }
        Some((
            arc_fraction(&self.pred, &self.id),
            arc_fraction(&self.id, &self.succ),
        ))
    }
}

/// The ways of choosing among candidates that `examples/balance.rs` compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// The first free candidate (with one slot: a random place, today's scheme).
    First,
    /// The candidate in the largest range `s − p` (Byers, Considine, Mitzenmacher 2003).
    LargestArc,
    /// The candidate giving the node the largest range `c − p`.
    LargestPiece,
    /// The candidate with the largest `min(c − p, s − c)`: the most even split.
    EvenSplit,
    /// The candidate with the largest `(c − p)·(s − c)`: the greatest drop in the sum of squared
    /// ranges (`(x + y)² − x² − y² = 2xy`).
    Product,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Strategy::First,
        Strategy::LargestArc,
        Strategy::LargestPiece,
        Strategy::EvenSplit,
        Strategy::Product,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::First => "random",
            Strategy::LargestArc => "largest-arc",
            Strategy::LargestPiece => "largest-piece",
            Strategy::EvenSplit => "even-split",
            Strategy::Product => "product",
        }
    }

    /// The candidate's score (higher is better); `None` when it cannot be taken.
    pub fn score(self, c: &Candidate) -> Option<f64> {
        let (x, y) = c.split()?;
        Some(match self {
            Strategy::First => 0.0,
            Strategy::LargestArc => x + y,
            Strategy::LargestPiece => x,
            Strategy::EvenSplit => x.min(y),
            Strategy::Product => x * y,
        })
    }
}

/// The slot `strategy` takes among `candidates`: the best score, the first on ties; `None` when
/// no candidate is free.
pub fn choose_slot_by(strategy: Strategy, candidates: &[Candidate]) -> Option<u8> {
    let mut best: Option<(f64, u8)> = None;
    for c in candidates {
        if let Some(score) = strategy.score(c)
            && best.is_none_or(|(b, _)| score > b)
        {
            best = Some((score, c.slot));
        }
    }
    best.map(|(_, slot)| slot)
}

/// The slot a joining node takes: the candidate that splits a range most usefully
/// ([`Strategy::Product`]). On an empty ring every candidate is as good: take slot 0.
pub fn choose_slot(candidates: &[Candidate]) -> Option<u8> {
    choose_slot_by(Strategy::Product, candidates)
}

/// When running nodes look for better places.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rebalance {
    /// A node checks its own other slots ([`rebalance_slot`], k − 1 lookups) when its range is
    /// below this share of the mean range it estimates.
    pub below: f64,
    /// A node invites a holder of a spare slot in its range ([`invite`]) when its range is above
    /// this share of the mean it estimates.
    pub above: f64,
    /// A move must lower the sum of squared ranges by this factor of what leaving raises it by
    /// (at least 1: every move is a gain, so moves cannot go round in circles; more: fewer moves).
    pub gain: f64,
}

impl Rebalance {
    pub const DEFAULT: Rebalance = Rebalance {
        below: 0.5,
        above: 1.0,
        gain: 1.0,
    };

    /// Does a node owning `own` of the ring, with `mean` the estimated mean range, check its own
    /// other slots?
    pub fn looks(&self, own: f64, mean: f64) -> bool {
        own < self.below * mean
    }
}

/// Should a running node move, and to which slot? `me` owns `(pred, me]` and is followed by
/// `succ`; `mean` is its estimate of the mean range ([`mean_arc_estimate`]). `candidates` are its
/// other slots as lookups on the current ring (which still holds `me`) place them. Only when
/// `policy` looks at a range of this size ([`Rebalance::looks`]); then as [`best_move`].
pub fn rebalance_slot(
    policy: &Rebalance,
    me: &Id,
    pred: &Id,
    succ: &Id,
    mean: f64,
    candidates: &[Candidate],
) -> Option<u8> {
    if pred == me || !policy.looks(arc_fraction(pred, me), mean) {
        return None;
    }
    best_move(policy.gain, me, pred, succ, candidates)
}

/// The slot a node `me` (owning `(pred, me]`, followed by `succ`) should move to, if any.
/// Leaving merges `(pred, me]` (length a) into `succ`'s range (length b), raising the sum of
/// squared ranges by `2ab`; joining at a candidate that splits a range into x and y lowers it by
/// `2xy`. Moves to the best candidate ([`choose_slot`], on the ring without `me`) when
/// `xy > gain · ab`: with `gain ≥ 1` every move lowers the sum, so moves cannot go round in
/// circles. A slot inside the own range is a move too: it hands the far part of the range to the
/// successor. `candidates` are placed by lookups on the current ring, which still holds `me`.
pub fn best_move(gain: f64, me: &Id, pred: &Id, succ: &Id, candidates: &[Candidate]) -> Option<u8> {
    if pred == me || succ == me {
        return None; // alone on the ring
    }
    let leave_cost = arc_fraction(pred, me) * arc_fraction(me, succ);
    // The candidates as they land once `me` has left.
    let without_me: Vec<Candidate> = candidates
        .iter()
        .filter(|c| c.id != *me)
        .map(|c| Candidate {
            pred: if c.pred == *me { *pred } else { c.pred },
            succ: if c.succ == *me { *succ } else { c.succ },
            ..*c
        })
        .collect();
    let slot = choose_slot(&without_me)?;
    let split = without_me
        .iter()
        .find(|c| c.slot == slot)
        .and_then(|c| Strategy::Product.score(c))?;
    (split > gain * leave_cost).then_some(slot)
}

/// Another node's spare slot that lies in our range, as a registry record tells it: the slot's
/// id, and where its holder stands now (`holder` owns `(holder_pred, holder]`, followed by
/// `holder_succ`). A node registers its unused slot ids as small records keyed by the slot id
/// itself, so each record is held by exactly the node whose range the slot splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spare {
    pub id: Id,
    pub holder: Id,
    pub holder_pred: Id,
    pub holder_succ: Id,
}

/// Which spare slot in our range `(pred, me]` to invite its holder to, if any: the one whose
/// move most lowers the sum of squared ranges, counting both its leaving (`+2ab`) and its
/// splitting our range (`−2xy`), when `xy > policy.gain · ab`. Looks only when our range is
/// above `policy.above` times `mean`. The invited node checks the move itself ([`best_move`],
/// one lookup) before it makes it.
pub fn invite(
    policy: &Rebalance,
    pred: &Id,
    me: &Id,
    mean: f64,
    spares: &[Spare],
) -> Option<usize> {
    if pred == me || arc_fraction(pred, me) <= policy.above * mean {
        return None;
    }
    let mut best: Option<(f64, usize)> = None;
    for (i, sp) in spares.iter().enumerate() {
        let inside = crate::id::in_open(&sp.id, pred, me);
        if !inside || sp.holder == sp.id || sp.holder_pred == sp.holder {
            continue;
        }
        let cost =
            arc_fraction(&sp.holder_pred, &sp.holder) * arc_fraction(&sp.holder, &sp.holder_succ);
        // Where the slot lands once its holder has left.
        let c = Candidate {
            slot: 0,
            id: sp.id,
            pred: if sp.holder == *pred {
                sp.holder_pred
            } else {
                *pred
            },
            succ: if sp.holder == *me {
                sp.holder_succ
            } else {
                *me
            },
        };
        let Some(gain) = Strategy::Product.score(&c) else {
            continue;
        };
        let net = gain - policy.gain * cost;
        if net > 0.0 && best.is_none_or(|(b, _)| net > b) {
            best = Some((net, i));
        }
    }
    best.map(|(_, i)| i)
}

/// A node whose store holds this share of its quota (percent) or more is near full: it says so in
/// INFO, and with rebalancing on it invites a spare slot's holder into the middle of its bytes.
pub const FULL_PERCENT: u8 = 75;
/// An invited node moves to split a full node's bytes only when its own store is at most this
/// share of the inviter's fill: it takes about half of them, and its own go to its successor.
pub const SPLIT_ROOM_DIVISOR: u8 = 3;
/// An invited node moves for a wide range only when its store is at most this many points fuller
/// than the inviter's: a node in a hot spot stays, or its bytes would pile up on its successor.
pub const FILL_SLACK_PERCENT: u8 = 10;

/// Does an invited node whose store is `own_fill` percent full consider a move into the range of
/// a node whose store is `inviter_fill` percent full? (It still checks the move itself.)
pub fn takes_invitation(inviter_fill: u8, own_fill: u8) -> bool {
    if inviter_fill >= FULL_PERCENT {
        own_fill <= inviter_fill / SPLIT_ROOM_DIVISOR
    } else {
        own_fill <= inviter_fill.saturating_add(FILL_SLACK_PERCENT)
    }
}

/// Which spare slot in our range `(pred, me]` to invite its holder to when our store is nearly full
/// (a hot range, not a wide one): the one nearest `middle`, the key below which half the bytes we
/// hold as the responsible node lie, so the newcomer takes about half of them. The holder's own
/// range does not count here: the invited node checks its own store instead. Never our
/// predecessor: its leaving would hand its range, and its bytes, to us.
pub fn invite_to_split(pred: &Id, me: &Id, middle: &Id, spares: &[Spare]) -> Option<usize> {
    if pred == me {
        return None;
    }
    let half = arc_fraction(pred, middle);
    spares
        .iter()
        .enumerate()
        .filter(|(_, sp)| {
            let holder = sp.holder;
            crate::id::in_open(&sp.id, pred, me)
                && holder != sp.id
                && holder != *me
                && holder != *pred
        })
        .map(|(i, sp)| ((arc_fraction(pred, &sp.id) - half).abs(), i))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ring point `num/den` of the way round.
    fn at(num: u64, den: u64) -> Id {
        let top = ((num as u128) << 64) / den as u128;
        let mut out = [0u8; 32];
        out[..16].copy_from_slice(&(top << 64).to_be_bytes());
        Id(out)
    }

    fn cand(slot: u8, id: Id, pred: Id, succ: Id) -> Candidate {
        Candidate {
            slot,
            id,
            pred,
            succ,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn balance_of_even_and_skewed_loads() {
        let even = Balance::of_counts(&[5; 10]).unwrap();
        assert_eq!((even.nodes, even.empty), (10, 0));
        assert!(close(even.mean, 5.0) && close(even.p1, 1.0) && close(even.p99, 1.0));
        assert!(close(even.max, 1.0));

        // 200 nodes: 0, 1, ..., 199 (mean 99.5).
        let ramp: Vec<u64> = (0..200).collect();
        let b = Balance::of_counts(&ramp).unwrap();
        assert_eq!(b.empty, 1);
        assert!(close(b.mean, 99.5));
        assert!(close(b.p1, 1.0 / 99.5), "nearest rank 2 of 200: {}", b.p1);
        assert!(
            close(b.p99, 197.0 / 99.5),
            "nearest rank 198 of 200: {}",
            b.p99
        );
        assert!(close(b.max, 199.0 / 99.5));

        // Under 100 nodes the 99th percentile is the maximum, the 1st the minimum.
        let small = Balance::of(&[1.0, 2.0, 3.0, 6.0]).unwrap();
        assert!(close(small.p99, 2.0) && close(small.max, 2.0) && close(small.p1, 1.0 / 3.0));

        assert_eq!(Balance::of(&[]), None);
        assert_eq!(Balance::of_counts(&[0, 0]), None);
    }

    #[test]
    fn arcs_cover_the_ring() {
        assert!(close(arc_fraction(&at(1, 4), &at(3, 4)), 0.5));
        assert!(close(arc_fraction(&at(3, 4), &at(1, 4)), 0.5), "wraps");
        assert!(close(arc_fraction(&at(1, 8), &at(1, 8)), 1.0), "alone: all");
        let mut tiny = at(1, 2);
        tiny.0[31] += 1;
        assert!(arc_fraction(&at(1, 2), &tiny) > 0.0, "never reads as empty");

        let ids = [at(1, 8), at(1, 2), at(7, 8)];
        let arcs = ring_arcs(&ids);
        assert!(close(arcs[0], 0.25) && close(arcs[1], 0.375) && close(arcs[2], 0.375));
        assert!(close(arcs.iter().sum::<f64>(), 1.0));
    }

    #[test]
    fn the_mean_range_estimate_spans_the_successor_list() {
        let me = at(1, 32);
        let succs: Vec<Id> = (1..=8).map(|i| at(1 + 2 * i, 32)).collect();
        assert!(close(mean_arc_estimate(&me, &succs).unwrap(), 1.0 / 16.0));
        assert_eq!(mean_arc_estimate(&me, &[]), None);
        assert_eq!(mean_arc_estimate(&me, &[me]), None);
    }

    #[test]
    fn strategies_pick_as_documented() {
        // Slot 0: in (0, 1/2), near its start. Slot 1: the middle of (1/2, 3/4).
        // Slot 2: near the end of (0, 1/2). Slot 3: taken (a node holds 3/4).
        let cands = [
            cand(0, at(1, 32), at(0, 1), at(1, 2)),
            cand(1, at(5, 8), at(1, 2), at(3, 4)),
            cand(2, at(15, 32), at(0, 1), at(1, 2)),
            cand(3, at(3, 4), at(1, 2), at(3, 4)),
        ];
        assert_eq!(choose_slot_by(Strategy::First, &cands), Some(0));
        assert_eq!(
            choose_slot_by(Strategy::LargestArc, &cands),
            Some(0),
            "ties: first"
        );
        assert_eq!(choose_slot_by(Strategy::LargestPiece, &cands), Some(2));
        // min: 1/32, 1/8, 1/32; product: 15/1024, 1/64 = 16/1024, 15/1024.
        assert_eq!(choose_slot_by(Strategy::EvenSplit, &cands), Some(1));
        assert_eq!(choose_slot_by(Strategy::Product, &cands), Some(1));
        assert_eq!(choose_slot(&cands), Some(1));
        // The product prefers a skewed split of a big range to an even split of a small one.
        let big = [
            cand(0, at(17, 32), at(1, 2), at(9, 16)),
            cand(1, at(1, 32), at(0, 1), at(1, 2)),
        ];
        assert_eq!(choose_slot(&big), Some(1));
        assert_eq!(choose_slot(&cands[3..]), None, "nothing free");
        assert_eq!(choose_slot(&[]), None);
    }

    #[test]
    fn on_a_ring_of_one_any_free_candidate_splits_the_whole_ring() {
        let lone = at(0, 1);
        let cands = [
            cand(0, at(1, 16), lone, lone),
            cand(1, at(7, 16), lone, lone),
            cand(2, lone, lone, lone),
        ];
        assert_eq!(cands[1].split().map(|(x, y)| x + y), Some(1.0));
        assert_eq!(choose_slot(&cands), Some(1), "nearest the far side");
    }

    #[test]
    fn a_node_with_a_small_range_moves_to_split_a_large_one() {
        const P: Rebalance = Rebalance::DEFAULT;
        // Ring: 0, 1/2, 1/2 + 1/64 (me), 3/4. I own 1/64, my successor 3/4 owns 15/64.
        let (pred, me, succ) = (at(1, 2), at(33, 64), at(3, 4));
        let mean = 0.25;
        // Slot 1 lands mid (3/4, 1); slot 2 lands in my own range; slot 0 is me.
        let cands = [
            cand(0, me, pred, me),
            cand(1, at(7, 8), at(3, 4), at(0, 1)),
            cand(2, at(129, 256), pred, me),
        ];
        assert_eq!(rebalance_slot(&P, &me, &pred, &succ, mean, &cands), Some(1));
        // Not below half the mean estimate: stays.
        assert_eq!(
            rebalance_slot(&P, &me, &pred, &succ, 1.0 / 33.0, &cands),
            None
        );
        // Only a poor candidate (a sliver off my successor's range once I left): stays.
        let poor = [cand(2, at(191, 256), me, at(3, 4))];
        assert_eq!(rebalance_slot(&P, &me, &pred, &succ, mean, &poor), None);
        // A candidate landing in my successor's range (its predecessor is me) counts as landing
        // in the range merged after I leave, (1/2, 3/4): its middle is a good place.
        let own = [cand(2, at(5, 8), me, succ)];
        assert_eq!(rebalance_slot(&P, &me, &pred, &succ, mean, &own), Some(2));
        // Alone: nowhere to go.
        assert_eq!(rebalance_slot(&P, &me, &me, &me, mean, &cands), None);
    }

    #[test]
    fn a_large_range_invites_the_holder_whose_move_gains_most() {
        // Ring: A 0, B 1/16, C 1/8, me 3/4. I own (1/8, 3/4]: 5/8 of the ring, the mean is 1/4.
        let (a, b, c, me) = (at(0, 1), at(1, 16), at(1, 8), at(3, 4));
        let spare = |id, holder, holder_pred, holder_succ| Spare {
            id,
            holder,
            holder_pred,
            holder_succ,
        };
        // A's slot at 1/4: A leaves (3/4, 0] (cost 1/4 · 1/16 = 4/256), splits 1/8 + 1/2 (16/256).
        // B's slot at 7/16: B leaves (0, 1/16] (cost 1/256), splits 5/16 + 5/16 (25/256): best.
        // A slot outside my range, and one a node already holds, count for nothing.
        let spares = [
            spare(at(1, 4), a, me, b),
            spare(at(7, 16), b, a, c),
            spare(at(7, 8), b, a, c),
            spare(c, c, b, me),
        ];
        let p = Rebalance::DEFAULT;
        assert_eq!(invite(&p, &c, &me, 0.25, &spares), Some(1));
        assert_eq!(invite(&p, &c, &me, 0.25, &spares[2..]), None);
        // My range is not above the mean I estimate: no invitation.
        assert_eq!(invite(&p, &c, &me, 1.0, &spares), None);
        // My predecessor C moving to 1/2: once it has left, the slot splits (1/16, 3/4).
        let own_pred = [spare(at(1, 2), c, b, me)];
        assert_eq!(invite(&p, &c, &me, 0.25, &own_pred), Some(0));
        // A move that gains less than `gain` times its cost is not worth an invitation.
        let picky = Rebalance { gain: 30.0, ..p };
        assert_eq!(invite(&picky, &c, &me, 0.25, &spares), None);
        // The invited node agrees: B at 1/16 (range 1/16, successor's 1/16) moving to 7/16.
        let cand = cand(3, at(7, 16), c, me);
        assert_eq!(best_move(1.0, &b, &a, &c, &[cand]), Some(3));
        assert_eq!(best_move(30.0, &b, &a, &c, &[cand]), None);
    }

    #[test]
    fn a_full_node_invites_the_spare_nearest_the_middle_of_its_bytes() {
        // I own (1/8, 3/4]; half my bytes lie below 5/8 (a hot spot near my end).
        let (a, b, c, me) = (at(0, 1), at(1, 16), at(1, 8), at(3, 4));
        let spare = |id, holder| Spare {
            id,
            holder,
            holder_pred: a,
            holder_succ: c,
        };
        let spares = [
            spare(at(1, 4), a),
            spare(at(9, 16), b),
            spare(at(7, 8), b), // outside my range
            spare(c, c),        // an id its holder already has
        ];
        assert_eq!(invite_to_split(&c, &me, &at(5, 8), &spares), Some(1));
        // The middle near my range's start: the spare at 1/4 is nearer.
        assert_eq!(invite_to_split(&c, &me, &at(3, 16), &spares), Some(0));
        assert_eq!(invite_to_split(&c, &me, &at(5, 8), &spares[2..]), None);
        // Not our predecessor C, whose range would come to us.
        let from_pred = [spare(at(5, 8), c)];
        assert_eq!(invite_to_split(&c, &me, &at(5, 8), &from_pred), None);
        // Alone on the ring: nobody to invite.
        assert_eq!(invite_to_split(&me, &me, &at(5, 8), &spares), None);
    }

    #[test]
    fn an_invited_node_weighs_its_store_against_the_inviters() {
        // A wide range: moves unless its own store is much fuller.
        assert!(takes_invitation(0, 0));
        assert!(takes_invitation(30, 40));
        assert!(!takes_invitation(30, 41));
        // A full store: only a node with room for half of it.
        assert!(takes_invitation(90, 30));
        assert!(!takes_invitation(90, 31));
        assert!(!takes_invitation(75, 26));
    }
}
