//! Keeping the wanted number of copies: periodic repair rounds that compare summaries before
//! sending values.
//!
//! Repair: the node responsible for `(pred, me]` sends each of its first `replication_max − 1`
//! successors a SYNC with, per bucket of the key space, the XOR digest and count of the keys that
//! holder should keep (a key with replication k lives on the responsible node and its first k − 1
//! successors). Equal summaries cost one small message each way; a holder that differs lists its keys
//! in the differing buckets, and the responsible node pushes what is missing, within
//! `repair_bytes_per_round_max` per round. A holder's newer or missing-here values are pulled back.
//!
//! Owns the round's byte budget and its SYNC and pull requests; reads and writes values through
//! [`Values`]. No part calls it but the shell.

use super::context::{Ctx, Part, Requests};
use super::timers::Periodic;
use super::values::Values;
use crate::id::{Id, Key, in_half_open};
use crate::msg::{Peer, PeerMsg, SYNC_BUCKETS, SYNC_KEYS_MAX};
use crate::storage::{Storage, Stored};
use crate::time::Time;
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

/// What a repair request waits for.
#[derive(Debug)]
enum Rpc {
    /// SYNC REPLY from the `index`-th successor.
    Sync { holder: Peer, index: usize },
    /// The value of a key in our range that a holder has and we lack (or hold older).
    Pull { key: Key },
}

pub(super) struct Repair {
    requests: Requests<Rpc>,
    /// Bytes this round may still push.
    budget: usize,
    /// The next round also asks the successors past the holders (see [`DEEP`]).
    deep: bool,
    /// The successors a round may ask (holders and past them), as the last round saw them: one
    /// new since then is asked deep too, so the deep rounds after a merge see the whole list,
    /// however many rounds the merge takes to settle.
    last_asked: Vec<SocketAddr>,
}

/// SYNC `index` bit 7: "list every key you hold in the range, with its version" (no summary). Sent
/// to successors past a range's holders in the round after our predecessor changed, and to one
/// new in that stretch of our successor list since the last round: after two rings
/// merge (a healed partition) the later write of a key written on both sides may sit only on a node
/// that is no longer one of its holders; the responsible node pulls what is newer than its own.
pub const DEEP: u8 = 0x80;

impl Repair {
    pub fn new(ctx: &mut Ctx) -> Repair {
        ctx.schedule(Periodic::Repair, ctx.cfg.repair_interval_ms);
        Repair {
            requests: Requests::new(Part::Repair, ctx.cfg.pending_requests_max),
            budget: 0,
            deep: false,
            last_asked: Vec::new(),
        }
    }

    pub fn requests_len(&self) -> usize {
        self.requests.len()
    }

    /// A range became ours (our predecessor left): repair it soon rather than at the next round.
    /// Our predecessor changed (a join or a merge): the next round, soon, also lists what the
    /// successors past the holders keep.
    pub fn deep_soon(&mut self, ctx: &mut Ctx) {
        self.deep = true;
        self.soon(ctx);
    }

    pub fn soon(&mut self, ctx: &mut Ctx) {
        let at = ctx.now + ctx.cfg.stabilize_interval_ms;
        ctx.timers.set(Periodic::Repair, at);
    }

    /// One repair round (Periodic::Repair): a SYNC to each successor that should hold something.
    pub fn on_timer(&mut self, ctx: &mut Ctx, values: &Values) {
        ctx.schedule(Periodic::Repair, ctx.cfg.repair_interval_ms);
        let Some(pred) = ctx.ring.pred else { return };
        if ctx.leaving {
            return;
        }
        self.budget = ctx.cfg.repair_bytes_per_round_max;
        ctx.stats.repair_rounds += 1;
        let me = ctx.ring.me;
        let storage = values.storage();
        // Only successors that should hold something are asked: up to the largest replication here.
        let copies = storage
            .range(pred.id, me.id, ctx.now)
            .map(|(_, s)| s.replication)
            .max();
        let holders: Vec<Peer> = ctx
            .ring
            .succs()
            .iter()
            .take(copies.unwrap_or(1) as usize - 1)
            .copied()
            .collect();
        self.deep_syncs(ctx, (pred.id, me.id), holders.len());
        for (index, holder) in holders.into_iter().enumerate() {
            let msg = PeerMsg::Sync {
                from: pred.id,
                to: me.id,
                index: index as u8,
                buckets: summary(storage, (pred.id, me.id), index, ctx.now),
            };
            ctx.stats.repair_messages += 1;
            // A full table drops the SYNC: the next round sends it again.
            let _ = self
                .requests
                .send(ctx, holder.addr, msg, Rpc::Sync { holder, index });
        }
    }

