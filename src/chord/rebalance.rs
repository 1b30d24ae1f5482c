//! Rebalancing over time (issue 11): joining at the best of its slots evens the ring out as it
//! forms, but churn undoes it. A node registers its unused slot ids with the nodes whose ranges they
//! fall in (SPARE: "I could take an id in your range"); a node whose range is above the mean it
//! estimates invites the registered node whose move lowers the sum of squared ranges most (INVITE);
//! the invited node checks the move on the ring itself (a lookup) and makes it only when it is a
//! gain (`balance::best_move`), at most once per [`MOVE_EVERY`] rebalance periods: it hands its
//! values to its successor, leaves, and joins again at that slot. Every move lowers the sum of
//! squared ranges, so moves cannot go round in circles. This module keeps the registrations and
//! picks the invitation; maintenance sends and checks.

use crate::balance::{self, Rebalance, Spare};
use crate::id::{Id, in_open};
use crate::msg::Peer;
use crate::time::Time;

/// Registrations kept at once (the oldest goes first): a range holds `id_slots_per_ip − 1` of them
/// per node on average, more in a large range.
pub const SPARES_MAX: usize = 256;
/// A registration lives this many rebalance periods: its holder renews one spare slot a period in
/// turn, each every `slots - 1` periods, and two periods more ride out a lost renewal.
pub fn spare_life_periods(slots: u8) -> u64 {
    u64::from(slots) + 1
}
/// A node moves at most once per this many rebalance periods.
pub const MOVE_EVERY: u64 = 3;
/// The policy: invite when our range is above the mean we estimate; a move must lower the sum of
/// squared ranges more than the holder's leaving raises it.
pub const POLICY: Rebalance = Rebalance::DEFAULT;

/// How full our store is, as the rebalancing timer sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreLoad {
    /// Stored bytes in percent of the quota (0–100).
    pub fill_percent: u8,
    /// When near full: the key below which half the bytes we hold as the responsible node lie,
    /// if those are a fair share of what we store (else splitting our range would not relieve us).
    pub middle: Option<Id>,
}

struct Registration {
    holder: Peer,
    slot: u8,
    spare: Spare,
    expires: Time,
}

#[derive(Default)]
pub(super) struct Spares {
    held: Vec<Registration>,
}

impl Spares {
    /// A node's registration: each of its slot ids (other than its own) that lies in our range
    /// `(pred, me)` is kept, with where the holder stands (`(holder_pred, holder]`, then
    /// `holder_succ`). Slot ids are recomputed from the holder's address, so a registration can
    /// name no id its holder may not take.
    pub fn register(
        &mut self,
        holder: Peer,
        ends: (Id, Id),
        ours: (Id, Id),
        slots: u8,
        expires: Time,
    ) {
        let (holder_pred, holder_succ) = ends;
        let (pred, me) = ours;
        self.held.retain(|r| r.holder.addr != holder.addr);
        for slot in 0..slots {
            let id = Id::of_addr_slot(holder.addr, slot);
            if id == holder.id || !in_open(&id, &pred, &me) {
                continue;
            }
            if self.held.len() == SPARES_MAX {
                self.held.remove(0);
            }
            let spare = Spare {
                id,
                holder: holder.id,
                holder_pred,
                holder_succ,
            };
            self.held.push(Registration {
                holder,
                slot,
                spare,
                expires,
            });
        }
    }

    /// The holder to invite, and to which of its slots, when our range `(pred, me]` is above
    /// `mean` and one of the registrations in it would be a gain ([`balance::invite`]).
    pub fn invitation(&mut self, pred: &Id, me: &Id, mean: f64, now: Time) -> Option<(Peer, u8)> {
        self.take(now, |spares| {
            balance::invite(&POLICY, pred, me, mean, spares)
        })
    }

    /// The holder to invite into the middle of our bytes when our store is near full
    /// ([`balance::invite_to_split`]).
    pub fn invitation_to_split(
        &mut self,
        pred: &Id,
        me: &Id,
        middle: &Id,
        now: Time,
    ) -> Option<(Peer, u8)> {
        self.take(now, |spares| {
            balance::invite_to_split(pred, me, middle, spares)
        })
    }

    /// Drops lapsed registrations, then removes and returns the one `pick` chooses.
    fn take(
        &mut self,
        now: Time,
        pick: impl FnOnce(&[Spare]) -> Option<usize>,
    ) -> Option<(Peer, u8)> {
        self.held.retain(|r| r.expires > now);
        let spares: Vec<Spare> = self.held.iter().map(|r| r.spare).collect();
        let chosen = self.held.remove(pick(&spares)?);
        Some((chosen.holder, chosen.slot))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    /// `id − 2^k` round the ring.
    fn minus_pow2(id: &Id, k: usize) -> Id {
        let mut b = id.0;
        let mut i = 31 - k / 8;
        let mut borrow = 1i16 << (k % 8);
        loop {
            let v = b[i] as i16 - borrow;
            if v >= 0 {
                b[i] = v as u8;
                break;
            }
            b[i] = (v + 256) as u8;
            borrow = 1;
            if i == 0 {
                break;
            }
            i -= 1;
        }
        Id(b)
    }

    #[test]
    fn registrations_keep_only_slot_ids_in_our_range_and_invite_a_gain() {
        let holder_addr: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        let ids: Vec<Id> = (0..8).map(|s| Id::of_addr_slot(holder_addr, s)).collect();
        let holder = Peer {
            id: ids[0],
            addr: holder_addr,
        };
        // Our range: from just before slot 3's id to well after it.
        let target = ids[3];
        let pred = minus_pow2(&target, 254);
        let me = target.add_pow2(250);
        let mut spares = Spares::default();
        let tiny = (minus_pow2(&ids[0], 10), ids[0].add_pow2(10));
        spares.register(holder, tiny, (pred, me), 8, Time(1000));
        assert!(spares.len() >= 1, "slot 3's id lies in our range");
        // Our range is far above the mean; the holder's own range is tiny: invite it to slot 3
        // or another of its slot ids in our range.
        let (who, slot) = spares
            .invitation(&pred, &me, 1e-9, Time(0))
            .expect("an invitation");
        assert_eq!(who, holder);
        assert!(in_open(&ids[slot as usize], &pred, &me));
        // Expired registrations invite nobody.
        spares.register(holder, tiny, (pred, me), 8, Time(1000));
        assert_eq!(spares.invitation(&pred, &me, 1e-9, Time(1000)), None);
    }
}
