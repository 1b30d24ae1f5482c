//! The values this node holds and the traffic that moves them: STORAGE GET and PUT from peers,
//! writes as the responsible node (stored, then copied along the successor list), the hand-off to a
//! new predecessor and to the successor at leave, and the acknowledged copies those send. Owns the
//! store, the arena values leave it through, and its copy requests. Calls no other part.

use super::admission::{self, Refusal, StoreBuckets};
use super::arena::ValueArena;
use super::context::{Ctx, Part, Requests};
use super::rebalance::StoreLoad;
use crate::balance;
use crate::id::{Id, Key, shared_by_the_host};
use crate::msg::{COPY_FLAG, FailureReason, NodeInfo, Peer, PeerMsg, SYNC_KEYS_MAX};
use crate::storage::{Storage, StoreError, Stored, Writer};
use crate::time::Time;
use crate::wire::api::VALUE_BYTES_MAX;
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::net::SocketAddr;

/// A stored value copied out of the store, on its way to another node.
pub(super) struct Outgoing {
    pub key: Key,
    pub value: Bytes,
    pub expires: Time,
    pub replication: u8,
    pub version: u64,
}

/// A STORAGE PUT as it arrived.
struct IncomingPut {
    ttl_ms: u32,
    replication: u8,
    version: u64,
    key: Key,
    value: Bytes,
}

/// An acknowledged copy: the answer's key and hash are checked.
struct Copy {
    key: Key,
    value_hash: Id,
}

pub(super) struct Values {
    storage: Storage,
    /// Where values leave the store for messages (no allocation per message).
    out: ValueArena,
    copies: Requests<Copy>,
    /// Stored bytes per second, per peer IP.
    buckets: StoreBuckets,
    /// The writer id of each peer IP whose writes we store (bounded by `WRITERS_MAX`).
    writer_ids: BTreeMap<IpAddr, u16>,
    /// Copies we no longer have to hold, dropped once due (see [`Values::doom_extra_copies`]).
    doomed: VecDeque<Doomed>,
}

/// A copy to drop at `at` if it is still the same version and still not ours to hold.
struct Doomed {
    at: Time,
    key: Key,
    version: u64,
}

/// Copies waiting to be dropped at once; more wait for a later repair round.
const DOOMED_MAX: usize = SYNC_KEYS_MAX;

/// A nearly full node invites a newcomer into its range only when at least 1/this of its bytes are
/// its own range's: copies of its predecessors' ranges do not leave when its own range is split.
/// (The owner of a hot range held with r copies sheds bytes only once r newcomers stand in it, each
/// invited to the middle of what it still holds: before the last its own share is 1/2^(r−1); 8
/// lets that happen for r up to 4.)
const PRIMARY_SHARE_MIN: usize = 8;

/// Peer IPs with a writer id (and a share) of their own.
const WRITERS_MAX: u16 = 4095;

