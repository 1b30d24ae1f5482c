//! Who may be whom: a node's id is SHA-256 of its IP (an IPv6 /64) and a slot below
//! `id_slots_per_ip` ([`crate::id::Id::of_ip_slot`]), so a peer cannot pick its place on the ring.
//! Every peer the node hears of is checked against that rule before it is used; the ids an IP may
//! hold are computed once and remembered (bounded), so a check costs a map lookup.
//!
//! The ids are a pure function of the address, so one memo serves every node of a thread (the
//! simulator's 10^5 nodes, a testnet's hub): with one memo per node, each of 10^5 simulated nodes
//! kept its own copy of the ids of every IP it had heard of, gigabytes that grew for the whole run.
//! Ids are computed slot by slot, as far as a check needs: most nodes sit on slot 0.

use crate::id::{Id, shared_by_the_host};
use crate::msg::Peer;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

/// IPs whose ids are remembered, per thread: past every node of a 10^5-node simulation, at about
/// 150 bytes an IP at most 20 MB (what a stranger naming made-up peers can make a node spend here;
/// a lower bound would only cost recomputed hashes).
const IPS_MAX: usize = 1 << 17;

pub(super) struct Identities {
    slots: u8,
    /// Test-only: every claimed id is taken as it is (`test_trust_any_id`).
    trust_any: bool,
}

/// The ids of slots 0, 1, … computed so far, keyed by the address with port 0, except on the
/// host-shared loopback address, where the port takes part in the id ([`Id::of_addr_slot`]).
/// A hash map, only looked up, never iterated (a B-tree of 10^5 addresses cost a cache miss per
/// level).
#[derive(Default)]
struct Memo {
    ids_by_ip: HashMap<SocketAddr, Vec<Id>>,
    /// Insertion order, for forgetting the oldest address when full.
    order: VecDeque<SocketAddr>,
}

thread_local! {
    static MEMO: RefCell<Memo> = RefCell::new(Memo::default());
}

impl Identities {
    pub fn new(slots: u8, trust_any: bool) -> Identities {
        Identities { slots, trust_any }
    }

    /// Does `p`'s id follow from its address?
    pub fn fits(&mut self, p: &Peer) -> bool {
        if self.trust_any {
            return true;
        }
        let slots = self.slots as usize;
        MEMO.with_borrow_mut(|memo| {
            let (addr, ids) = memo.known_ids(p.addr);
            if ids.iter().take(slots).any(|id| *id == p.id) {
                return true;
            }
            while ids.len() < slots {
                let id = Id::of_addr_slot(addr, ids.len() as u8);
                ids.reserve_exact(1);
                ids.push(id);
                if id == p.id {
                    return true;
                }
            }
            false
        })
    }

    /// Every peer of `peers` fits.
    pub fn all_fit(&mut self, peers: &[Peer]) -> bool {
        peers.iter().all(|p| self.fits(p))
    }

    /// A HELLO on a connection from `conn`: the speaker must advertise the IP it speaks from and an
    /// id that IP may hold.
    pub fn hello_fits(&mut self, conn: SocketAddr, node: &Peer) -> bool {
        self.trust_any || (node.addr.ip() == conn.ip() && self.fits(node))
    }

    /// The ids a peer speaking from `addr` may have (`None` when ids are not checked).
    pub fn ids_of_sender(&mut self, addr: SocketAddr) -> Option<Vec<Id>> {
        if self.trust_any {
            return None;
        }
        let slots = self.slots as usize;
        Some(MEMO.with_borrow_mut(|memo| {
            let (addr, ids) = memo.known_ids(addr);
            while ids.len() < slots {
                ids.push(Id::of_addr_slot(addr, ids.len() as u8));
            }
            ids[..slots].to_vec()
        }))
    }
}

