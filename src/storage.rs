//! The values this node holds: key → value with an absolute expiry time, bounded by a byte quota.
//! Every value carries the version its responsible node gave the write; an older version never
//! replaces a newer live one. Expired values are never returned; `sweep` (called from the core's
//! timer) walks the store a slice at a time and reclaims them. Owns no network or clock: times
//! come in as arguments.
//!
//! Compact on purpose (a node may hold millions of small values): each entry is one heap block
//! `key · expires · version · replication · value`, and the ordered set holds only its 16-byte
//! pointer, so an entry costs under 64 bytes beyond its key and value (docs/PERFORMANCE.md). There is no separate
//! expiry index: the incremental sweep needs none.

use crate::id::{Id, Key};
use crate::time::Time;
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::ops::Bound::{Excluded, Included, Unbounded};

/// What one stored entry costs against the quota besides its value: key, expiry, version,
/// replication and writer in the entry block (51), the allocator's header and rounding (≤ 23), and
/// the tree's share of a half-full node (≤ 32).
pub const ENTRY_OVERHEAD_BYTES: usize = 106;

/// How often the sweep runs while values are stored, and how much of the store one step visits
/// (`len / SWEEP_FRACTION + SWEEP_MIN`): every value is visited within SWEEP_FRACTION steps (8 s).
pub const SWEEP_INTERVAL_MS: u64 = 250;
const SWEEP_FRACTION: usize = 32;
const SWEEP_MIN: usize = 64;
/// A PUT refused for lack of room sweeps the whole store first, at most this often.
const FULL_SWEEP_INTERVAL_MS: u64 = 1000;

const KEY: std::ops::Range<usize> = 0..32;
const EXPIRES: std::ops::Range<usize> = 32..40;
const VERSION: std::ops::Range<usize> = 40..48;
const REPLICATION: usize = 48;
const WRITER: std::ops::Range<usize> = 49..51;
const VALUE: usize = 51;

/// Who wrote a value, for the per-writer share of the store: an id the caller gives (0: nobody in
/// particular, no share applies), and the most that writer's values may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Writer {
    pub id: u16,
    pub bytes_max: usize,
}

impl Writer {
    pub const ANY: Writer = Writer {
        id: 0,
        bytes_max: usize::MAX,
    };
}

/// One stored value, read in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored<'a> {
    pub value: &'a [u8],
    pub expires: Time,
    /// How many copies the ring should keep (the PUT's clamped replication).
    pub replication: u8,
    /// Set by the responsible node for each write: higher is newer.
    pub version: u64,
}

/// One heap block per value, ordered by its key alone.
struct Entry(Box<[u8]>);

impl Entry {
    fn new(
        key: &Key,
        value: &[u8],
        (expires, replication, version): (Time, u8, u64),
        writer: u16,
    ) -> Entry {
        let mut block = Vec::with_capacity(VALUE + value.len());
        block.extend_from_slice(&key.0);
        block.extend_from_slice(&expires.as_ms().to_be_bytes());
        block.extend_from_slice(&version.to_be_bytes());
        block.push(replication);
        block.extend_from_slice(&writer.to_be_bytes());
        block.extend_from_slice(value);
        Entry(block.into_boxed_slice())
    }

    fn key(&self) -> &[u8; 32] {
        self.0[KEY].try_into().expect("32-byte key")
    }

    fn expires(&self) -> Time {
        Time(u64::from_be_bytes(
            self.0[EXPIRES].try_into().expect("8-byte expiry"),
        ))
    }

    fn writer(&self) -> u16 {
        u16::from_be_bytes(self.0[WRITER].try_into().expect("2-byte writer"))
    }

    fn version(&self) -> u64 {
        u64::from_be_bytes(self.0[VERSION].try_into().expect("8-byte version"))
    }

    fn view(&self) -> Stored<'_> {
        Stored {
            value: &self.0[VALUE..],
            expires: self.expires(),
            replication: self.0[REPLICATION],
            version: self.version(),
        }
    }

    fn charge(&self) -> usize {
        self.0.len() - VALUE + ENTRY_OVERHEAD_BYTES
    }
}

