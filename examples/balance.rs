//! Issue 11's offline study: how evenly the key space is shared when each node may take one of k ids
//! `SHA-256(IP ‖ slot)`, slot < k, under several ways of choosing the slot; what rebalancing adds
//! and costs; whether balance holds under churn; and what k the targets need.
//! `cargo run --release --example balance` (about a minute; `quick` skips N = 10^4).
//!
//! Model: N hosts with random IPv4 addresses join one by one; for each of its k candidate ids a
//! joining node learns the range it lands in (a lookup gives the successor s, a PREDECESSOR GET
//! its predecessor p) and picks by a strategy of [`voidphone_dht::balance`]. Figures are means over
//! 5 rings (max also as the worst ring, empty ranges summed over the 5); "keys" counts 5·10^5
//! uniform random keys per node, "arcs" are range lengths, both as ratios to the mean.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;
use voidphone_dht::balance::{
    Balance, Candidate, Rebalance, Spare, Strategy, arc_fraction, best_move, choose_slot_by,
    invite, mean_arc_estimate, rebalance_slot, ring_arcs,
};
use voidphone_dht::id::{Id, in_open};
use voidphone_dht::time::Prng;

const RINGS: u64 = 5;
const KEYS: usize = 500_000;
const KS: [u8; 5] = [1, 2, 4, 8, 16];
const SUCCESSORS: usize = 8;
const ROUNDS_MAX: usize = 50;
/// How many invitations one range change may set off in a row.
const CASCADE_MAX: usize = 8;

/// The ring: node id → host, each host's slot ids, and the spare-slot registry (every slot below
/// k of every host on the ring, keyed by the slot id: the records a range owner holds).
struct Ring {
    k: u8,
    slots: Vec<Vec<Id>>,
    at: Vec<Option<Id>>,
    nodes: BTreeMap<Id, usize>,
    spare: BTreeMap<Id, usize>,
    /// Invitations sent (each costs the invited node a lookup to check the move).
    invitations: usize,
}

impl Ring {
    fn new(k: u8) -> Ring {
        Ring {
            k,
            slots: Vec::new(),
            at: Vec::new(),
            nodes: BTreeMap::new(),
            spare: BTreeMap::new(),
            invitations: 0,
        }
    }

    /// A new host with a random IPv4 address.
    fn host(&mut self, rng: &mut Prng) -> usize {
        let ip = IpAddr::V4(Ipv4Addr::from(rng.next_u64() as u32));
        // The first k of the IP's ids: the same whatever k, so every k sees the same candidates.
        self.slots
            .push((0..self.k).map(|s| Id::of_ip_slot(ip, s)).collect());
        self.at.push(None);
        self.slots.len() - 1
    }

    fn succ_of(&self, id: &Id) -> Id {
        *self
            .nodes
            .range(id..)
            .next()
            .or_else(|| self.nodes.iter().next())
            .expect("non-empty")
            .0
    }

    fn pred_of(&self, id: &Id) -> Id {
        *self
            .nodes
            .range(..id)
            .next_back()
            .or_else(|| self.nodes.iter().next_back())
            .expect("non-empty")
            .0
    }

    /// The node after `id` (not `id` itself).
    fn next_of(&self, id: &Id) -> Id {
        *self
            .nodes
            .range((std::ops::Bound::Excluded(id), std::ops::Bound::Unbounded))
            .next()
            .or_else(|| self.nodes.iter().next())
            .expect("non-empty")
            .0
    }