    /// The round's DEEP SYNCs (see [`DEEP`]) for our range `(from, to]`, to successors past the
    /// first `holders`: after a predecessor change to all of them (up to `replication_max`),
    /// otherwise only to those new since the last round (a merge settling, a join).
    fn deep_syncs(&mut self, ctx: &mut Ctx, (from, to): (Id, Id), holders: usize) {
        let deep_all = std::mem::take(&mut self.deep);
        let window = ctx.cfg.replication_max as usize;
        let beyond: Vec<(usize, Peer)> = (ctx.ring.succs().iter().enumerate())
            .take(window)
            .skip(holders)
            .filter(|(_, p)| deep_all || !self.last_asked.contains(&p.addr))
            .map(|(i, p)| (i, *p))
            .collect();
        self.last_asked.clear();
        let window = ctx.ring.succs().iter().take(window);
        self.last_asked.extend(window.map(|p| p.addr));
        for (index, holder) in beyond {
            let msg = PeerMsg::Sync {
                from,
                to,
                index: index as u8 | DEEP,
                buckets: vec![(0, 0); SYNC_BUCKETS],
            };
            ctx.stats.repair_messages += 1;
            let index = index | DEEP as usize;
            let _ = self
                .requests
                .send(ctx, holder.addr, msg, Rpc::Sync { holder, index });
        }
    }

    /// SYNC (holder side): compare the summary with ours and list our keys in the buckets that
    /// differ.
    pub fn on_sync(
        &mut self,
        ctx: &mut Ctx,
        values: &Values,
        from: SocketAddr,
        request: u64,
        msg: PeerMsg,
    ) {
        let PeerMsg::Sync {
            from: range_from,
            to: range_to,
            index,
            buckets: theirs,
        } = msg
        else {
            unreachable!("not a SYNC: {msg:?}")
        };
        let range = (range_from, range_to);
        let storage = values.storage();
        if index & DEEP != 0 {
            let keys: Vec<(Key, u64)> = storage
                .range(range.0, range.1, ctx.now)
                .map(|(k, s)| (k, s.version))
                .take(SYNC_KEYS_MAX)
                .collect();
            let differing = if keys.is_empty() { 0 } else { u64::MAX };
            return ctx.send(from, request, PeerMsg::SyncReply { differing, keys });
        }
        let ours = summary(storage, range, index as usize, ctx.now);
        let differing = (0..SYNC_BUCKETS)
            .filter(|&b| ours[b] != theirs[b])
            .fold(0u64, |m, b| m | 1 << b);
        let keys: Vec<(Key, u64)> = if differing == 0 {
            Vec::new()
        } else {
            storage
                .range(range.0, range.1, ctx.now)
                .filter(|(k, s)| held_at(index as usize, s) && differing & (1 << bucket(k)) != 0)
                .map(|(k, s)| (k, s.version))
                .take(SYNC_KEYS_MAX)
                .collect()
        };
        ctx.send(from, request, PeerMsg::SyncReply { differing, keys });
    }

    /// An answer to one of our requests.
    pub fn on_reply(
        &mut self,
        ctx: &mut Ctx,
        values: &mut Values,
        from: SocketAddr,
        request: u64,
        msg: PeerMsg,
    ) {
        let Some(what) = self.requests.take_answer(ctx, request, from) else {
            return;
        };
        match (what, msg) {
            (Rpc::Sync { holder, index }, PeerMsg::SyncReply { differing, keys }) => {
                self.sync_reply(ctx, values, (holder, index), differing, keys)
            }
            (Rpc::Pull { key }, msg) => pulled(ctx, values, key, msg),
            (what, other) => log::warn!(
                "[{}] {} answered {:?} with type {}",
                ctx.short(),
                from,
                what,
                other.msg_type()
            ),
        }
    }

    /// A SYNC or pull got no answer: the next round tries again.
    pub fn on_timeout(&mut self, ctx: &mut Ctx, request: u64) {
        self.requests.take(ctx, request);
    }

