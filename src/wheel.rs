//! A hashed timer wheel for deadlines (per-request timeouts, idle connections): O(1) insert and
//! cancel, expiry in tick order. Entries live in a slab; slots hold keys with a generation so that a
//! cancelled entry whose slab index is reused is never fired by mistake.

use crate::time::Time;
use slab::Slab;

/// Handle to a scheduled entry, for cancelling it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerKey {
    index: usize,
    generation: u64,
}

struct Entry<T> {
    deadline: Time,
    generation: u64,
    data: T,
}

pub struct TimerWheel<T> {
    tick_ms: u64,
    slots: Vec<Vec<TimerKey>>,
    /// Keys in `slots`, live or cancelled: with none, `expire` has no slot to visit (most calls,
    /// for a node with no request outstanding; a walk touches every slot of a turn).
    keys: usize,
    entries: Slab<Entry<T>>,
    /// Every tick before this one has been expired.
    current_tick: u64,
    next_generation: u64,
    /// A lower bound of every live deadline: kept up on insert, recomputed (one scan) only when
    /// `expire` reaches it, so asking for the next deadline is O(1) on the hot path.
    earliest: Option<Time>,
}

impl<T> TimerWheel<T> {
    /// `slot_count` must be a power of two; a timer further away than one turn waits extra turns.
    pub fn new(tick_ms: u64, slot_count: usize, now: Time) -> TimerWheel<T> {
        assert!(tick_ms > 0 && slot_count.is_power_of_two());
        TimerWheel {
            tick_ms,
            slots: (0..slot_count).map(|_| Vec::new()).collect(),
            keys: 0,
            entries: Slab::new(),
            current_tick: now.as_ms() / tick_ms,
            next_generation: 0,
            earliest: None,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Schedules `data` to expire at `deadline` (a deadline in the past expires at the next poll).
    pub fn insert(&mut self, deadline: Time, data: T) -> TimerKey {
        let generation = self.next_generation;
        self.next_generation += 1;
        let index = self.entries.insert(Entry {
            deadline,
            generation,
            data,
        });
        let key = TimerKey { index, generation };
        let tick = (deadline.as_ms() / self.tick_ms).max(self.current_tick);
        let slot = self.slot_of(tick);
        self.slots[slot].push(key);
        self.keys += 1;
        self.earliest = Some(self.earliest.map_or(deadline, |e| e.min(deadline)));
        key
    }

    /// Cancels an entry; returns its data if it was still scheduled. Safe to call twice.
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        match self.entries.get(key.index) {
            Some(e) if e.generation == key.generation => Some(self.entries.remove(key.index).data),
            _ => None,
        }
    }

    /// Removes and returns every entry whose deadline is at or before `now`, in tick order.
    /// Safe to call early (returns nothing) or twice.
    pub fn expire(&mut self, now: Time, out: &mut Vec<T>) {
        let now_tick = now.as_ms() / self.tick_ms;
        let turn = self.slots.len() as u64;
        // Past one full turn every slot is visited once; no need to walk every missed tick.
        let last = now_tick.min(self.current_tick + turn - 1);
        let mut tick = if self.keys == 0 {
            last + 1
        } else {
            self.current_tick
        };
        while tick <= last {
            let slot = self.slot_of(tick);
            let mut i = 0;
            while i < self.slots[slot].len() {
                let key = self.slots[slot][i];
                match self.entries.get(key.index) {
                    Some(e) if e.generation == key.generation => {
                        if e.deadline <= now {
                            self.slots[slot].swap_remove(i);
                            self.keys -= 1;
                            out.push(self.entries.remove(key.index).data);
                            continue;
                        }
                    }
                    // Cancelled: drop the stale key.
                    _ => {
                        self.slots[slot].swap_remove(i);
                        self.keys -= 1;
                        continue;
                    }
                }
                i += 1;
            }
            tick += 1;
        }
        self.current_tick = self.current_tick.max(now_tick);
        if self.earliest.is_none_or(|e| e <= now) {
            self.earliest = self.scan_next_deadline();
        }
    }

    /// The earliest time at which `expire` may return something, or earlier (never later): after
    /// cancellations it may name a deadline that no longer exists. `None` when empty. O(1).
    pub fn next_deadline(&self) -> Option<Time> {
        if self.entries.is_empty() {
            return None;
        }
        self.earliest
    }

    /// The scan behind `next_deadline`: exact for entries within one turn, a conservative (earlier)
    /// tick for later ones.
    fn scan_next_deadline(&self) -> Option<Time> {
        if self.entries.is_empty() {
            return None;
        }
        let turn = self.slots.len() as u64;
        let mut earliest: Option<Time> = None;
        for tick in self.current_tick..self.current_tick + turn {
            for key in &self.slots[self.slot_of(tick)] {
                if let Some(e) = self
                    .entries
                    .get(key.index)
                    .filter(|e| e.generation == key.generation)
                {
                    earliest = Some(earliest.map_or(e.deadline, |t| t.min(e.deadline)));
                }
            }
            if let Some(t) = earliest {
                // Entries of later turns hashed into this slot can only be later than its tick.
                return Some(t.min(Time((tick + 1) * self.tick_ms)));
            }
        }
        Some(Time((self.current_tick + turn) * self.tick_ms))
    }

    fn slot_of(&self, tick: u64) -> usize {
        (tick as usize) & (self.slots.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(w: &mut TimerWheel<u32>, now: u64) -> Vec<u32> {
        let mut out = Vec::new();
        w.expire(Time(now), &mut out);
        out.sort();
        out
    }

    #[test]
    fn fires_at_deadline_not_before() {
        let mut w = TimerWheel::new(10, 8, Time(0));
        w.insert(Time(25), 1);
        w.insert(Time(5), 2);
        assert_eq!(drain(&mut w, 4), Vec::<u32>::new());
        assert_eq!(drain(&mut w, 5), vec![2]);
        assert_eq!(drain(&mut w, 24), Vec::<u32>::new());
        assert_eq!(drain(&mut w, 25), vec![1]);
        assert!(w.is_empty());
    }

    #[test]
    fn far_deadlines_wait_extra_turns() {
        let mut w = TimerWheel::new(10, 4, Time(0));
        w.insert(Time(1000), 7);
        assert_eq!(drain(&mut w, 500), Vec::<u32>::new());
        assert!(w.next_deadline().unwrap() <= Time(1000));
        assert_eq!(drain(&mut w, 999), Vec::<u32>::new());
        assert_eq!(drain(&mut w, 1003), vec![7]);
    }

    /// Cancelled keys are dropped as the walk passes them, and an empty wheel is not walked.
    #[test]
    fn cancelled_keys_leave_the_slots() {
        let mut w = TimerWheel::new(10, 8, Time(0));
        let a = w.insert(Time(30), 1);
        w.insert(Time(50), 2);
        assert_eq!(w.cancel(a), Some(1));
        assert_eq!((w.len(), w.keys), (1, 2));
        assert_eq!(drain(&mut w, 40), Vec::<u32>::new());
        assert_eq!((w.len(), w.keys), (1, 1));
        assert_eq!(drain(&mut w, 50), vec![2]);
        assert_eq!((w.len(), w.keys), (0, 0));
        assert_eq!(drain(&mut w, 5_000), Vec::<u32>::new());
        let b = w.insert(Time(5_005), 3);
        assert_eq!(w.next_deadline(), Some(Time(5_005)));
        assert_eq!(drain(&mut w, 5_010), vec![3]);
        assert_eq!(w.cancel(b), None);
    }

    #[test]
    fn cancel_is_o1_and_idempotent_even_after_slot_reuse() {
        let mut w = TimerWheel::new(10, 8, Time(0));
        let a = w.insert(Time(30), 1);
        assert_eq!(w.cancel(a), Some(1));
        assert_eq!(w.cancel(a), None);
        let b = w.insert(Time(30), 2); // reuses a's slab index
        assert_eq!(w.cancel(a), None);
        assert_eq!(drain(&mut w, 40), vec![2]);
        assert_eq!(w.cancel(b), None);
    }

    #[test]
    fn past_deadline_fires_at_next_expire_and_next_deadline_is_exact() {
        let mut w = TimerWheel::new(10, 8, Time(100));
        w.insert(Time(50), 3);
        w.insert(Time(137), 4);
        assert_eq!(w.next_deadline(), Some(Time(50)));
        assert_eq!(drain(&mut w, 100), vec![3]);
        assert_eq!(w.next_deadline(), Some(Time(137)));
        assert_eq!(drain(&mut w, 10_000), vec![4]);
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn many_random_timers_fire_in_order_and_exactly_once() {
        let mut rng = crate::time::Prng::new(9);
        let mut w = TimerWheel::new(7, 16, Time(0));
        let mut deadlines = Vec::new();
        for i in 0..500u32 {
            let d = rng.below(3000);
            deadlines.push(d);
            w.insert(Time(d), i);
        }
        let mut fired = vec![false; 500];
        let mut now = 0;
        while now <= 3000 {
            let mut out = Vec::new();
            w.expire(Time(now), &mut out);
            for i in out {
                assert!(deadlines[i as usize] <= now);
                assert!(now - deadlines[i as usize] < 40, "late");
                assert!(!fired[i as usize]);
                fired[i as usize] = true;
            }
            now += 1 + rng.below(30);
        }
        let mut out = Vec::new();
        w.expire(Time(now), &mut out);
        for i in out {
            fired[i as usize] = true;
        }
        assert!(fired.iter().all(|f| *f));
    }
}
