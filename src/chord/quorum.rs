//! Majority reads (`read_quorum = "majority"`): a GET asks every holder of the key at once and
//! answers the value most of them hold, at the highest version among equals, so one lying holder
//! cannot serve a forged value. Pure bookkeeping over the answers; `clients` sends and receives.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// One majority read in progress, for an op of type `Op`.
struct Read<Op> {
    op: Op,
    /// What the holders that had the value answered: their IP, the version and the value.
    answers: Vec<(IpAddr, u64, Bytes)>,
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
    pub fn answer(
        &mut self,
        id: u64,
        value: Option<(IpAddr, u64, Bytes)>,
    ) -> Option<(Op, Option<Bytes>)> {
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

/// The value held by the most holders, one vote per IP (one IP may hold several slots); among
/// equally many, the one with the highest version.
fn most_held(answers: Vec<(IpAddr, u64, Bytes)>) -> Option<Bytes> {
    let mut votes: Vec<((u64, Bytes), Vec<IpAddr>)> = Vec::new();
    for (ip, version, value) in answers {
        let answer = (version, value);
        match votes.iter_mut().find(|(a, _)| *a == answer) {
            Some((_, ips)) if !ips.contains(&ip) => ips.push(ip),
            Some(_) => {}
            None => votes.push((answer, vec![ip])),
        }
    }
    votes
        .into_iter()
        .max_by_key(|((version, _), ips)| (ips.len(), *version))
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
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        assert!(
            q.answer(id, Some((ip(9), u64::MAX, forged.clone())))
                .is_none()
        );
        assert!(q.answer(id, Some((ip(1), 5, honest.clone()))).is_none());
        let (op, value) = q.answer(id, Some((ip(2), 5, honest.clone()))).unwrap();
        assert_eq!((op, value), ("op", Some(honest.clone())));
        // One IP's several slots are one vote: two honest holders outvote three slots of one IP.
        let id = q.start("op", 5);
        for _ in 0..3 {
            let _ = q.answer(id, Some((ip(9), 7, forged.clone())));
        }
        let _ = q.answer(id, Some((ip(1), 5, honest.clone())));
        let (_, value) = q.answer(id, Some((ip(2), 5, honest.clone()))).unwrap();
        assert_eq!(value, Some(honest));
        // Equally many: the higher version.
        let id = q.start("op", 2);
        let _ = q.answer(id, Some((ip(1), 1, Bytes::from_static(b"old"))));
        let (_, value) = q
            .answer(id, Some((ip(2), 2, Bytes::from_static(b"new"))))
            .unwrap();
        assert_eq!(value.as_deref(), Some(&b"new"[..]));
        let id = q.start("op", 1);
        assert_eq!(q.answer(id, None), Some(("op", None)));
        assert_eq!(q.ops().count(), 0);
    }
}
