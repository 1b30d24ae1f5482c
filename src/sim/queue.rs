//! The event queue: a timing wheel with one bucket per simulated millisecond (events are
//! integer-ms), and a heap for the rare events beyond the wheel's horizon. It pops in exactly the
//! order of a heap of `(time, seq)`: within a millisecond, in the order scheduled. At 10^5 nodes
//! the binary heap it replaces (log2 of half a million entries, each a hundred bytes moved per
//! level) cost a seventh of the run time; here a push and a pop are O(1).
//!
//! Why the order is the heap's: a bucket is a FIFO, and an event goes straight into a bucket only
//! once its time is within the horizon of `base`, the earliest time still pending. Events parked in
//! the far heap move into their bucket as soon as `base` brings their time within the horizon,
//! before anything else can be scheduled there, and in `(time, seq)` order; so every bucket is in
//! the order of scheduling.

use crate::time::Time;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// Buckets in the wheel: the horizon, ms (past twice the papers' 30 s periods).
const WHEEL_MS: u64 = 1 << 17;

pub(super) struct Queue<E> {
    /// Bucket `t % WHEEL_MS` holds the events of time `t`, for `t` in `base..base + WHEEL_MS`.
    wheel: Vec<VecDeque<E>>,
    /// Every pending event is at `base` or later; the buckets before it are empty.
    base: u64,
    /// Events in the wheel.
    in_wheel: usize,
    /// Events at `base + WHEEL_MS` or later, by time, then in the order scheduled.
    far: BinaryHeap<Reverse<Far<E>>>,
    seq: u64,
}

struct Far<E> {
    time: u64,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Far<E> {
    fn eq(&self, o: &Self) -> bool {
        (self.time, self.seq) == (o.time, o.seq)
    }
}
impl<E> Eq for Far<E> {}
impl<E> PartialOrd for Far<E> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<E> Ord for Far<E> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.time, self.seq).cmp(&(o.time, o.seq))
    }
}

impl<E> Queue<E> {
    pub fn new() -> Queue<E> {
        Queue {
            wheel: (0..WHEEL_MS).map(|_| VecDeque::new()).collect(),
            base: 0,
            in_wheel: 0,
            far: BinaryHeap::new(),
            seq: 0,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.in_wheel + self.far.len()
    }

    /// Schedules `event` at `time`, which must not lie before an event already popped.
    pub fn push(&mut self, time: Time, event: E) {
        let t = time.0;
        assert!(t >= self.base, "an event in the past: {t} < {}", self.base);
        if t < self.base + WHEEL_MS {
            self.wheel[(t % WHEEL_MS) as usize].push_back(event);
            self.in_wheel += 1;
        } else {
            self.seq += 1;
            let seq = self.seq;
            self.far.push(Reverse(Far {
                time: t,
                seq,
                event,
            }));
        }
    }

    /// The next event if it is due at or before `until`, with its time.
    pub fn pop_until(&mut self, until: Time) -> Option<(Time, E)> {
        if self.base > until.0 {
            return None;
        }
        loop {
            if self.in_wheel == 0 {
                // Jump to the far heap's first event (or to `until`) without visiting empty buckets.
                let next = self.far.peek().map_or(u64::MAX, |Reverse(f)| f.time);
                self.advance(next.min(until.0).max(self.base));
            }
            let bucket = &mut self.wheel[(self.base % WHEEL_MS) as usize];
            if let Some(event) = bucket.pop_front() {
                self.in_wheel -= 1;
                if bucket.is_empty() {
                    // A drained bucket gives its memory back: 2^17 buckets each keeping the
                    // capacity of its busiest millisecond would hold gigabytes at 10^5 nodes.
                    *bucket = VecDeque::new();
                }
                return Some((Time(self.base), event));
            }
            if self.base >= until.0 {
                return None;
            }
            self.advance(self.base + 1);
        }
    }

    /// Moves `base` on to `to` (every bucket before it is empty) and brings the far events now
    /// within the horizon into their buckets.
    fn advance(&mut self, to: u64) {
        self.base = to;
        while let Some(Reverse(f)) = self.far.peek() {
            if f.time >= self.base + WHEEL_MS {
                break;
            }
            let Reverse(f) = self.far.pop().expect("peeked");
            self.wheel[(f.time % WHEEL_MS) as usize].push_back(f.event);
            self.in_wheel += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Prng;

    /// The wheel pops in the order of a heap of (time, seq), whatever the mix of near and far
    /// events, and however `until` cuts the run.
    #[test]
    fn pops_in_time_then_schedule_order_like_a_heap() {
        let mut rng = Prng::new(3);
        let mut q = Queue::new();
        let mut model = BinaryHeap::new();
        let (mut now, mut seq) = (0u64, 0u64);
        for round in 0..2000 {
            for _ in 0..rng.below(20) {
                let ahead = match rng.below(4) {
                    0 => 0,
                    1 => rng.below(100),
                    2 => rng.below(2 * WHEEL_MS),
                    _ => WHEEL_MS - 2 + rng.below(4),
                };
                seq += 1;
                q.push(Time(now + ahead), seq);
                model.push(Reverse((now + ahead, seq)));
            }
            let until = now + rng.below(if round % 50 == 0 { 3 * WHEEL_MS } else { 200 });
            while let Some((t, s)) = q.pop_until(Time(until)) {
                let Reverse((mt, ms)) = model.pop().expect("the model has it too");
                assert_eq!((t.0, s), (mt, ms));
            }
            assert!(model.peek().is_none_or(|Reverse((t, _))| *t > until));
            assert_eq!(q.len(), model.len());
            now = until;
        }
    }
}