    fn successors(&self, id: &Id) -> Vec<Id> {
        self.nodes
            .range((std::ops::Bound::Excluded(id), std::ops::Bound::Unbounded))
            .chain(self.nodes.iter())
            .take(SUCCESSORS.min(self.nodes.len() - 1))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Host `h`'s candidates below k, placed by a lookup and a PREDECESSOR GET each.
    fn candidates(&self, h: usize) -> Vec<Candidate> {
        self.slots[h][..self.k as usize]
            .iter()
            .enumerate()
            .map(|(slot, id)| {
                let succ = self.succ_of(id);
                Candidate {
                    slot: slot as u8,
                    id: *id,
                    pred: self.pred_of(&succ),
                    succ,
                }
            })
            .collect()
    }

    fn place(&mut self, h: usize, id: Id) {
        self.nodes.insert(id, h);
        self.at[h] = Some(id);
    }

    /// Host `h` joins at the slot `strategy` picks and registers its slots.
    fn join(&mut self, h: usize, strategy: Strategy) -> Option<Id> {
        let slot = if self.nodes.is_empty() {
            0
        } else {
            choose_slot_by(strategy, &self.candidates(h))?
        };
        for id in &self.slots[h][..self.k as usize] {
            self.spare.insert(*id, h);
        }
        let id = self.slots[h][slot as usize];
        self.place(h, id);
        Some(id)
    }

    fn leave(&mut self, id: &Id) {
        let h = self.nodes.remove(id).expect("on the ring");
        self.at[h] = None;
        for id in &self.slots[h][..self.k as usize] {
            self.spare.remove(id);
        }
    }

    fn move_to(&mut self, from: &Id, to: Id) {
        let h = self.nodes.remove(from).expect("on the ring");
        self.place(h, to);
    }

    fn mean_estimate(&self, me: &Id) -> Option<f64> {
        mean_arc_estimate(me, &self.successors(me))
    }

    /// Node `me` checks its own other slots ([`rebalance_slot`]). Returns (moved to, lookups).
    fn self_check(&mut self, policy: &Rebalance, me: Id) -> (Option<Id>, usize) {
        let Some(&h) = self.nodes.get(&me) else {
            return (None, 0);
        };
        let (pred, succ) = (self.pred_of(&me), self.next_of(&me));
        let Some(mean) = self.mean_estimate(&me) else {
            return (None, 0);
        };
        if !policy.looks(arc_fraction(&pred, &me), mean) {
            return (None, 0);
        }
        let cands = self.candidates(h);
        let slot = rebalance_slot(policy, &me, &pred, &succ, mean, &cands);
        let to = slot.map(|s| self.slots[h][s as usize]);
        if let Some(to) = to {
            self.move_to(&me, to);
        }
        (to, cands.len() - 1)
    }

    /// Node `me` looks at the spare slots registered in its range ([`invite`]); the invited
    /// holder checks the move ([`best_move`]: one lookup) and makes it. Returns the holder's old id.
    fn invite_once(&mut self, policy: &Rebalance, me: Id) -> Option<Id> {
        if self.nodes.len() < 3 || !self.nodes.contains_key(&me) {
            return None;
        }
        let pred = self.pred_of(&me);
        let mean = self.mean_estimate(&me)?;
        if arc_fraction(&pred, &me) <= policy.above * mean {
            return None;
        }
        let inside: Vec<(Id, usize)> = if pred < me {
            self.spare.range(pred..me).map(|(c, h)| (*c, *h)).collect()
        } else {
            self.spare
                .range(pred..)
                .chain(self.spare.range(..me))
                .map(|(c, h)| (*c, *h))
                .collect()
        };
        let spares: Vec<Spare> = inside
            .iter()
            .filter(|(c, _)| in_open(c, &pred, &me))
            .map(|&(id, h)| {
                let holder = self.at[h].expect("registered hosts are on the ring");
                Spare {
                    id,
                    holder,
                    holder_pred: self.pred_of(&holder),
                    holder_succ: self.next_of(&holder),
                }
            })
            .collect();
        let sp = spares[invite(policy, &pred, &me, mean, &spares)?];
        self.invitations += 1;
        let h = self.nodes[&sp.holder];
        let slot = self.slots[h].iter().position(|id| *id == sp.id)? as u8;
        let succ = self.succ_of(&sp.id);
        let cand = Candidate {
            slot,
            id: sp.id,
            pred: self.pred_of(&succ),
            succ,
        };
        best_move(
            policy.gain,
            &sp.holder,
            &sp.holder_pred,
            &sp.holder_succ,
            &[cand],
        )?;
        self.move_to(&sp.holder, sp.id);
        Some(sp.holder)
    }

    /// Invitations from `me`, then from whichever node a move enlarged, up to CASCADE_MAX.
    fn invite_cascade(&mut self, policy: &Rebalance, mut me: Id) -> usize {
        let mut moves = 0;
        while moves < CASCADE_MAX {
            let Some(old) = self.invite_once(policy, me) else {
                break;
            };
            moves += 1;
            me = self.succ_of(&old); // the holder's old range went to its successor
        }
        moves
    }

    fn sorted_ids(&self) -> Vec<Id> {
        self.nodes.keys().copied().collect()
    }
}

/// Keys per node for sorted node ids and sorted keys: node i holds (ids[i-1], ids[i]].
fn key_counts(ids: &[Id], keys: &[Id]) -> Vec<u64> {
    let upto: Vec<usize> = ids
        .iter()
        .map(|id| keys.partition_point(|k| k <= id))
        .collect();
    let n = ids.len();
    (0..n)
        .map(|i| match i {
            0 => (upto[0] + keys.len() - upto[n - 1]) as u64,
            _ => (upto[i] - upto[i - 1]) as u64,
        })
        .collect()
}

fn random_keys(seed: u64, count: usize) -> Vec<Id> {
    let mut rng = Prng::new(seed);
    let mut keys: Vec<Id> = (0..count)
        .map(|_| {
            let mut b = [0u8; 32];
            for chunk in b.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next_u64().to_be_bytes());
            }
            Id(b)
        })
        .collect();
    keys.sort_unstable();
    keys
}