impl Values {
    pub fn new(ctx: &Ctx) -> Values {
        Values {
            storage: Storage::new(ctx.cfg.storage_bytes_max),
            out: ValueArena::default(),
            copies: Requests::new(Part::Values, ctx.cfg.pending_requests_max),
            buckets: StoreBuckets::default(),
            writer_ids: BTreeMap::new(),
            doomed: VecDeque::new(),
        }
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub fn requests_len(&self) -> usize {
        self.copies.len()
    }

    /// True once every acknowledged copy has been answered (or timed out).
    pub fn copies_done(&self) -> bool {
        self.copies.len() == 0
    }

    /// Reclaims a slice of the expired values, and the doomed copies that are due.
    pub fn sweep(&mut self, ctx: &mut Ctx) {
        self.storage.sweep(ctx.now);
        if self.doomed.front().is_none_or(|d| d.at > ctx.now) {
            return;
        }
        let chain = ctx.ring.pred_chain(usize::from(ctx.cfg.replication_max));
        let me = ctx.ring.me.id;
        while let Some(d) = self.doomed.front().filter(|d| d.at <= ctx.now) {
            let (key, version) = (d.key, d.version);
            self.doomed.pop_front();
            let extra = self.storage.get(&key, ctx.now).is_some_and(|s| {
                s.version == version && past_the_holders(&chain.nodes, me, &key, &s)
            });
            if extra && self.storage.remove(&key) {
                ctx.stats.copies_dropped += 1;
            }
        }
    }

    /// When `sweep` next has work to do.
    pub fn next_sweep(&self) -> Option<Time> {
        let doomed = self.doomed.front().map(|d| d.at);
        match (self.storage.next_sweep(), doomed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Once per repair round, when our store is nearly full: the copies our predecessor chain
    /// shows we are past the holders of (left behind when nodes joined before us) are dropped a
    /// repair period later, unless they changed or became ours to hold by then (the chain is
    /// fresher, a dead node in it gone). Repair adds copies where they are missing; nothing else
    /// takes them away before their TTL.
    pub fn doom_extra_copies(&mut self, ctx: &Ctx) {
        if !self.doomed.is_empty() || self.fill_percent(ctx) < balance::FULL_PERCENT {
            return;
        }
        let chain = ctx.ring.pred_chain(usize::from(ctx.cfg.replication_max));
        let me = ctx.ring.me.id;
        let at = ctx.now + ctx.cfg.repair_interval_ms;
        let extra = (self.storage.range(me, me, ctx.now))
            .filter(|(k, s)| past_the_holders(&chain.nodes, me, k, s))
            .map(|(key, s)| Doomed {
                at,
                key,
                version: s.version,
            })
            .take(DOOMED_MAX);
        self.doomed.extend(extra);
    }

    /// The live value under `key`, copied out for a reply.
    pub fn read(&mut self, ctx: &Ctx, key: &Key) -> Option<Bytes> {
        self.read_versioned(ctx, key).map(|(_, value)| value)
    }

    /// The live value under `key` with its version.
    pub fn read_versioned(&mut self, ctx: &Ctx, key: &Key) -> Option<(u64, Bytes)> {
        let s = self.storage.get(key, ctx.now)?;
        Some((s.version, self.out.copy(s.value)))
    }

    /// STORAGE GET or PUT from a peer (the shell sends us no other message).
    pub fn on_request(&mut self, ctx: &mut Ctx, from: SocketAddr, request: u64, msg: PeerMsg) {
        match msg {
            PeerMsg::StorageGet { key } => self.on_storage_get(ctx, from, request, key),
            PeerMsg::StoragePut {
                ttl_ms,
                replication,
                version,
                key,
                value,
            } => {
                let put = IncomingPut {
                    ttl_ms,
                    replication,
                    version,
                    key,
                    value,
                };
                self.on_storage_put(ctx, from, request, put)
            }
            other => unreachable!("not a storage request: {other:?}"),
        }
    }

    /// STORAGE GET from a peer.
    fn on_storage_get(&mut self, ctx: &mut Ctx, from: SocketAddr, request: u64, key: Key) {
        let msg = match self.storage.get(&key, ctx.now) {
            Some(s) => PeerMsg::StorageGetSuccess {
                ttl_ms: ttl_ms(s.expires, ctx.now),
                replication: s.replication,
                version: s.version,
                key,
                value: self.out.copy(s.value),
            },
            None if not_responsible(ctx, &key) => PeerMsg::StorageFailure {
                key,
                reason: FailureReason::NotResponsible,
            },
            None => PeerMsg::StorageFailure {
                key,
                reason: FailureReason::NotFound,
            },
        };
        ctx.send(from, request, msg);
    }

    /// STORAGE PUT: a write to the responsible node (stored, then copied to the next successors),
    /// or a copy (`COPY_FLAG`: a replica, a repair or a hand-off, stored as it is unless we hold a
    /// newer version). Request id 0 asks for no answer.
    fn on_storage_put(&mut self, ctx: &mut Ctx, from: SocketAddr, request: u64, put: IncomingPut) {
        let key = put.key;
        let expires = ctx.now + (put.ttl_ms as u64).min(ctx.cfg.ttl_max_s as u64 * 1000);
        let copy = put.replication & COPY_FLAG != 0;
        // A peer's replication byte is a hint like a client's: clamped to our policy.
        let replication =
            (put.replication & !COPY_FLAG).clamp(ctx.cfg.replication_min, ctx.cfg.replication_max);
        if !copy && not_responsible(ctx, &key) {
            let reason = FailureReason::NotResponsible;
            return ctx.send(from, request, PeerMsg::StorageFailure { key, reason });
        }
        if let Some(why) = self.refusal(ctx, from, &put) {
            ctx.stats.puts_refused += 1;
            log::debug!(
                "[{}] STORAGE PUT of {} from {from} refused: {why:?}",
                ctx.short(),
                key.short()
            );
            if request != 0 {
                let reason = FailureReason::Refused;
                ctx.send(from, request, PeerMsg::StorageFailure { key, reason });
            }
            return;
        }
        let stored = if copy {
            self.store_copy(ctx, key, &put.value, (expires, replication, put.version))
                .map(|_| ())
        } else {
            let writer = self.writer_of(ctx, from);
            self.write(ctx, key, &put.value, (expires, replication), writer)
        };
        if request == 0 {
            return;
        }
        let msg = match stored {
            Ok(()) => PeerMsg::StoragePutSuccess {
                key,
                value_hash: Id::hash(&put.value),
            },
            Err(()) => PeerMsg::StorageFailure {
                key,
                reason: FailureReason::Refused,
            },
        };
        ctx.send(from, request, msg);
    }

    /// The writes a peer forwards count against its IP's share of the store (`storage_share_per_peer`).
    fn writer_of(&mut self, ctx: &Ctx, from: SocketAddr) -> Writer {
        if shared_by_the_host(from.ip()) {
            return Writer::ANY; // this host's own processes
        }
        let next = self.writer_ids.len() as u16 + 1;
        let id = match self.writer_ids.get(&from.ip()) {
            Some(id) => *id,
            None if next < WRITERS_MAX => {
                self.writer_ids.insert(from.ip(), next);
                next
            }
            None => WRITERS_MAX, // every later IP shares the last share
        };
        let bytes_max =
            (ctx.cfg.storage_bytes_max as f64 * ctx.cfg.storage_share_per_peer) as usize;
        Writer { id, bytes_max }
    }

    /// Why a STORAGE PUT from `from` may not be stored, if it may not.
    fn refusal(&mut self, ctx: &mut Ctx, from: SocketAddr, put: &IncomingPut) -> Option<Refusal> {
        let copy = put.replication & COPY_FLAG != 0;
        if put.value.len() > VALUE_BYTES_MAX {
            return Some(Refusal::TooLarge);
        }
        if copy && !admission::copy_welcome(ctx, from, &put.key) {
            return Some(Refusal::NotAHolder);
        }
        if copy && !admission::version_believable(ctx, put.version) {
            return Some(Refusal::FromTheFuture);
        }
        if !self.buckets.take(ctx, from, put.value.len()) {
            return Some(Refusal::TooFast);
        }
        None
    }

    /// Stores a copy as it is (`meta`: expiry, replication, version); `Ok(true)` when it was newer
    /// than what we held. A version from the future is refused (it would pin the value).
    pub fn store_copy(
        &mut self,
        ctx: &Ctx,
        key: Key,
        value: &Bytes,
        (expires, replication, version): (Time, u8, u64),
    ) -> Result<bool, ()> {
        if !admission::version_believable(ctx, version) || value.len() > VALUE_BYTES_MAX {
            return Err(());
        }
        // A held version still ahead of our clock gives way to one that is not: honest versions
        // are the writer's clock, so the one from the future is a forgery inside the allowed skew
        // (or a clock far off) and must not outlive the honest writes after it.
        let now_ms = ctx.wall_ms();
        if version <= now_ms
            && self
                .storage
                .get(&key, ctx.now)
                .is_some_and(|s| s.version > now_ms)
        {
            self.storage.remove(&key);
        }
        self.storage
            .put(key, value, expires, replication, version, ctx.now)
            .map_err(|e| refused(ctx, key, value, e))
    }

    /// Stores a write as the responsible node and copies it to the next `replication - 1`
    /// successors. The write gets a version past any held for the key (the wall clock, normally).
    /// The copies go unanswered (request id 0): two messages less per PUT, and repair restores a
    /// copy that did not arrive.
    pub fn write(
        &mut self,
        ctx: &mut Ctx,
        key: Key,
        value: &Bytes,
        (expires, replication): (Time, u8),
        writer: Writer,
    ) -> Result<(), ()> {
        let version = self.storage.next_version(&key, ctx.wall_ms());
        let meta = (expires, replication, version);
        if let Err(e) = self.storage.put_as(key, value, meta, ctx.now, writer) {
            refused(ctx, key, value, e);
            return Err(());
        }
        let copy = Outgoing {
            key,
            value: value.clone(),
            expires,
            replication,
            version,
        };
        let copies = (replication as usize).saturating_sub(1);
        for i in 0..copies.min(ctx.ring.succs().len()) {
            let to = ctx.ring.succs()[i];
            ctx.send(to.addr, 0, storage_put(ctx, &copy));
        }
        Ok(())
    }

    /// Sends one value to `to` as a copy whose answer is checked, while there is room to track it
    /// (hand-offs and repair: a leave waits for them).
    pub fn push(&mut self, ctx: &mut Ctx, to: Peer, copy: &Outgoing) {
        let msg = storage_put(ctx, copy);
        let what = Copy {
            key: copy.key,
            value_hash: Id::hash(&copy.value),
        };
        if self.copies.is_full() {
            ctx.send(to.addr, 0, msg);
        } else {
            let _ = self.copies.send(ctx, to.addr, msg, what); // not full: checked above
        }
    }

    /// A new predecessor took over the keys in `(from, new]`: give it copies (we keep ours as a
    /// replica).
    pub fn hand_off(&mut self, ctx: &mut Ctx, from: Id, new: Peer) {
        let moved = self.push_range(ctx, from, new.id, new);
        if moved > 0 {
            log::info!("[{}] handing {} values to {}", ctx.short(), moved, new.addr);
        }
    }

    /// We move to another place on the ring (rebalancing), our values handed on: what we hold
    /// belongs to other places now (our successor and the holders keep it).
    pub fn forget_all(&mut self, ctx: &Ctx) {
        let held = self.storage.len();
        self.storage = Storage::new(ctx.cfg.storage_bytes_max);
        self.writer_ids.clear();
        log::info!("[{}] moving: forgot {held} values", ctx.short());
    }

    /// We leave: our successor takes over the values we are responsible for.
    pub fn hand_over(&mut self, ctx: &mut Ctx, succ: Peer) {
        let me = ctx.ring.me.id;
        let from = ctx.ring.pred.map_or(me, |p| p.id);
        let moved = self.push_range(ctx, from, me, succ);
        log::info!(
            "[{}] leaving: handed {} values to {}",
            ctx.short(),
            moved,
            succ.addr
        );
    }

    /// Pushes a copy of every value with a key in `(from, to]` to `target`; returns how many.
    fn push_range(&mut self, ctx: &mut Ctx, from: Id, to: Id, target: Peer) -> usize {
        let copies = self.copy_out(ctx, (from, to), usize::MAX, |_, _| true);
        for copy in &copies {
            self.push(ctx, target, copy);
        }
        ctx.stats.values_handed_on += copies.len() as u64;
        copies.len()
    }

    /// The live values with a key in `range` (`(from, to]`) that `keep` selects, in ring order
    /// while their value bytes stay within `bytes_max`, copied out for sending.
    pub fn copy_out(
        &mut self,
        ctx: &Ctx,
        (from, to): (Id, Id),
        bytes_max: usize,
        keep: impl Fn(&Key, &Stored) -> bool,
    ) -> Vec<Outgoing> {
        let mut budget = bytes_max;
        self.storage
            .range(from, to, ctx.now)
            .filter(|(k, s)| keep(k, s))
            .map_while(|(k, s)| {
                budget = budget.checked_sub(s.value.len())?;
                Some((k, s))
            })
            .map(|(key, s)| Outgoing {
                key,
                value: self.out.copy(s.value),
                expires: s.expires,
                replication: s.replication,
                version: s.version,
            })
            .collect()
    }

    /// The answer to an acknowledged copy.
    pub fn on_reply(&mut self, ctx: &mut Ctx, from: SocketAddr, request: u64, msg: PeerMsg) {
        let Some(copy) = self.copies.take_answer(ctx, request, from) else {
            return;
        };
        match msg {
            PeerMsg::StoragePutSuccess { key, value_hash }
                if key == copy.key && value_hash == copy.value_hash => {}
            PeerMsg::StoragePutSuccess { .. } => log::warn!(
                "[{}] {} acknowledged {} with a wrong key or hash",
                ctx.short(),
                from,
                copy.key.short()
            ),
            PeerMsg::StorageFailure { .. } => log::warn!(
                "[{}] {} refused a copy of {}",
                ctx.short(),
                from,
                copy.key.short()
            ),
            other => log::warn!(
                "[{}] {} answered a copy with type {}",
                ctx.short(),
                from,
                other.msg_type()
            ),
        }
    }

    /// A copy's deadline passed: repair restores it later.
    pub fn on_timeout(&mut self, ctx: &mut Ctx, request: u64) {
        self.copies.take(ctx, request);
    }

    pub fn on_unreachable(&mut self, ctx: &mut Ctx, peer: SocketAddr) {
        self.copies.take_to(ctx, peer);
    }

    /// Stored bytes in percent of the quota.
    pub fn fill_percent(&self, ctx: &Ctx) -> u8 {
        let used = self.storage.bytes_used().saturating_mul(100);
        (used / ctx.cfg.storage_bytes_max.max(1)).min(100) as u8
    }

    /// How full the store is for rebalancing; when near full, the middle of the bytes we hold as
    /// the responsible node (a walk of our range), if they are a fair share of what we store.
    pub fn load(&self, ctx: &Ctx) -> StoreLoad {
        let used = self.storage.bytes_used();
        let fill_percent = self.fill_percent(ctx);
        let middle = match ctx.ring.pred {
            Some(pred) if fill_percent >= balance::FULL_PERCENT => {
                let ours = || self.storage.range(pred.id, ctx.ring.me.id, ctx.now);
                let primary: usize = ours().map(|(_, s)| s.value.len()).sum();
                let mut below = 0;
                ours()
                    .find(|(_, s)| {
                        below += s.value.len();
                        below * 2 >= primary
                    })
                    .map(|(key, _)| key)
                    .filter(|_| primary * PRIMARY_SHARE_MIN >= used)
            }
            _ => None,
        };
        StoreLoad {
            fill_percent,
            middle,
        }
    }

    /// The operator view (INFO REPLY).
    pub fn info(&self, ctx: &Ctx) -> NodeInfo {
        let primary = match ctx.ring.pred {
            Some(p) => self.storage.range(p.id, ctx.ring.me.id, ctx.now).count(),
            None => self.storage.len(),
        };
        NodeInfo {
            node: ctx.ring.me,
            pred: ctx.ring.pred,
            succs: ctx.ring.succs().to_vec(),
            values_primary: primary as u32,
            values_replica: (self.storage.len() - primary) as u32,
            bytes_stored: self.storage.bytes_used() as u64,
            bytes_max: ctx.cfg.storage_bytes_max as u64,
            refusals: ctx.stats.puts_refused
                + ctx.stats.client_requests_refused
                + ctx.stats.driver_refusals,
        }
    }
}

/// A copy as a STORAGE PUT.
fn storage_put(ctx: &Ctx, copy: &Outgoing) -> PeerMsg {
    PeerMsg::StoragePut {
        ttl_ms: ttl_ms(copy.expires, ctx.now),
        replication: copy.replication | COPY_FLAG,
        version: copy.version,
        key: copy.key,
        value: copy.value.clone(),
    }
}

fn refused(ctx: &Ctx, key: Key, value: &Bytes, e: StoreError) {
    log::warn!(
        "[{}] refused to store {} ({} bytes): {:?}",
        ctx.short(),
        key.short(),
        value.len(),
        e
    );
}

/// Are we past the holders of a stored copy, as our predecessor `chain` (nearest first) shows?
/// Holders are the key's responsible node and the next `replication − 1`; the chain is contiguous
/// back from us, so the nodes it lists from the key on are at most those before us.
fn past_the_holders(chain: &[Peer], me: Id, key: &Key, s: &Stored) -> bool {
    let to_me = key.distance_to(&me);
    let before_us = (chain.iter())
        .take_while(|p| key.distance_to(&p.id) < to_me)
        .count();
    before_us >= usize::from(s.replication)
}

/// Our predecessor shows the key belongs to another node (without one we cannot tell, and accept).
fn not_responsible(ctx: &Ctx, key: &Key) -> bool {
    ctx.ring.pred.is_some() && !ctx.ring.owns(key)
}

pub(super) fn ttl_ms(expires: Time, now: Time) -> u32 {
    expires.ms_since(now).min(u32::MAX as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ring point whose top byte is `b`.
    fn id(b: u8) -> Id {
        let mut x = [0; 32];
        x[0] = b;
        Id(x)
    }

    fn peer(b: u8) -> Peer {
        Peer {
            id: id(b),
            addr: SocketAddr::from(([10, 0, 0, b], 1)),
        }
    }

    fn copy(replication: u8) -> Stored<'static> {
        Stored {
            value: b"v",
            expires: Time(1),
            replication,
            version: 1,
        }
    }

    #[test]
    fn a_copy_is_extra_only_when_the_chain_shows_enough_holders_before_us() {
        // We are 100; our chain goes back 90, 80, 70, 60. A key at 75 is owned by 80.
        let chain = [peer(90), peer(80), peer(70), peer(60)];
        let key = id(75);
        // Holders of replication 3: 80, 90, us. Of replication 2: 80, 90.
        assert!(!past_the_holders(&chain, id(100), &key, &copy(3)));
        assert!(past_the_holders(&chain, id(100), &key, &copy(2)));
        // A chain that stops short counts only what it shows: we keep the copy.
        assert!(!past_the_holders(&chain[..1], id(100), &key, &copy(2)));
        // A key in our own range is always ours.
        assert!(!past_the_holders(&chain, id(100), &id(95), &copy(1)));
        // Wrapping round zero: we are 5, the chain goes back 250, 240; a key at 245.
        let wrapped = [peer(250), peer(240), peer(230)];
        assert!(past_the_holders(&wrapped, id(5), &id(245), &copy(1)));
        assert!(!past_the_holders(&wrapped, id(5), &id(245), &copy(2)));
    }
}
