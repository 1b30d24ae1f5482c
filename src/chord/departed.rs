//! Identities that announced their leave (LEAVE, which only the address itself can send): not
//! adopted again from second-hand lists for a while. A node that moves to another of its slots
//! (rebalancing) keeps its address under a new id; without this its old id, still listed here and
//! there, would be "confirmed" by the live address answering, and never leave the tables.

use crate::msg::Peer;
use crate::time::Time;
use std::collections::VecDeque;

/// Departed identities remembered at once (the oldest goes first).
pub const DEPARTED_MAX: usize = 256;
/// How long a departed identity is refused (second-hand copies of it die out well before).
pub const DEPARTED_MS: u64 = 10 * 60_000;

#[derive(Default)]
pub(super) struct Departed {
    gone: VecDeque<(Peer, Time)>,
}

impl Departed {
    pub fn add(&mut self, peer: Peer, now: Time) {
        self.gone.retain(|(p, _)| *p != peer);
        if self.gone.len() == DEPARTED_MAX {
            self.gone.pop_front();
        }
        self.gone.push_back((peer, now));
    }

    /// Did `peer` (this id at this address) leave lately?
    pub fn contains(&self, peer: &Peer, now: Time) -> bool {
        self.gone
            .iter()
            .any(|(p, t)| p == peer && now.ms_since(*t) < DEPARTED_MS)
    }

    /// The identity speaks for itself again (a node back after a graceful leave).
    pub fn revive(&mut self, peer: &Peer) {
        if !self.gone.is_empty() {
            self.gone.retain(|(p, _)| p != peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chord::test_peer as peer;

    #[test]
    fn refused_for_a_while_by_id_and_address_and_revived_by_itself() {
        let mut d = Departed::default();
        d.add(peer(1), Time(0));
        assert!(d.contains(&peer(1), Time(DEPARTED_MS - 1)));
        assert!(!d.contains(&peer(1), Time(DEPARTED_MS)));
        let moved = Peer {
            id: peer(9).id,
            addr: peer(1).addr,
        };
        assert!(
            !d.contains(&moved, Time(1)),
            "the same address under another id"
        );
        d.revive(&peer(1));
        assert!(!d.contains(&peer(1), Time(1)));
    }
}