/// Means over rings (max also as the worst ring), empty ranges summed, moves and lookups per node.
#[derive(Default)]
struct Summary {
    rings: usize,
    nodes: usize,
    key: [f64; 3],
    key_worst: f64,
    key_empty: usize,
    arc: [f64; 3],
    arc_worst: f64,
    moves: usize,
    lookups: usize,
}

impl Summary {
    fn add(&mut self, ring: &Ring, keys: &[Id]) {
        let ids = ring.sorted_ids();
        let k = Balance::of_counts(&key_counts(&ids, keys)).expect("keys");
        let a = Balance::of(&ring_arcs(&ids)).expect("nodes");
        self.rings += 1;
        self.nodes += ids.len();
        for (sum, v) in self.key.iter_mut().zip([k.p1, k.p99, k.max]) {
            *sum += v;
        }
        for (sum, v) in self.arc.iter_mut().zip([a.p1, a.p99, a.max]) {
            *sum += v;
        }
        self.key_worst = self.key_worst.max(k.max);
        self.arc_worst = self.arc_worst.max(a.max);
        self.key_empty += k.empty;
    }

    /// max ≤ 2.0 (every ring), p99 ≤ `p99` (mean), no empty range: on keys.
    fn meets(&self, p99: f64) -> bool {
        self.key_worst <= 2.0 && self.key[1] / self.rings as f64 <= p99 && self.key_empty == 0
    }

    fn row(&self) -> String {
        self.row_to(1.6)
    }

    /// The row, marked `*` when the targets (p99 ≤ `p99`) are met.
    fn row_to(&self, p99: f64) -> String {
        let r = self.rings as f64;
        let mut s = format!(
            "{} keys p1 {:.2} p99 {:.2} max {:.2} ({:.2}) empty {:>2} | arcs p1 {:.2} p99 {:.2} max {:.2} ({:.2})",
            if self.meets(p99) { '*' } else { ' ' },
            self.key[0] / r,
            self.key[1] / r,
            self.key[2] / r,
            self.key_worst,
            self.key_empty,
            self.arc[0] / r,
            self.arc[1] / r,
            self.arc[2] / r,
            self.arc_worst,
        );
        if self.moves + self.lookups > 0 {
            let per = |x: usize| x as f64 * self.rings as f64 / self.nodes as f64 / r;
            s += &format!(
                " | moves/node {:.3} lookups/node {:.1}",
                per(self.moves),
                per(self.lookups)
            );
        }
        s
    }
}

/// A ring of N hosts joined in turn by `strategy` with k slots each. The hosts of a seed are the
/// same for every k and strategy: every scheme sees the same candidates.
fn build(seed: u64, n: usize, k: u8, strategy: Strategy) -> (Ring, Prng) {
    let mut rng = Prng::new(seed);
    let mut ring = Ring::new(k);
    for _ in 0..n {
        let h = ring.host(&mut rng);
        ring.join(h, strategy);
    }
    (ring, rng)
}

fn shuffled(ids: Vec<Id>, rng: &mut Prng) -> Vec<Id> {
    let mut ids = ids;
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.below(i as u64 + 1) as usize);
    }
    ids
}

#[derive(Clone, Copy, PartialEq)]
enum Repair {
    None,
    /// Each node checks its own slots, in rounds (at the end) or `n` random nodes per churn event.
    SelfCheck(Rebalance, usize),
    /// Range owners invite holders of spare slots in their range: in rounds (at the end), and
    /// after every leave from the leaver's successor (cascading).
    Invite(Rebalance),
}

