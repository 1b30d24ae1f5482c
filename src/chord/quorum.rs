//! Majority reads (`read_quorum = "majority"`): a GET asks every holder of the key at once and
//! answers the value most of them hold, at the highest version among equals, so one lying holder
//! cannot serve a forged value. Pure bookkeeping over the answers; `clients` sends and receives.

use bytes::Bytes;
use std::collections::BTreeMap;

/// One majority read in progress, for an op of type `Op`.
struct Read<Op> {
    op: Op,
    /// What the holders that had the value answered: version and value.
    answers: Vec<(u64, Bytes)>,
    /// Holders not heard from yet.
    waiting: usize,
}

pub(super) struct QuorumReads<Op> {
    next: u64,
    open: BTreeMap<u64, Read<Op>>,
}

impl<Op> Default for QuorumReads<Op> {
    fn default() -> Self {
        QuorumReads {
            next: 0,
            open: BTreeMap::new(),
        }
    }
}

impl<Op> QuorumReads<Op> {
    /// Starts a read of `holders` holders; the id names it in their answers.
    pub fn start(&mut self, op: Op, holders: usize) -> u64 {
        self.next += 1;
        let read = Read {
            op,
            answers: Vec::new(),
            waiting: holders,
        };
        self.open.insert(self.next, read);
        self.next
    }

    /// One holder's answer (`None`: it has no value, or did not answer). When it was the last, the
    /// op comes back with the value to answer (`None`: no holder had one).
    pub fn answer(&mut self, id: u64, value: Option<(u64, Bytes)>) -> Option<(Op, Option<Bytes>)> {
        let read = self.open.get_mut(&id)?;
        read.answers.extend(value);
        read.waiting = read.waiting.saturating_sub(1);
        if read.waiting > 0 {
            return None;
        }
        let read = self.open.remove(&id).expect("present");
        Some((read.op, most_held(read.answers)))
    }

    /// The op of read `id`, while it waits.
    pub fn op(&self, id: u64) -> Option<&Op> {
        self.open.get(&id).map(|r| &r.op)
    }

    pub fn ops(&self) -> impl Iterator<Item = &Op> {
        self.open.values().map(|r| &r.op)
    }
}

/// The value held by the most holders; among equally many, the one with the highest version.
fn most_held(answers: Vec<(u64, Bytes)>) -> Option<Bytes> {
    let mut counts: Vec<((u64, Bytes), usize)> = Vec::new();
    for a in answers {
        match counts.iter_mut().find(|(b, _)| *b == a) {
            Some((_, n)) => *n += 1,
            None => counts.push((a, 1)),
        }
    }
    counts
        .into_iter()
        .max_by_key(|((version, _), n)| (*n, *version))
        .map(|((_, value), _)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_most_holders_have_wins_over_a_newer_lone_one() {
        let mut q = QuorumReads::default();
        let id = q.start("op", 3);
        let honest = Bytes::from_static(b"honest");
        let forged = Bytes::from_static(b"forged");
        assert!(q.answer(id, Some((u64::MAX, forged))).is_none());
        assert!(q.answer(id, Some((5, honest.clone()))).is_none());
        let (op, value) = q.answer(id, Some((5, honest.clone()))).unwrap();
        assert_eq!((op, value), ("op", Some(honest)));
        // Equally many: the higher version.
        let id = q.start("op", 2);
        let _ = q.answer(id, Some((1, Bytes::from_static(b"old"))));
        let (_, value) = q.answer(id, Some((2, Bytes::from_static(b"new")))).unwrap();
        assert_eq!(value.as_deref(), Some(&b"new"[..]));
        let id = q.start("op", 1);
        assert_eq!(q.answer(id, None), Some(("op", None)));
        assert_eq!(q.ops().count(), 0);
    }
}