    pub fn on_unreachable(&mut self, ctx: &mut Ctx, peer: SocketAddr) {
        self.requests.take_to(ctx, peer);
    }

    /// Responsible side: push what the holder lacks or holds in an older version in the differing
    /// buckets, within the budget; fetch what the holder has newer than we do.
    fn sync_reply(
        &mut self,
        ctx: &mut Ctx,
        values: &mut Values,
        (holder, index): (Peer, usize),
        differing: u64,
        keys: Vec<(Key, u64)>,
    ) {
        let Some(pred) = ctx.ring.pred else { return };
        if differing == 0 {
            return;
        }
        self.pull_newer(ctx, values.storage(), holder, pred.id, &keys);
        let has: BTreeMap<Key, u64> = keys.into_iter().collect();
        let range = (pred.id, ctx.ring.me.id);
        // A holder's version ahead of our clock is a forgery: ours replaces it (see store_copy).
        let now_ms = ctx.wall_ms();
        let missing = values.copy_out(ctx, range, self.budget, |k, s| {
            held_at(index, s)
                && differing & (1 << bucket(k)) != 0
                && has.get(k).is_none_or(|v| *v < s.version || *v > now_ms)
        });
        let (sent, bytes) = (
            missing.len(),
            missing.iter().map(|c| c.value.len()).sum::<usize>(),
        );
        for copy in missing {
            self.budget -= copy.value.len();
            values.push(ctx, holder, &copy);
        }
        if sent > 0 {
            ctx.stats.repair_values_pushed += sent as u64;
            ctx.stats.repair_bytes_pushed += bytes as u64;
            log::info!(
                "[{}] repair: {} values ({} bytes) to {} (successor {})",
                ctx.short(),
                sent,
                bytes,
                holder.addr,
                index + 1
            );
        }
    }

    /// Values in our range that the holder has and we lack, or has in a newer version (we joined,
    /// or took over from a node that missed a write): fetch them, or nobody would ever copy them
    /// back to the count.
    fn pull_newer(
        &mut self,
        ctx: &mut Ctx,
        storage: &Storage,
        holder: Peer,
        pred: Id,
        keys: &[(Key, u64)],
    ) {
        let lacking: Vec<Key> = keys
            .iter()
            .filter(|(k, version)| {
                // A newer version is pulled only once it is not in the future: we give the versions
                // of our range, and one ahead of our clock is a forgery (or a clock far off).
                in_half_open(k, &pred, &ctx.ring.me.id)
                    && storage
                        .get(k, ctx.now)
                        .is_none_or(|s| s.version < *version && *version <= ctx.wall_ms())
            })
            .take(PULLS_PER_REPLY_MAX)
            .map(|(k, _)| *k)
            .collect();
        for key in lacking {
            let msg = PeerMsg::StorageGet { key };
            // A full table drops the pull: the next round asks again.
            let _ = self.requests.send(ctx, holder.addr, msg, Rpc::Pull { key });
        }
    }
}

/// Per bucket, the digest and count of the keys in `(from, to]` that holder `index` should keep.
fn summary(storage: &Storage, (from, to): (Id, Id), index: usize, now: Time) -> Vec<(u64, u32)> {
    let mut buckets = vec![(0u64, 0u32); SYNC_BUCKETS];
    for (k, s) in storage
        .range(from, to, now)
        .filter(|(_, s)| held_at(index, s))
    {
        let b = &mut buckets[bucket(&k)];
        b.0 ^= fingerprint(&k, &s);
        b.1 += 1;
    }
    buckets
}

/// A pulled value arrived: keep it as the responsible node (unless ours is newer after all); the
/// next round copies it on.
fn pulled(ctx: &mut Ctx, values: &mut Values, key: Key, msg: PeerMsg) {
    if let PeerMsg::StorageGetSuccess {
        ttl_ms,
        replication,
        version,
        key: k,
        value,
    } = msg
        && k == key
    {
        let expires = ctx.now + (ttl_ms as u64).min(ctx.cfg.ttl_max_s as u64 * 1000);
        let meta = (expires, replication.max(1), version);
        if values.store_copy(ctx, key, &value, meta) == Ok(true) {
            ctx.stats.repair_values_pulled += 1;
        }
    }
}