impl Borrow<[u8; 32]> for Entry {
    fn borrow(&self) -> &[u8; 32] {
        self.key()
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Entry) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Entry) -> Ordering {
        self.key().cmp(other.key())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The value does not fit in `storage_bytes_max`; nothing was changed.
    QuotaExceeded { needed: usize, free: usize },
    /// The writer's values would take more than its share; nothing was changed.
    ShareExceeded { writer: u16, held: usize },
}

pub struct Storage {
    entries: BTreeSet<Entry>,
    bytes_used: usize,
    bytes_max: usize,
    /// Bytes charged per writer (writer 0 is not tracked).
    by_writer: std::collections::BTreeMap<u16, usize>,
    /// The last key the incremental sweep visited (`None`: start from the lowest), and when it
    /// runs next.
    sweep_cursor: Option<[u8; 32]>,
    next_sweep: Time,
    next_full_sweep: Time,
    /// Reused by the sweep for the keys it drops.
    doomed: Vec<[u8; 32]>,
}

impl Storage {
    pub fn new(bytes_max: usize) -> Storage {
        Storage {
            entries: BTreeSet::new(),
            bytes_used: 0,
            bytes_max,
            by_writer: std::collections::BTreeMap::new(),
            sweep_cursor: None,
            next_sweep: Time(0),
            next_full_sweep: Time(0),
            doomed: Vec::new(),
        }
    }