/// Rounds until no node moves. Returns (moves, lookups).
fn to_fixpoint(ring: &mut Ring, repair: Repair, rng: &mut Prng) -> (usize, usize) {
    let (mut moves, mut lookups) = (0, 0);
    for _ in 0..ROUNDS_MAX {
        let mut moved = 0;
        for me in shuffled(ring.sorted_ids(), rng) {
            match repair {
                Repair::None => {}
                Repair::SelfCheck(policy, _) => {
                    let (to, l) = ring.self_check(&policy, me);
                    moved += to.is_some() as usize;
                    lookups += l;
                }
                Repair::Invite(policy) => moved += ring.invite_cascade(&policy, me),
            }
        }
        lookups += std::mem::take(&mut ring.invitations);
        moves += moved;
        if moved == 0 {
            break;
        }
    }
    (moves, lookups)
}

/// 2N churn events: N times, a random node leaves and a fresh host joins by `strategy`, with
/// `repair` running as it would alongside. Returns (moves, lookups).
fn churn(ring: &mut Ring, strategy: Strategy, repair: Repair, rng: &mut Prng) -> (usize, usize) {
    // Hosts on the ring (a host keeps its index when it moves).
    let mut alive: Vec<usize> = ring.nodes.values().copied().collect();
    let (mut moves, mut lookups) = (0, 0);
    for _ in 0..alive.len() {
        let host = alive.swap_remove(rng.below(alive.len() as u64) as usize);
        let gone = ring.at[host].expect("on the ring");
        ring.leave(&gone);
        if let Repair::Invite(policy) = repair {
            moves += ring.invite_cascade(&policy, ring.succ_of(&gone));
        }
        let h = ring.host(rng);
        if ring.join(h, strategy).is_some() {
            alive.push(h);
        }
        if let Repair::SelfCheck(policy, checks) = repair {
            for _ in 0..checks {
                let host = alive[rng.below(alive.len() as u64) as usize];
                let (to, l) = ring.self_check(&policy, ring.at[host].expect("on the ring"));
                lookups += l;
                moves += to.is_some() as usize;
            }
        }
    }
    (moves, lookups + std::mem::take(&mut ring.invitations))
}

