//! Time as the core sees it (milliseconds on a monotonic clock the caller owns), and the seeded PRNG.
//! Nothing here reads a clock: the reactor converts `Instant`s, the simulator counts its own.

use std::ops::{Add, Sub};

/// A point in time, in milliseconds since an origin the driver chooses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    pub const ZERO: Time = Time(0);

    pub fn from_ms(ms: u64) -> Time {
        Time(ms)
    }

    pub fn as_ms(self) -> u64 {
        self.0
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn ms_since(self, earlier: Time) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<u64> for Time {
    type Output = Time;
    fn add(self, ms: u64) -> Time {
        Time(self.0.saturating_add(ms))
    }
}

impl Sub<u64> for Time {
    type Output = Time;
    fn sub(self, ms: u64) -> Time {
        Time(self.0.saturating_sub(ms))
    }
}

/// A small, fast, seeded PRNG (SplitMix64). Randomness is an input of the core: the same seed gives
/// the same choices, which the simulator's determinism check relies on.
#[derive(Clone, Debug)]
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// `base_ms` with ±`percent` % jitter, so that many nodes do not fire in lock-step.
    pub fn jitter(&mut self, base_ms: u64, percent: u64) -> u64 {
        let spread = base_ms * percent / 100;
        if spread == 0 {
            return base_ms;
        }
        base_ms - spread + self.below(2 * spread + 1)
    }

    /// A probability check: true with chance `p` (0.0..=1.0).
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let (mut a, mut b) = (Prng::new(7), Prng::new(7));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Prng::new(1).next_u64(), Prng::new(2).next_u64());
    }

    #[test]
    fn jitter_stays_in_range() {
        let mut r = Prng::new(3);
        for _ in 0..1000 {
            let j = r.jitter(1000, 20);
            assert!((800..=1200).contains(&j), "{j}");
            assert!(r.below(10) < 10);
        }
    }

    #[test]
    fn time_arithmetic_saturates() {
        assert_eq!(Time(5) - 10, Time(0));
        assert_eq!(Time(u64::MAX) + 1, Time(u64::MAX));
        assert_eq!(Time(10).ms_since(Time(4)), 6);
        assert_eq!(Time(4).ms_since(Time(10)), 0);
    }
}