    /// Entries held, including expired ones the sweep has not reached yet.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes_used(&self) -> usize {
        self.bytes_used
    }

    /// Stores `value` under `key` until `expires`, unless a newer `version` is held (then `Ok(false)`:
    /// the write is superseded). The value is copied into the entry's own block, so it never pins a
    /// connection's larger receive buffer. When it does not fit, expired values are swept first (at
    /// most once a second) before the PUT is refused.
    pub fn put(
        &mut self,
        key: Key,
        value: &[u8],
        expires: Time,
        replication: u8,
        version: u64,
        now: Time,
    ) -> Result<bool, StoreError> {
        let meta = (expires, replication, version);
        self.put_as(key, value, meta, now, Writer::ANY)
    }

    /// [`Self::put`] for `writer`, whose values may take no more than its share.
    pub fn put_as(
        &mut self,
        key: Key,
        value: &[u8],
        (expires, replication, version): (Time, u8, u64),
        now: Time,
        writer: Writer,
    ) -> Result<bool, StoreError> {
        if self
            .entries
            .get(&key.0)
            .is_some_and(|e| e.version() > version && e.expires() > now)
        {
            return Ok(false);
        }
        let needed = value.len() + ENTRY_OVERHEAD_BYTES;
        let mut free = self.free_for(&key);
        if needed > free && now >= self.next_full_sweep {
            self.next_full_sweep = now + FULL_SWEEP_INTERVAL_MS;
            self.sweep_all(now);
            free = self.free_for(&key);
        }
        if needed > free {
            return Err(StoreError::QuotaExceeded { needed, free });
        }
        if writer.id != 0 {
            self.check_share(&key, needed, writer)?;
        }
        let entry = Entry::new(&key, value, (expires, replication, version), writer.id);
        self.charge(&entry);
        if let Some(old) = self.entries.replace(entry) {
            self.release(&old);
        }
        Ok(true)
    }

    /// Would `needed` more bytes of `writer` (an overwrite of its own value frees that value's)
    /// stay within its share?
    fn check_share(&self, key: &Key, needed: usize, writer: Writer) -> Result<(), StoreError> {
        let own_old = self
            .entries
            .get(&key.0)
            .filter(|e| e.writer() == writer.id)
            .map_or(0, Entry::charge);
        let held = self.writer_bytes(writer.id).saturating_sub(own_old);
        if held + needed > writer.bytes_max {
            return Err(StoreError::ShareExceeded {
                writer: writer.id,
                held,
            });
        }
        Ok(())
    }

    /// Bytes the values of `writer` take (0 for writer 0, which is not tracked).
    pub fn writer_bytes(&self, writer: u16) -> usize {
        self.by_writer.get(&writer).copied().unwrap_or(0)
    }

    fn charge(&mut self, e: &Entry) {
        self.bytes_used += e.charge();
        if e.writer() != 0 {
            *self.by_writer.entry(e.writer()).or_default() += e.charge();
        }
    }

    fn release(&mut self, e: &Entry) {
        self.bytes_used -= e.charge();
        if let Some(b) = self.by_writer.get_mut(&e.writer()) {
            *b -= e.charge();
            if *b == 0 {
                self.by_writer.remove(&e.writer());
            }
        }
    }

    /// The version a new write of `key` gets: `at_least` (the wall clock), past any version held.
    pub fn next_version(&self, key: &Key, at_least: u64) -> u64 {
        self.entries
            .get(&key.0)
            .map_or(at_least, |e| at_least.max(e.version().saturating_add(1)))
    }

    /// Room for a value under `key` (an overwrite frees the old one).
    fn free_for(&self, key: &Key) -> usize {
        let freed = self.entries.get(&key.0).map_or(0, Entry::charge);
        self.bytes_max - (self.bytes_used - freed)
    }

    /// The live value under `key`, if any.
    pub fn get(&self, key: &Key, now: Time) -> Option<Stored<'_>> {
        self.entries
            .get(&key.0)
            .filter(|e| e.expires() > now)
            .map(Entry::view)
    }

    pub fn remove(&mut self, key: &Key) -> bool {
        match self.entries.take(&key.0) {
            Some(old) => {
                self.release(&old);
                true
            }
            None => false,
        }
    }

    /// One sweep step when it is due: visits the next slice of the store in key order and drops
    /// what expired at `now`; returns how many.
    pub fn sweep(&mut self, now: Time) -> usize {
        if now < self.next_sweep {
            return 0;
        }
        self.next_sweep = now + SWEEP_INTERVAL_MS;
        let visit = self.entries.len() / SWEEP_FRACTION + SWEEP_MIN;
        let mut visited = 0;
        let mut last = None;
        let from = self.sweep_cursor.as_ref().map_or(Unbounded, Excluded);
        for e in self
            .entries
            .range::<[u8; 32], _>((from, Unbounded))
            .take(visit)
        {
            visited += 1;
            last = Some(*e.key());
            if e.expires() <= now {
                self.doomed.push(*e.key());
            }
        }
        // At the end of the key space the next step starts over from the bottom.
        self.sweep_cursor = last.filter(|_| visited == visit);
        self.drop_doomed()
    }

    /// Drops every value expired at `now`; returns how many.
    pub fn sweep_all(&mut self, now: Time) -> usize {
        self.doomed.extend(
            self.entries
                .iter()
                .filter(|e| e.expires() <= now)
                .map(|e| *e.key()),
        );
        self.drop_doomed()
    }

    fn drop_doomed(&mut self) -> usize {
        let mut doomed = std::mem::take(&mut self.doomed);
        let count = doomed.len();
        for key in doomed.drain(..) {
            self.remove(&Id(key));
        }
        self.doomed = doomed;
        count
    }

    /// When `sweep` next has work to do (never while the store is empty).
    pub fn next_sweep(&self) -> Option<Time> {
        (!self.entries.is_empty()).then_some(self.next_sweep)
    }

    /// Live entries whose key lies in the ring interval `(from, to]` (the whole ring when
    /// `from == to`), in ring order from `from`, walking the tree range(s) directly.
    pub fn range(&self, from: Key, to: Key, now: Time) -> impl Iterator<Item = (Key, Stored<'_>)> {
        let (first, second) = if from < to {
            (
                self.entries
                    .range::<[u8; 32], _>((Excluded(&from.0), Included(&to.0))),
                None,
            )
        } else {
            // Wraps past zero (or the whole ring when from == to).
            (
                self.entries
                    .range::<[u8; 32], _>((Excluded(&from.0), Unbounded)),
                Some(
                    self.entries
                        .range::<[u8; 32], _>((Unbounded, Included(&to.0))),
                ),
            )
        };
        first
            .chain(second.into_iter().flatten())
            .filter(move |e| e.expires() > now)
            .map(|e| (Id(*e.key()), e.view()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(b: u8) -> Key {
        Id([b; 32])
    }

    #[test]
    fn last_write_wins_and_accounting_follows() {
        let mut s = Storage::new(10_000);
        s.put(k(1), b"one", Time(100), 1, 1, Time(0)).unwrap();
        s.put(k(1), b"three", Time(200), 2, 1, Time(0)).unwrap();
        let got = s.get(&k(1), Time(0)).unwrap();
        assert_eq!(got.value, b"three");
        assert_eq!((got.expires, got.replication), (Time(200), 2));
        assert_eq!(s.len(), 1);
        assert_eq!(s.bytes_used(), 5 + ENTRY_OVERHEAD_BYTES);
        assert!(s.remove(&k(1)));
        assert!(!s.remove(&k(1)));
        assert_eq!(s.bytes_used(), 0);
    }

    #[test]
    fn an_older_version_never_replaces_a_newer_one() {
        let mut s = Storage::new(10_000);
        assert!(s.put(k(1), b"new", Time(100), 1, 20, Time(0)).unwrap());
        assert!(!s.put(k(1), b"old", Time(100), 1, 10, Time(0)).unwrap());
        assert_eq!(s.get(&k(1), Time(0)).unwrap().value, b"new");
        assert_eq!(s.get(&k(1), Time(0)).unwrap().version, 20);
        // The same version again is a repeated copy: stored.
        assert!(s.put(k(1), b"new", Time(150), 1, 20, Time(0)).unwrap());
        assert_eq!(s.next_version(&k(1), 5), 21);
        assert_eq!(s.next_version(&k(1), 50), 50);
        assert_eq!(s.next_version(&k(2), 5), 5);
        // A newer value that has expired does not hold back an older live one.
        assert!(s.put(k(1), b"old", Time(300), 1, 10, Time(150)).unwrap());
        assert_eq!(s.get(&k(1), Time(150)).unwrap().value, b"old");
    }

    #[test]
    fn expired_values_are_never_returned_and_sweep_reclaims_them() {
        let mut s = Storage::new(10_000);
        assert_eq!(s.next_sweep(), None);
        s.put(k(1), b"a", Time(1000), 1, 1, Time(0)).unwrap();
        s.put(k(2), b"b", Time(5000), 1, 1, Time(0)).unwrap();
        assert!(s.get(&k(1), Time(999)).is_some());
        assert!(s.get(&k(1), Time(1000)).is_none());
        assert_eq!(s.sweep(Time(999)), 0);
        assert_eq!(s.next_sweep(), Some(Time(999 + SWEEP_INTERVAL_MS)));
        // Not due yet: nothing is visited.
        assert_eq!(s.sweep(Time(1000)), 0);
        assert_eq!(s.sweep(Time(1249)), 1);
        assert_eq!(s.len(), 1);
        assert_eq!(s.bytes_used(), 1 + ENTRY_OVERHEAD_BYTES);
        assert_eq!(s.sweep_all(Time(4999)), 0);
        assert_eq!(s.sweep_all(Time(5000)), 1);
        assert!(s.is_empty());
        assert_eq!(s.next_sweep(), None);
    }

    #[test]
    fn sweep_steps_cover_a_large_store_within_its_fraction() {
        let mut s = Storage::new(usize::MAX / 2);
        let n = 10_000u32;
        for i in 0..n {
            let key = Id::hash(&i.to_be_bytes());
            // Every third value expires at 1000.
            let expires = if i % 3 == 0 {
                Time(1000)
            } else {
                Time(1_000_000)
            };
            s.put(key, b"v", expires, 1, 1, Time(0)).unwrap();
        }
        // The lowest possible key is visited too.
        s.put(k(0), b"v", Time(1000), 1, 1, Time(0)).unwrap();
        let mut dropped = 0;
        let mut now = Time(1000);
        for _ in 0..SWEEP_FRACTION {
            dropped += s.sweep(now);
            now = now + SWEEP_INTERVAL_MS;
        }
        assert_eq!(dropped, n.div_ceil(3) as usize + 1);
        assert_eq!(s.len(), (n - n.div_ceil(3)) as usize);
    }

    #[test]
    fn quota_refuses_without_touching_existing_values() {
        let mut s = Storage::new(2 * ENTRY_OVERHEAD_BYTES + 20);
        s.put(k(1), &[1; 10], Time(100), 1, 1, Time(0)).unwrap();
        s.put(k(2), &[2; 10], Time(100), 1, 1, Time(0)).unwrap();
        let err = s.put(k(3), &[3; 1], Time(100), 1, 1, Time(0)).unwrap_err();
        assert!(matches!(err, StoreError::QuotaExceeded { .. }));
        // An overwrite that would not fit keeps the old value.
        assert!(s.put(k(1), &[9; 11], Time(100), 1, 1, Time(0)).is_err());
        assert_eq!(s.get(&k(1), Time(0)).unwrap().value, &[1; 10]);
        // An overwrite of the same size fits.
        s.put(k(1), &[8; 10], Time(100), 1, 1, Time(0)).unwrap();
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn a_full_store_makes_room_by_sweeping_expired_values() {
        let mut s = Storage::new(2 * ENTRY_OVERHEAD_BYTES + 20);
        s.put(k(1), &[1; 10], Time(100), 1, 1, Time(0)).unwrap();
        s.put(k(2), &[2; 10], Time(900), 1, 1, Time(0)).unwrap();
        // k(1) expired at 100 but no sweep step reached it: the refused PUT sweeps everything.
        s.put(k(3), &[3; 10], Time(2000), 1, 1, Time(500)).unwrap();
        assert!(s.get(&k(1), Time(500)).is_none());
        assert_eq!(s.len(), 2);
        // The next full sweep waits a second, even though k(2) has expired by now.
        assert!(s.put(k(4), &[4; 10], Time(2000), 1, 1, Time(1000)).is_err());
        s.put(k(4), &[4; 10], Time(2000), 1, 1, Time(1500)).unwrap();
    }

    #[test]
    fn range_follows_ring_intervals() {
        let mut s = Storage::new(100_000);
        for b in [10u8, 20, 30, 250] {
            s.put(k(b), b"x", Time(100), 1, 1, Time(0)).unwrap();
        }
        let keys = |from: u8, to: u8| {
            s.range(k(from), k(to), Time(0))
                .map(|(k, _)| k.0[0])
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(10, 30), vec![20, 30]);
        assert_eq!(keys(240, 15), vec![250, 10]);
        assert_eq!(keys(7, 7).len(), 4);
        assert_eq!(s.range(k(7), k(7), Time(100)).count(), 0);
    }

    #[test]
    fn a_writer_gets_no_more_than_its_share_and_gets_it_back() {
        let mut s = Storage::new(1 << 20);
        let w = Writer {
            id: 5,
            bytes_max: 3 * (100 + ENTRY_OVERHEAD_BYTES),
        };
        let meta = (Time(100), 1, 1);
        for b in 1..=3 {
            s.put_as(k(b), &[b; 100], meta, Time(0), w).unwrap();
        }
        let err = s.put_as(k(4), &[4; 100], meta, Time(0), w).unwrap_err();
        assert!(
            matches!(err, StoreError::ShareExceeded { writer: 5, .. }),
            "{err:?}"
        );
        // Others are not held to it; an overwrite and a removal give room back.
        s.put_as(k(4), &[4; 100], meta, Time(0), Writer::ANY)
            .unwrap();
        s.put_as(k(1), &[9; 100], meta, Time(0), w).unwrap();
        assert!(s.remove(&k(2)));
        s.put_as(k(5), &[5; 100], meta, Time(0), w).unwrap();
        assert_eq!(s.writer_bytes(5), 3 * (100 + ENTRY_OVERHEAD_BYTES));
    }
}