const SELF_CHECK_LOW: Rebalance = Rebalance {
    below: 0.5,
    above: f64::INFINITY,
    gain: 1.0,
};
/// Invitations that must gain 1.5 times their cost: fewer moves.
const FEWER_MOVES: Rebalance = Rebalance {
    gain: 1.5,
    ..Rebalance::DEFAULT
};
const SELF_CHECK_ALL: Rebalance = Rebalance {
    below: f64::INFINITY,
    above: 0.0,
    gain: 1.0,
};

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let started = Instant::now();
    let sizes: &[usize] = if quick {
        &[16, 100, 1000]
    } else {
        &[16, 100, 1000, 10_000]
    };
    let keys: Vec<Vec<Id>> = (0..RINGS).map(|s| random_keys(1_000 + s, KEYS)).collect();
    let seeds = || keys.iter().enumerate().map(|(s, k)| (s as u64, k));
    println!(
        "(*: keys max <= 2.0 on every ring, p99 <= 1.6, no empty range; (x) = worst ring's max)"
    );

    println!("\n# Reference: N equal ranges (the sampling noise of {KEYS} keys alone)");
    for &n in sizes {
        let mut sum = Summary::default();
        for (_, keys) in seeds() {
            let mut ring = Ring::new(1);
            for i in 0..n {
                let mut b = [0u8; 32];
                b[..16].copy_from_slice(&((u128::MAX / n as u128) * i as u128).to_be_bytes());
                ring.nodes.insert(Id(b), i);
            }
            sum.add(&ring, keys);
        }
        println!("N {n:>5} even ring           {}", sum.row());
    }

    println!("\n# Joins by choice (no rebalancing)");
    for &n in sizes {
        for &k in &KS {
            for strategy in Strategy::ALL {
                if (k == 1) != (strategy == Strategy::First) {
                    continue;
                }
                let mut sum = Summary::default();
                for (seed, keys) in seeds() {
                    sum.add(&build(seed, n, k, strategy).0, keys);
                }
                println!("N {n:>5} k {k:>2} {:<14} {}", strategy.name(), sum.row());
            }
        }
    }

    let repairs = [
        ("self-check <0.5", Repair::SelfCheck(SELF_CHECK_LOW, 4)),
        ("self-check all", Repair::SelfCheck(SELF_CHECK_ALL, 4)),
        ("invite", Repair::Invite(Rebalance::DEFAULT)),
    ];
    println!("\n# Rebalancing after the joins (product), in rounds until no node moves");
    for &n in sizes {
        for k in [8u8, 16] {
            for (name, repair) in repairs {
                let mut sum = Summary::default();
                for (seed, keys) in seeds() {
                    let (mut ring, mut rng) = build(seed, n, k, Strategy::Product);
                    let (m, l) = to_fixpoint(&mut ring, repair, &mut rng);
                    (sum.moves, sum.lookups) = (sum.moves + m, sum.lookups + l);
                    sum.add(&ring, keys);
                }
                println!("N {n:>5} k {k:>2} {name:<16} {}", sum.row());
            }
        }
    }

    println!(
        "\n# Churn: after the ring forms, N leaves at random and N joins by choice, interleaved"
    );
    println!(
        "# (self-check: 4 random nodes check per event; invite: the leaver's successor invites)"
    );
    for &n in sizes {
        for (k, strategy, name, repair) in [
            (1, Strategy::First, "random", Repair::None),
            (8, Strategy::LargestArc, "largest-arc", Repair::None),
            (8, Strategy::Product, "product", Repair::None),
            (8, Strategy::Product, "+self-check all", repairs[1].1),
            (8, Strategy::Product, "+invite", repairs[2].1),
            (16, Strategy::Product, "product", Repair::None),
            (16, Strategy::Product, "+invite", repairs[2].1),
            (
                16,
                Strategy::Product,
                "+invite gain 1.5",
                Repair::Invite(FEWER_MOVES),
            ),
        ] {
            let mut sum = Summary::default();
            for (seed, keys) in seeds() {
                let (mut ring, mut rng) = build(seed, n, k, strategy);
                to_fixpoint(&mut ring, repair, &mut rng);
                let (m, l) = churn(&mut ring, strategy, repair, &mut rng);
                (sum.moves, sum.lookups) = (sum.moves + m, sum.lookups + l);
                sum.add(&ring, keys);
            }
            println!("N {n:>5} k {k:>2} {name:<16} {}", sum.row());
        }
    }

    println!(
        "\n# More slots (k = 8, 16: above): product joins + invitations, formed and after 2N churn events"
    );
    for &n in &sizes[sizes.len() - 2..] {
        for k in [32u8, 64] {
            let (mut formed, mut churned) = (Summary::default(), Summary::default());
            for (seed, keys) in seeds() {
                let (mut ring, mut rng) = build(seed, n, k, Strategy::Product);
                let repair = Repair::Invite(Rebalance::DEFAULT);
                let (m, l) = to_fixpoint(&mut ring, repair, &mut rng);
                (formed.moves, formed.lookups) = (formed.moves + m, formed.lookups + l);
                formed.add(&ring, keys);
                let (m, l) = churn(&mut ring, Strategy::Product, repair, &mut rng);
                (churned.moves, churned.lookups) = (churned.moves + m, churned.lookups + l);
                churned.add(&ring, keys);
            }
            println!("N {n:>5} k {k:>2} formed  {}", formed.row());
            println!("N {n:>5} k {k:>2} churned {}", churned.row());
        }
    }

    println!(
        "\n# 16 nodes, 10^4 values (issue: max/mean of values held as primary <= 2.0; * = met)"
    );
    let few: Vec<Vec<Id>> = (0..RINGS).map(|s| random_keys(2_000 + s, 10_000)).collect();
    for k in [1u8, 4, 8, 16] {
        for (name, repair) in [("join only", Repair::None), ("+invite", repairs[2].1)] {
            let strategy = if k == 1 {
                Strategy::First
            } else {
                Strategy::Product
            };
            let mut sum = Summary::default();
            for (seed, keys) in few.iter().enumerate() {
                let (mut ring, mut rng) = build(seed as u64, 16, k, strategy);
                let (m, l) = to_fixpoint(&mut ring, repair, &mut rng);
                (sum.moves, sum.lookups) = (sum.moves + m, sum.lookups + l);
                sum.add(&ring, keys);
            }
            println!("N    16 k {k:>2} {name:<16} {}", sum.row_to(f64::INFINITY));
        }
    }
    println!("\n({:.0} s)", started.elapsed().as_secs_f64());
}
