//! The simulator's node table: a vector indexed by the number each node's address was made from
//! ([`addr_of`]), so that the lookups every event makes (is the receiver alive? hand it the input)
//! are an index, not a tree walk. At 10^5 nodes the B-tree lookups of the map this replaces were a
//! sixth of the run time. The read API is the `BTreeMap`'s, iteration in address order included.

use super::SimNode;
use std::net::{IpAddr, SocketAddr};

/// The port every simulated node listens on.
const PORT: u16 = 7000;

/// The address of node number `n` (from 1): one IP per node (ids are bound to the IP), 127.1.0.1
/// on, past 65,535 nodes 127.2.0.0 on. Addresses grow with `n`, so index order is address order.
pub(super) fn addr_of(n: usize) -> SocketAddr {
    assert!(
        (1..254 << 16).contains(&n),
        "node number {n} out of the address plan"
    );
    let ip = [127, 1 + (n >> 16) as u8, (n >> 8) as u8, n as u8];
    SocketAddr::from((ip, PORT))
}

/// The inverse of [`addr_of`]; `None` for addresses outside the plan (the prober, forged senders).
fn number_of(addr: &SocketAddr) -> Option<usize> {
    let IpAddr::V4(ip) = addr.ip() else {
        return None;
    };
    let [a, b, c, d] = ip.octets();
    if addr.port() != PORT || a != 127 || b == 0 || b == 255 {
        return None;
    }
    let n = ((b as usize - 1) << 16) | (c as usize) << 8 | d as usize;
    (n > 0).then_some(n)
}

/// Live nodes by address (see the module doc).
#[derive(Default)]
pub struct Nodes {
    /// Slot `n` holds node number `n` while it lives (slot 0 stays empty).
    slots: Vec<Option<(SocketAddr, SimNode)>>,
    len: usize,
}

impl Nodes {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains_key(&self, addr: &SocketAddr) -> bool {
        self.get(addr).is_some()
    }

    pub fn get(&self, addr: &SocketAddr) -> Option<&SimNode> {
        let n = number_of(addr)?;
        self.slots.get(n)?.as_ref().map(|(_, node)| node)
    }

    pub fn get_mut(&mut self, addr: &SocketAddr) -> Option<&mut SimNode> {
        let n = number_of(addr)?;
        self.slots.get_mut(n)?.as_mut().map(|(_, node)| node)
    }

    /// Live nodes in address order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&SocketAddr, &SimNode)> {
        self.slots.iter().flatten().map(|(a, n)| (a, n))
    }

    pub fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = (&SocketAddr, &mut SimNode)> {
        self.slots.iter_mut().flatten().map(|(a, n)| (&*a, n))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &SocketAddr> {
        self.iter().map(|(a, _)| a)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &SimNode> {
        self.iter().map(|(_, n)| n)
    }

    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut SimNode> {
        self.iter_mut().map(|(_, n)| n)
    }

    /// Puts `node` at `addr` (an address of the plan: [`addr_of`]); returns the node it replaces.
    pub(super) fn insert(&mut self, addr: SocketAddr, node: SimNode) -> Option<SimNode> {
        let n = number_of(&addr).expect("a simulated node's address");
        if self.slots.len() <= n {
            self.slots.resize_with(n + 1, || None);
        }
        let old = self.slots[n].replace((addr, node)).map(|(_, old)| old);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub(super) fn remove(&mut self, addr: &SocketAddr) -> Option<SimNode> {
        let n = number_of(addr)?;
        let (_, old) = self.slots.get_mut(n)?.take()?;
        self.len -= 1;
        Some(old)
    }
}

impl std::ops::Index<&SocketAddr> for Nodes {
    type Output = SimNode;
    fn index(&self, addr: &SocketAddr) -> &SimNode {
        self.get(addr)
            .unwrap_or_else(|| panic!("no live node at {addr}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_addresses_are_inverse_and_ordered() {
        for n in [1, 2, 255, 256, 65_535, 65_536, 100_000, (254 << 16) - 1] {
            assert_eq!(number_of(&addr_of(n)), Some(n));
            assert!(addr_of(n - 1 + usize::from(n == 1)) <= addr_of(n));
        }
        assert_eq!(number_of(&super::super::PROBER), None);
        assert_eq!(number_of(&SocketAddr::from(([127, 1, 0, 1], 7001))), None);
        assert_eq!(number_of(&SocketAddr::from(([127, 1, 0, 0], PORT))), None);
        assert_eq!(number_of(&SocketAddr::from(([10, 1, 0, 1], PORT))), None);
    }
}
