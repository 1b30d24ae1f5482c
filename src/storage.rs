//! The values this node holds: key → value with an absolute expiry time, last write wins, bounded by
//! a byte quota. Expired values are never returned, and `sweep` (called from the core's periodic
//! expiry timer) reclaims their memory. Owns no network or clock: times come in as arguments.

use crate::id::Key;
use crate::time::Time;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

/// What one stored entry costs against the quota besides its value: the key in the map and in the
/// expiry index, the expiry time, the `Bytes` handle and tree overhead (a measured upper bound).
pub const ENTRY_OVERHEAD_BYTES: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub value: Bytes,
    pub expires: Time,
    /// How many copies the ring should keep (the PUT's clamped replication).
    pub replication: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The value does not fit in `storage_bytes_max`; nothing was changed.
    QuotaExceeded { needed: usize, free: usize },
}

pub struct Storage {
    values: BTreeMap<Key, Stored>,
    /// (expiry, key) for every value: sweeping pops from the front.
    by_expiry: BTreeSet<(Time, Key)>,
    bytes_used: usize,
    bytes_max: usize,
}

impl Storage {
    pub fn new(bytes_max: usize) -> Storage {
        Storage {
            values: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
            bytes_used: 0,
            bytes_max,
        }
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn bytes_used(&self) -> usize {
        self.bytes_used
    }

    /// Stores `value` under `key` until `expires` (last write wins). The value is copied into its own
    /// allocation so that it never pins a connection's larger receive buffer.
    pub fn put(
        &mut self,
        key: Key,
        value: &Bytes,
        expires: Time,
        replication: u8,
    ) -> Result<(), StoreError> {
        let needed = value.len() + ENTRY_OVERHEAD_BYTES;
        let freed = self
            .values
            .get(&key)
            .map_or(0, |s| s.value.len() + ENTRY_OVERHEAD_BYTES);
        let free = self.bytes_max - (self.bytes_used - freed);
        if needed > free {
            return Err(StoreError::QuotaExceeded { needed, free });
        }
        self.remove(&key);
        self.bytes_used += needed;
        self.by_expiry.insert((expires, key));
        self.values.insert(
            key,
            Stored {
                value: Bytes::copy_from_slice(value),
                expires,
                replication,
            },
        );
        Ok(())
    }

    /// The live value under `key`, if any.
    pub fn get(&self, key: &Key, now: Time) -> Option<&Stored> {
        self.values.get(key).filter(|s| s.expires > now)
    }

    pub fn remove(&mut self, key: &Key) -> Option<Stored> {
        let old = self.values.remove(key)?;
        self.by_expiry.remove(&(old.expires, *key));
        self.bytes_used -= old.value.len() + ENTRY_OVERHEAD_BYTES;
        Some(old)
    }

    /// Drops every value expired at `now`; returns how many.
    pub fn sweep(&mut self, now: Time) -> usize {
        let mut dropped = 0;
        while let Some(&(expires, key)) = self.by_expiry.first() {
            if expires > now {
                break;
            }
            self.remove(&key);
            dropped += 1;
        }
        dropped
    }

    /// When the next value expires.
    pub fn next_expiry(&self) -> Option<Time> {
        self.by_expiry.first().map(|(t, _)| *t)
    }

    /// Live entries whose key lies in the ring interval `(from, to]` (the whole ring when
    /// `from == to`), in ring order from `from`, walking the tree range(s) directly.
    pub fn range(&self, from: Key, to: Key, now: Time) -> impl Iterator<Item = (&Key, &Stored)> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let (first, second) = if from < to {
            (self.values.range((Excluded(from), Included(to))), None)
        } else {
            // Wraps past zero (or the whole ring when from == to).
            (
                self.values.range((Excluded(from), Unbounded)),
                Some(self.values.range((Unbounded, Included(to)))),
            )
        };
        first
            .chain(second.into_iter().flatten())
            .filter(move |(_, s)| s.expires > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;

    fn k(b: u8) -> Key {
        Id([b; 32])
    }

    #[test]
    fn last_write_wins_and_accounting_follows() {
        let mut s = Storage::new(10_000);
        s.put(k(1), &Bytes::from_static(b"one"), Time(100), 1)
            .unwrap();
        s.put(k(1), &Bytes::from_static(b"three"), Time(200), 1)
            .unwrap();
        assert_eq!(
            s.get(&k(1), Time(0)).unwrap().value,
            Bytes::from_static(b"three")
        );
        assert_eq!(s.len(), 1);
        assert_eq!(s.bytes_used(), 5 + ENTRY_OVERHEAD_BYTES);
        s.remove(&k(1));
        assert_eq!(s.bytes_used(), 0);
    }

    #[test]
    fn expired_values_are_never_returned_and_sweep_reclaims_them() {
        let mut s = Storage::new(10_000);
        s.put(k(1), &Bytes::from_static(b"a"), Time(1000), 1)
            .unwrap();
        s.put(k(2), &Bytes::from_static(b"b"), Time(5000), 1)
            .unwrap();
        assert!(s.get(&k(1), Time(999)).is_some());
        assert!(s.get(&k(1), Time(1000)).is_none());
        assert_eq!(s.next_expiry(), Some(Time(1000)));
        assert_eq!(s.sweep(Time(1000)), 1);
        assert_eq!(s.len(), 1);
        assert_eq!(s.bytes_used(), 1 + ENTRY_OVERHEAD_BYTES);
        assert_eq!(s.sweep(Time(4999)), 0);
        assert_eq!(s.sweep(Time(5000)), 1);
        assert!(s.is_empty());
        assert_eq!(s.next_expiry(), None);
    }

    #[test]
    fn quota_refuses_without_touching_existing_values() {
        let mut s = Storage::new(2 * ENTRY_OVERHEAD_BYTES + 20);
        s.put(k(1), &Bytes::from(vec![1; 10]), Time(100), 1)
            .unwrap();
        s.put(k(2), &Bytes::from(vec![2; 10]), Time(100), 1)
            .unwrap();
        let err = s
            .put(k(3), &Bytes::from(vec![3; 1]), Time(100), 1)
            .unwrap_err();
        assert!(matches!(err, StoreError::QuotaExceeded { .. }));
        // An overwrite that would not fit keeps the old value.
        assert!(
            s.put(k(1), &Bytes::from(vec![9; 11]), Time(100), 1)
                .is_err()
        );
        assert_eq!(
            s.get(&k(1), Time(0)).unwrap().value,
            Bytes::from(vec![1; 10])
        );
        // An overwrite of the same size fits.
        s.put(k(1), &Bytes::from(vec![8; 10]), Time(100), 1)
            .unwrap();
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn range_follows_ring_intervals() {
        let mut s = Storage::new(100_000);
        for b in [10u8, 20, 30, 250] {
            s.put(k(b), &Bytes::from_static(b"x"), Time(100), 1)
                .unwrap();
        }
        let keys = |from: u8, to: u8| {
            s.range(k(from), k(to), Time(0))
                .map(|(k, _)| k.0[0])
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(10, 30), vec![20, 30]);
        assert_eq!(keys(240, 15), vec![250, 10]);
        assert_eq!(keys(7, 7).len(), 4);
    }
}