impl Memo {
    /// The ids computed so far for the IP of `addr` (remembering it, and forgetting the oldest
    /// when full), and the address they are computed from.
    fn known_ids(&mut self, addr: SocketAddr) -> (SocketAddr, &mut Vec<Id>) {
        let port = if shared_by_the_host(addr.ip()) {
            addr.port()
        } else {
            0
        };
        let addr = SocketAddr::new(addr.ip(), port);
        if !self.ids_by_ip.contains_key(&addr) {
            if self.order.len() >= IPS_MAX
                && let Some(old) = self.order.pop_front()
            {
                self.ids_by_ip.remove(&old);
            }
            self.ids_by_ip.insert(addr, Vec::new());
            self.order.push_back(addr);
        }
        (addr, self.ids_by_ip.get_mut(&addr).expect("just made sure"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_from_the_ip_and_a_slot_below_the_limit() {
        let mut ids = Identities::new(8, false);
        let addr: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        let other_port: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        for slot in 0..8 {
            let p = Peer {
                id: Id::of_ip_slot(addr.ip(), slot),
                addr,
            };
            assert!(ids.fits(&p));
            assert!(ids.hello_fits(other_port, &p), "the port takes no part");
        }
        let beyond = Peer {
            id: Id::of_ip_slot(addr.ip(), 8),
            addr,
        };
        let chosen = Peer {
            id: Id::hash(b"a key I want"),
            addr,
        };
        assert!(!ids.fits(&beyond) && !ids.fits(&chosen));
        let elsewhere: SocketAddr = "10.1.2.4:4000".parse().unwrap();
        let p = Peer {
            id: Id::of_ip_slot(addr.ip(), 0),
            addr,
        };
        assert!(!ids.hello_fits(elsewhere, &p), "a HELLO from another IP");
    }

    /// Ids are computed as far as a check needs, once per thread; a refusal computes them all.
    #[test]
    fn ids_are_computed_slot_by_slot_and_shared() {
        let (mut a, mut b) = (Identities::new(8, false), Identities::new(2, false));
        let addr: SocketAddr = "10.9.8.7:4000".parse().unwrap();
        let at = |slot| Peer {
            id: Id::of_ip_slot(addr.ip(), slot),
            addr,
        };
        let key = SocketAddr::new(addr.ip(), 0);
        let computed = || MEMO.with_borrow(|m| m.ids_by_ip.get(&key).map_or(0, Vec::len));
        assert!(a.fits(&at(0)));
        assert_eq!(computed(), 1);
        assert!(a.fits(&at(2)) && a.fits(&at(1)));
        assert_eq!(computed(), 3);
        // Another node with fewer slots uses the memo within its own limit.
        assert!(b.fits(&at(1)) && !b.fits(&at(2)));
        assert!(!a.fits(&at(8)));
        assert_eq!(computed(), 8);
        assert!((0..8).all(|s| a.fits(&at(s))));
        assert_eq!(a.ids_of_sender(addr).map(|ids| ids.len()), Some(8));
        assert_eq!(b.ids_of_sender(addr).map(|ids| ids.len()), Some(2));
    }

    #[test]
    fn on_the_host_shared_loopback_address_the_port_tells_nodes_apart() {
        let mut ids = Identities::new(8, false);
        let a: SocketAddr = "127.0.0.1:7402".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:7412".parse().unwrap();
        let (pa, pb) = (
            Peer {
                id: Id::of_addr(a),
                addr: a,
            },
            Peer {
                id: Id::of_addr(b),
                addr: b,
            },
        );
        assert_ne!(pa.id, pb.id);
        assert!(ids.fits(&pa) && ids.fits(&pb));
        let swapped = Peer { id: pa.id, addr: b };
        assert!(!ids.fits(&swapped), "an id belongs to its port there");
        // Elsewhere the port takes no part.
        let c: SocketAddr = "127.0.0.2:7402".parse().unwrap();
        let d: SocketAddr = "127.0.0.2:7412".parse().unwrap();
        assert_eq!(Id::of_addr(c), Id::of_addr(d));
    }
}
