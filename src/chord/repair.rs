//! Keeping the wanted number of copies: periodic repair rounds that compare summaries before
//! sending values, and the graceful leave that hands a node's values on before it exits.
//!
//! Repair: the node responsible for `(pred, me]` sends each of its first `replication_max − 1`
//! successors a SYNC with, per bucket of the key space, the XOR digest and count of the keys that
//! holder should keep (a key with replication k lives on the responsible node and its first k − 1
//! successors). Equal summaries cost one small message each way; a holder that differs lists its keys
//! in the differing buckets, and the responsible node pushes what is missing, within
//! `repair_bytes_per_round_max` per round.

use super::{Node, Pending, Periodic, RpcKind};
use crate::id::{Id, Key, in_half_open};
use crate::storage::Stored;
use crate::wire::p2p::{Peer, PeerMsg, SYNC_BUCKETS, SYNC_KEYS_MAX};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Values a responsible node fetches from one holder's SYNC REPLY at most.
const PULLS_PER_REPLY_MAX: usize = 256;

/// Which summary bucket a key falls in: its top 6 bits.
fn bucket(key: &Key) -> usize {
    (key.0[0] >> 2) as usize
}

/// A value's contribution to a bucket digest: the key and its version, so that a holder with an
/// older write of the key differs too.
fn fingerprint(key: &Key, s: &Stored) -> u64 {
    let k = u64::from_be_bytes(key.0[..8].try_into().expect("8 bytes"));
    k ^ s.version.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Does the `index`-th successor of a key's responsible node keep a value with this replication?
fn held_at(index: usize, s: &Stored) -> bool {
    (s.replication as usize) > index + 1
}

impl Node {
    /// One repair round (Periodic::Repair).
    pub(super) fn repair(&mut self) {
        let Some(pred) = self.ring.pred else { return };
        if self.leaving {
            return;
        }
        self.repair_budget = self.cfg.repair_bytes_per_round_max;
        self.stats.repair_rounds += 1;
        let me = self.ring.me;
        // Only successors that should hold something are asked: up to the largest replication here.
        let copies = self
            .storage
            .range(pred.id, me.id, self.now)
            .map(|(_, s)| s.replication)
            .max();
        let holders: Vec<Peer> = self
            .ring
            .succs()
            .iter()
            .take(copies.unwrap_or(1) as usize - 1)
            .copied()
            .collect();
        for (index, holder) in holders.into_iter().enumerate() {
            let buckets = self.summary(pred.id, me.id, index);
            let msg = PeerMsg::Sync {
                from: pred.id,
                to: me.id,
                index: index as u8,
                buckets,
            };
            self.stats.repair_messages += 1;
            let what = Pending::Rpc {
                peer: holder.addr,
                kind: RpcKind::Sync { holder, index },
            };
            self.request(holder.addr, msg, what, self.cfg.request_timeout_ms);
        }
    }

    /// Per bucket, the digest and count of the keys in `(from, to]` that holder `index` should keep.
    fn summary(&self, from: Id, to: Id, index: usize) -> Vec<(u64, u32)> {
        let mut buckets = vec![(0u64, 0u32); SYNC_BUCKETS];
        for (k, s) in self
            .storage
            .range(from, to, self.now)
            .filter(|(_, s)| held_at(index, s))
        {
            let b = &mut buckets[bucket(&k)];
            b.0 ^= fingerprint(&k, &s);
            b.1 += 1;
        }
        buckets
    }

    /// Holder side: compare the summary with ours and list our keys in the buckets that differ.
    pub(super) fn on_sync(
        &mut self,
        from_addr: SocketAddr,
        request: u64,
        range: (Id, Id),
        index: u8,
        theirs: Vec<(u64, u32)>,
    ) {
        let ours = self.summary(range.0, range.1, index as usize);
        let differing = (0..SYNC_BUCKETS)
            .filter(|&b| ours[b] != theirs[b])
            .fold(0u64, |m, b| m | 1 << b);
        let keys: Vec<(Key, u64)> = if differing == 0 {
            Vec::new()
        } else {
            self.storage
                .range(range.0, range.1, self.now)
                .filter(|(k, s)| held_at(index as usize, s) && differing & (1 << bucket(k)) != 0)
                .map(|(k, s)| (k, s.version))
                .take(SYNC_KEYS_MAX)
                .collect()
        };
        self.send(from_addr, request, PeerMsg::SyncReply { differing, keys });
    }

    /// Responsible side: push what the holder lacks or holds in an older version in the differing
    /// buckets, within the budget; fetch what the holder has newer than we do.
    pub(super) fn sync_reply(
        &mut self,
        holder: Peer,
        index: usize,
        differing: u64,
        keys: Vec<(Key, u64)>,
    ) {
        let Some(pred) = self.ring.pred else { return };
        if differing == 0 {
            return;
        }
        // Values in our range that the holder has and we lack, or has in a newer version (we
        // joined, or took over from a node that missed a write): fetch them, or nobody would ever
        // copy them back to the count.
        let lacking: Vec<Key> = keys
            .iter()
            .filter(|(k, version)| {
                in_half_open(k, &pred.id, &self.ring.me.id)
                    && self
                        .storage
                        .get(k, self.now)
                        .is_none_or(|s| s.version < *version)
            })
            .take(PULLS_PER_REPLY_MAX)
            .map(|(k, _)| *k)
            .collect();
        for key in lacking {
            let what = Pending::Rpc {
                peer: holder.addr,
                kind: RpcKind::Pull { key },
            };
            self.request(
                holder.addr,
                PeerMsg::StorageGet { key },
                what,
                self.cfg.request_timeout_ms,
            );
        }
        let has: BTreeMap<Key, u64> = keys.into_iter().collect();
        let missing = self.copy_out(pred.id, self.ring.me.id, self.repair_budget, |k, s| {
            held_at(index, s)
                && differing & (1 << bucket(k)) != 0
                && has.get(k).is_none_or(|v| *v < s.version)
        });
        let (mut sent, mut bytes) = (0u64, 0usize);
        for copy in missing {
            self.repair_budget -= copy.value.len();
            bytes += copy.value.len();
            sent += 1;
            self.push(holder, &copy);
        }
        if sent > 0 {
            self.stats.repair_values_pushed += sent;
            self.stats.repair_bytes_pushed += bytes as u64;
            log::info!(
                "[{}] repair: {} values ({} bytes) to {} (successor {})",
                self.short(),
                sent,
                bytes,
                holder.addr,
                index + 1
            );
        }
    }

    /// A pulled value arrived: keep it as the responsible node (unless ours is newer after all); the
    /// next round copies it on.
    pub(super) fn pulled(&mut self, key: Key, msg: PeerMsg) {
        if let PeerMsg::StorageGetSuccess {
            ttl_ms,
            replication,
            version,
            key: k,
            value,
        } = msg
            && k == key
        {
            let expires = self.now + (ttl_ms as u64).min(self.cfg.ttl_max_s as u64 * 1000);
            let stored =
                self.storage
                    .put(key, &value, expires, replication.max(1), version, self.now);
            if stored == Ok(true) {
                self.stats.repair_values_pulled += 1;
            }
        }
    }

    /// Graceful leave: tell our successor and predecessor, and hand the values we are responsible
    /// for to the successor, which takes over. `leave_done` says when the hand-off is acknowledged.
    pub fn handle_leave(&mut self, now: crate::time::Time) {
        self.now = now;
        self.leaving = true;
        let Some(succ) = self.ring.succs().first().copied() else {
            return;
        };
        let me = self.ring.me;
        let leave = PeerMsg::Leave {
            node: me,
            pred: self.ring.pred,
            succs: self.ring.succs().to_vec(),
        };
        self.send(succ.addr, 0, leave.clone());
        if let Some(p) = self.ring.pred.filter(|p| p.addr != succ.addr) {
            self.send(p.addr, 0, leave);
        }
        let from = self.ring.pred.map_or(me.id, |p| p.id);
        let moved = self.push_range(from, me.id, succ);
        log::info!(
            "[{}] leaving: handed {} values to {}",
            self.short(),
            moved,
            succ.addr
        );
    }

    /// True once every value handed on at leave has been acknowledged (or timed out).
    pub fn leave_done(&self) -> bool {
        self.leaving
            && !self.pending.values().any(|e| {
                matches!(
                    e.what,
                    Pending::Rpc {
                        kind: RpcKind::Push { .. },
                        ..
                    }
                )
            })
    }

    /// A neighbour leaves (Chord ToN): our successor's place goes to its successors, our
    /// predecessor's to its predecessor; a new range of ours is repaired soon.
    pub(super) fn on_leave(&mut self, node: Peer, pred: Option<Peer>, succs: Vec<Peer>) {
        let was_pred = self.ring.pred.is_some_and(|p| p.addr == node.addr);
        let was_succ = self.ring.succs().iter().any(|p| p.addr == node.addr);
        if !was_pred && !was_succ {
            return;
        }
        log::info!("[{}] {} leaves the ring", self.short(), node.addr);
        self.cache.forget(node.addr);
        let me = self.ring.me.id;
        let mut merged: Vec<Peer> = self
            .ring
            .succs()
            .iter()
            .chain(succs.iter())
            .filter(|p| p.addr != node.addr)
            .copied()
            .collect();
        merged.sort_by_key(|p| me.distance_to(&p.id));
        merged.dedup_by_key(|p| p.id);
        self.ring.remove(node.addr);
        if was_succ {
            self.ring.set_succs(merged);
        }
        if was_pred {
            self.ring.pred = pred.filter(|p| p.id != me);
            // The leaver's range is ours now: bring its copies back to count soon.
            self.periodic[Periodic::Repair as usize] =
                Some(self.now + self.cfg.stabilize_interval_ms);
        }
    }
}
