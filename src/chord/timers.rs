//! The node's periodic timers: one slot per timer, each armed by the part that owns it and fired by
//! the shell when due (quinn-proto's timer table).

use crate::time::Time;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Periodic {
    /// While not joined (or alone after losing every successor): the next join attempt, backing off.
    Join = 0,
    /// Zave's stabilize: ask the successor for its predecessor and list, then notify it. Faster
    /// while the successor or predecessor keeps changing.
    Stabilize,
    /// Refresh one finger (a lookup of `me + 2^i`).
    FixFingers,
    /// Ask the predecessor for its predecessors; forget it if it does not answer.
    CheckPredecessor,
    /// Compare summaries with the replica holders and push what they lack.
    Repair,
    /// Register our spare slot ids; invite a better-placed node into a large range.
    Rebalance,
}

const COUNT: usize = 6;

/// The order in which timers due at the same time fire.
pub(super) const ALL: [Periodic; COUNT] = [
    Periodic::Join,
    Periodic::Stabilize,
    Periodic::FixFingers,
    Periodic::CheckPredecessor,
    Periodic::Repair,
    Periodic::Rebalance,
];

#[derive(Default)]
pub(super) struct Timers {
    at: [Option<Time>; COUNT],
}

impl Timers {
    pub fn set(&mut self, timer: Periodic, at: Time) {
        self.at[timer as usize] = Some(at);
    }

    /// Disarms and returns `timer` if it is due at `now`.
    pub fn take_due(&mut self, timer: Periodic, now: Time) -> bool {
        let due = self.at[timer as usize].is_some_and(|t| t <= now);
        if due {
            self.at[timer as usize] = None;
        }
        due
    }

    pub fn next(&self) -> Option<Time> {
        self.at.iter().flatten().min().copied()
    }
}
