//! 256-bit identifiers on the Chord ring (SHA-256 space) and the ring arithmetic on them.
//! Keys and node ids share the space: a key belongs to the first node whose id follows it.

use sha2::{Digest, Sha256};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// A point on the ring: 32 bytes read as a big-endian 256-bit number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Id(pub [u8; 32]);

/// Keys are ring points too.
pub type Key = Id;

impl Id {
    /// The SHA-256 of `bytes`.
    pub fn hash(bytes: &[u8]) -> Id {
        Id(Sha256::digest(bytes).into())
    }

    /// A node's id: the SHA-256 of its IP address (an IPv6 address's /64 prefix) and a slot number.
    /// The port takes no part: one IP holds at most `id_slots_per_ip` positions, none of them chosen
    /// freely (BEP 42's idea).
    pub fn of_ip_slot(ip: IpAddr, slot: u8) -> Id {
        let mut bytes = Vec::with_capacity(17);
        match ip {
            IpAddr::V4(v4) => bytes.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) => bytes.extend_from_slice(&v6.octets()[..8]),
        }
        bytes.push(slot);
        Id::hash(&bytes)
    }

    /// The id slot `slot` gives a node advertising `addr`: [`Id::of_ip_slot`], except on the
    /// loopback address every process of a host shares (127.0.0.1, ::1), where nodes are told
    /// apart by port too (`SHA-256(IP ‖ port ‖ slot)`): several nodes on one machine's 127.0.0.1
    /// each get a place of their own, and no stranger can reach that address.
    pub fn of_addr_slot(addr: SocketAddr, slot: u8) -> Id {
        if !shared_by_the_host(addr.ip()) {
            return Id::of_ip_slot(addr.ip(), slot);
        }
        let mut bytes = Vec::with_capacity(19);
        match addr.ip() {
            IpAddr::V4(v4) => bytes.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) => bytes.extend_from_slice(&v6.octets()[..8]),
        }
        bytes.extend_from_slice(&addr.port().to_be_bytes());
        bytes.push(slot);
        Id::hash(&bytes)
    }

    /// The default id of a node advertising `addr`: slot 0.
    pub fn of_addr(addr: SocketAddr) -> Id {
        Id::of_addr_slot(addr, 0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Id> {
        if s.len() != 64 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Id(out))
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The first 8 hex digits, for logs.
    pub fn short(&self) -> String {
        self.to_hex()[..8].to_string()
    }

    /// `self + 2^k` modulo 2^256 (k < 256): the start of finger k.
    pub fn add_pow2(&self, k: usize) -> Id {
        assert!(k < 256);
        let mut out = self.0;
        let mut idx = 31 - k / 8;
        let mut carry = 1u16 << (k % 8);
        loop {
            let sum = out[idx] as u16 + carry;
            out[idx] = sum as u8;
            carry = sum >> 8;
            if carry == 0 || idx == 0 {
                break;
            }
            idx -= 1;
        }
        Id(out)
    }

    /// `self × mul / div`, on the top 128 bits (precision enough for estimates), saturating at
    /// the whole ring.
    pub fn scaled(&self, mul: u128, div: u128) -> Id {
        let top = u128::from_be_bytes(self.0[..16].try_into().expect("16 bytes"));
        match (top / div.max(1)).checked_mul(mul) {
            Some(v) => {
                let mut out = [0u8; 32];
                out[..16].copy_from_slice(&v.to_be_bytes());
                Id(out)
            }
            None => Id([0xff; 32]),
        }
    }

    /// The clockwise distance from `self` to `other`, `(other - self) mod 2^256`: two 128-bit
    /// subtractions with a borrow (the simulator computes millions of these a second).
    pub fn distance_to(&self, other: &Id) -> Id {
        let halves = |id: &Id| {
            let (hi, lo) = id.0.split_at(16);
            let half = |b: &[u8]| u128::from_be_bytes(b.try_into().expect("16 bytes"));
            (half(hi), half(lo))
        };
        let ((a_hi, a_lo), (b_hi, b_lo)) = (halves(self), halves(other));
        let (lo, borrow) = b_lo.overflowing_sub(a_lo);
        let hi = b_hi.wrapping_sub(a_hi).wrapping_sub(borrow as u128);
        let mut out = [0u8; 32];
        out[..16].copy_from_slice(&hi.to_be_bytes());
        out[16..].copy_from_slice(&lo.to_be_bytes());
        Id(out)
    }
}

/// 127.0.0.1 and ::1: the loopback address every process on a host binds by default.
pub fn shared_by_the_host(ip: IpAddr) -> bool {
    ip == IpAddr::from([127, 0, 0, 1]) || ip == IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.short())
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

/// `x ∈ (a, b)` going clockwise from `a`. When `a == b` the interval is the whole ring but `a`.
pub fn in_open<T: Ord>(x: &T, a: &T, b: &T) -> bool {
    match a.cmp(b) {
        std::cmp::Ordering::Less => a < x && x < b,
        std::cmp::Ordering::Greater => a < x || x < b,
        std::cmp::Ordering::Equal => x != a,
    }
}

/// `x ∈ (a, b]` going clockwise from `a`. When `a == b` the interval is the whole ring.
pub fn in_half_open<T: Ord>(x: &T, a: &T, b: &T) -> bool {
    a == b || x == b || in_open(x, a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: walk clockwise from a (mod 256) and see whether x is met before b.
    fn walk_open(x: u8, a: u8, b: u8) -> bool {
        let mut p = a.wrapping_add(1);
        while p != b {
            if p == x {
                return true;
            }
            p = p.wrapping_add(1);
        }
        false
    }

    #[test]
    fn intervals_exhaustive_on_8_bit_ring() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                for x in 0..=255u8 {
                    let open = if a == b { x != a } else { walk_open(x, a, b) };
                    assert_eq!(in_open(&x, &a, &b), open, "({a},{b}) x={x}");
                    assert_eq!(in_half_open(&x, &a, &b), open || x == b || a == b);
                }
            }
        }
    }

    fn from_u64(v: u64) -> Id {
        let mut out = [0u8; 32];
        out[24..].copy_from_slice(&v.to_be_bytes());
        Id(out)
    }

    #[test]
    fn add_pow2_carries_and_wraps() {
        assert_eq!(from_u64(0).add_pow2(0), from_u64(1));
        assert_eq!(from_u64(255).add_pow2(0), from_u64(256));
        assert_eq!(from_u64(0xffff).add_pow2(3), from_u64(0xffff + 8));
        assert_eq!(Id([0xff; 32]).add_pow2(0), Id([0; 32]));
        let mut top = [0u8; 32];
        top[0] = 0x80;
        assert_eq!(Id(top).add_pow2(255), Id([0; 32]));
        assert_eq!(Id([0; 32]).add_pow2(255), Id(top));
    }

    /// The 128-bit distance is the byte-by-byte subtraction it replaced.
    #[test]
    fn distance_matches_bytewise_subtraction() {
        let bytewise = |a: &Id, b: &Id| {
            let mut out = [0u8; 32];
            let mut borrow = 0i16;
            for i in (0..32).rev() {
                let mut d = b.0[i] as i16 - a.0[i] as i16 - borrow;
                borrow = i16::from(d < 0);
                d += 256 * borrow;
                out[i] = d as u8;
            }
            Id(out)
        };
        let mut rng = crate::time::Prng::new(9);
        let mut random = || {
            let mut id = [0u8; 32];
            for chunk in id.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next_u64().to_be_bytes());
            }
            // Runs of equal bytes and of 0x00/0xff exercise the borrow across the halves.
            match rng.below(4) {
                0 => id[8..24].fill(0),
                1 => id[8..24].fill(0xff),
                _ => {}
            }
            Id(id)
        };
        for _ in 0..10_000 {
            let (a, b) = (random(), random());
            assert_eq!(a.distance_to(&b), bytewise(&a, &b));
            assert_eq!(b.distance_to(&a), bytewise(&b, &a));
            assert_eq!(a.distance_to(&a), Id([0; 32]));
        }
    }

    #[test]
    fn distance_is_clockwise() {
        assert_eq!(from_u64(10).distance_to(&from_u64(15)), from_u64(5));
        assert_eq!(from_u64(15).distance_to(&from_u64(10)), distance_minus5());
    }

    fn distance_minus5() -> Id {
        // 2^256 - 5
        let mut out = [0xffu8; 32];
        out[31] = 0xfb;
        Id(out)
    }

    #[test]
    fn hex_round_trip_and_sha256() {
        let id = Id::hash(b"abc");
        assert_eq!(
            id.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Id::from_hex(&id.to_hex()), Some(id));
        assert_eq!(Id::from_hex("zz"), None);
        assert_eq!(Id::from_hex(&"g".repeat(64)), None);
    }
}
