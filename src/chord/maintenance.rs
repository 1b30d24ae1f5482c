//! Ring maintenance as Zave corrected it (../shared/CHORD.md): join through a bootstrap peer,
//! stabilize (and its second step), notify/rectify, fix fingers, check predecessor.
//! Every new successor or predecessor has answered us (or spoken to us) before it is adopted.

use super::{Node, Pending, Periodic, Purpose, RpcKind};
use crate::id::{Id, in_half_open, in_open};
use crate::wire::p2p::{Peer, PeerMsg};
use std::net::SocketAddr;

impl Node {
    /// Join: look up our own id through a bootstrap peer; the responsible node answers with itself
    /// and its successors, which become our successor list (Zave's join, in one recursive lookup).
    /// Also re-joins a node that lost every successor (a ring of one that used to be more).
    pub(super) fn join(&mut self) {
        let alone = self.joined && self.ring.succs().is_empty();
        if (self.joined && !alone) || self.contacts.is_empty() {
            return;
        }
        let via = self.contacts[self.bootstrap_next % self.contacts.len()];
        self.bootstrap_next += 1;
        log::debug!("[{}] joining through {}", self.short(), via);
        let me = self.ring.me;
        let msg = PeerMsg::PeerFind {
            target: me.id,
            hops: 0,
            last_hop: false,
            reply_to: me.addr,
        };
        let what = Pending::Lookup {
            target: me.id,
            purpose: Purpose::Join,
        };
        self.request(via, msg, what, self.cfg.request_timeout_ms);
    }

    pub(super) fn joined_via(&mut self, nodes: Vec<Peer>) {
        if self.joined && !self.ring.succs().is_empty() {
            return;
        }
        self.ring.set_succs(nodes);
        if self.ring.succs().is_empty() {
            self.schedule(Periodic::Join);
            return;
        }
        self.joined = true;
        log::info!(
            "[{}] joined the ring; successor {}",
            self.short(),
            self.ring.successor().addr
        );
        self.stabilize();
    }

    /// Zave's stabilize: ask the first successor for its predecessor and successor list.
    pub(super) fn stabilize(&mut self) {
        if !self.joined {
            return;
        }
        if self.ring.succs().is_empty() {
            // Alone: a node that notified us is our successor too, once it answers.
            if let Some(p) = self.ring.pred {
                self.request(
                    p.addr,
                    PeerMsg::PredecessorGet,
                    rpc(p, RpcKind::Adopt { candidate: p }),
                    self.cfg.request_timeout_ms,
                );
            }
            return;
        }
        let s = self.ring.successor();
        self.request(
            s.addr,
            PeerMsg::PredecessorGet,
            rpc(s, RpcKind::Stabilize),
            self.cfg.request_timeout_ms,
        );
        // A node we know of that lies closer than our successor (while a ring forms): probe it too
        // rather than walking back one predecessor pointer per round trip.
        let closer = self.closest_after(&self.ring.me.id, s);
        if closer.id != s.id {
            self.on_successor_hint(closer);
        }
    }

    /// Answers to the maintenance requests.
    pub(super) fn maintenance_reply(&mut self, from: SocketAddr, kind: RpcKind, msg: PeerMsg) {
        if let PeerMsg::PredecessorReply { pred, succs } = &msg {
            for p in pred.iter().chain(succs) {
                self.cache.learn(*p);
            }
        }
        let PeerMsg::PredecessorReply { pred, succs } = msg else {
            if !matches!((&kind, &msg), (RpcKind::CheckPredecessor, PeerMsg::Pong)) {
                self.unexpected(from, msg, Pending::Rpc { peer: from, kind });
            }
            return;
        };
        match kind {
            RpcKind::Stabilize => {
                let s = self.ring.successor();
                if s.addr != from {
                    return; // the list changed meanwhile; the next round asks the new successor
                }
                self.ring.set_succs(std::iter::once(s).chain(succs));
                self.stabilize_step(s, pred);
            }
            RpcKind::StabilizeCandidate { candidate } | RpcKind::Adopt { candidate } => {
                // A closer successor may have answered meanwhile (hints race with stabilize).
                let me = self.ring.me.id;
                if let Some(s) = self.ring.succs().first()
                    && !in_open(&candidate.id, &me, &s.id)
                {
                    return;
                }
                // Only now that it answered does the candidate become our successor.
                let rest: Vec<Peer> = self.ring.succs().to_vec();
                self.ring
                    .set_succs(std::iter::once(candidate).chain(succs).chain(rest));
                self.stabilize_step(candidate, pred);
            }
            other => self.unexpected(
                from,
                PeerMsg::PredecessorReply { pred, succs },
                Pending::Rpc {
                    peer: from,
                    kind: other,
                },
            ),
        }
    }

    /// Stabilize's second step, repeated to a fixpoint within one round (as Zave's join walks to the
    /// best predecessor): while the successor's predecessor `pred` lies between us and it, ask that
    /// node, which becomes our successor once it answers. Ends by notifying the successor.
    fn stabilize_step(&mut self, succ: Peer, pred: Option<Peer>) {
        match pred {
            Some(p) if in_open(&p.id, &self.ring.me.id, &succ.id) => {
                let what = rpc(p, RpcKind::StabilizeCandidate { candidate: p });
                self.request(
                    p.addr,
                    PeerMsg::PredecessorGet,
                    what,
                    self.cfg.request_timeout_ms,
                );
            }
            _ => self.notify_successor(),
        }
    }

    /// Chord's notify, our PREDECESSOR SET: "I may be your predecessor".
    pub(super) fn notify_successor(&mut self) {
        if let Some(s) = self.ring.succs().first().copied() {
            self.send(s.addr, 0, PeerMsg::PredecessorSet { node: self.ring.me });
        }
    }

    /// Rectify: adopt the notifier when we have no predecessor or it lies between the old one and us.
    /// It just spoke to us, so it is alive. The values it is now responsible for are handed to it.
    /// Either way one side learns of a closer successor at once (SUCCESSOR HINT) rather than at its
    /// next stabilize round: concurrent joins then settle in round trips, not rounds.
    pub(super) fn on_notify(&mut self, node: Peer) {
        self.cache.learn(node);
        let me = self.ring.me.id;
        if node.id == me {
            return;
        }
        // While a ring forms the notifier may also lie just after us (its successor pointer
        // overshoots): then it is a closer successor too.
        self.on_successor_hint(node);
        let closer = match self.ring.pred {
            None => true,
            Some(p) => p.id != node.id && in_open(&node.id, &p.id, &me),
        };
        if !closer {
            // Our predecessor lies between the notifier and us: it, or a node we know closer still,
            // is the notifier's successor.
            if let Some(p) = self.ring.pred.filter(|p| p.id != node.id) {
                self.hint(node, p);
            }
            return;
        }
        let old = self.ring.pred;
        log::info!(
            "[{}] predecessor is now {} ({})",
            self.short(),
            node.id.short(),
            node.addr
        );
        self.ring.pred = Some(node);
        self.hand_off(old.map_or(me, |p| p.id), node);
        // The old predecessor's successor is the notifier now (or a node we know closer still).
        if let Some(p) = old {
            self.hint(p, node);
        }
    }

    /// Tells `to` of `live` (which just spoke to us) as its closer successor, and of a node from our
    /// cache closer still, if we know one (it may be gone: the live one is named too).
    fn hint(&mut self, to: Peer, live: Peer) {
        self.send(to.addr, 0, PeerMsg::SuccessorHint { node: live });
        let closer = self.closest_after(&to.id, live);
        if closer.id != live.id {
            self.send(to.addr, 0, PeerMsg::SuccessorHint { node: closer });
        }
    }

    /// The node we know that follows `id` most closely, if it comes before `bound`; else `bound`.
    /// While a ring forms, the node everyone notifies knows them all: one hint then suffices
    /// where walking predecessor pointers would take a round trip per node.
    fn closest_after(&self, id: &Id, bound: Peer) -> Peer {
        self.cache
            .first_after(id)
            .filter(|c| in_open(&c.id, id, &bound.id))
            .unwrap_or(bound)
    }

    /// SUCCESSOR HINT: probe the node when it would be a closer successor; it becomes one only once it
    /// answers (and stabilize's second step walks on from there, then notifies it).
    pub(super) fn on_successor_hint(&mut self, node: Peer) {
        let me = self.ring.me.id;
        let closer = match self.ring.succs().first() {
            Some(s) => in_open(&node.id, &me, &s.id),
            None => node.id != me,
        };
        if !self.joined || self.leaving || !closer {
            return;
        }
        self.cache.learn(node);
        let what = rpc(node, RpcKind::StabilizeCandidate { candidate: node });
        self.request(
            node.addr,
            PeerMsg::PredecessorGet,
            what,
            self.cfg.request_timeout_ms,
        );
    }

    /// Ping the predecessor; if it does not answer in time it is forgotten (request_failed).
    pub(super) fn check_predecessor(&mut self) {
        if let Some(p) = self.ring.pred {
            self.request(
                p.addr,
                PeerMsg::Ping,
                rpc(p, RpcKind::CheckPredecessor),
                self.cfg.request_timeout_ms,
            );
        }
    }

    /// Refresh the next finger that is not simply our successor: one lookup per round.
    pub(super) fn fix_fingers(&mut self) {
        if !self.joined || self.ring.succs().is_empty() {
            return;
        }
        let succ = self.ring.successor();
        let me = self.ring.me.id;
        let mut i = self.finger_next % super::ring::FINGERS;
        // Fingers whose start lies before our successor all point at it: no lookup needed.
        while i < super::ring::FINGERS && in_half_open(&me.add_pow2(i), &me, &succ.id) {
            self.ring.set_finger(i, succ);
            i += 1;
        }
        if i == super::ring::FINGERS {
            self.finger_next = 0;
            return;
        }
        self.finger_next = i;
        self.start_lookup(me.add_pow2(i), Purpose::Finger(i), 0);
    }

    /// A finger lookup answered: `owner` follows `me + 2^i`, and every later finger whose start lies
    /// before `owner` points at it too.
    pub(super) fn finger_found(&mut self, i: usize, owner: Peer) {
        let me = self.ring.me.id;
        let start = me.add_pow2(i);
        let mut j = i;
        while j < super::ring::FINGERS
            && in_half_open(&me.add_pow2(j), &me, &owner.id)
            && (j == i || in_half_open(&me.add_pow2(j), &start, &owner.id))
        {
            self.ring.set_finger(j, owner);
            j += 1;
        }
        self.finger_next = if j >= super::ring::FINGERS {
            0
        } else {
            j.max(i + 1)
        };
    }
}

fn rpc(p: Peer, kind: RpcKind) -> Pending {
    Pending::Rpc { peer: p.addr, kind }
}

#[cfg(test)]
mod tests {
    use super::super::{Node, Transmit, test_peer};
    use crate::config::Config;
    use crate::time::Time;
    use crate::wire::p2p::{Frame, PeerMsg};

    fn sent(node: &mut Node) -> Vec<Transmit> {
        std::iter::from_fn(|| node.poll_transmit()).collect()
    }

    #[test]
    fn a_hinted_node_that_never_answers_is_not_probed_again() {
        let (me, b, dead) = (test_peer(10), test_peer(100), test_peer(50));
        let mut cfg = Config::default().node;
        cfg.node_id = Some(me.id);
        let timeout = cfg.request_timeout_ms;
        let mut node = Node::new(cfg, me.addr, 1, Time(0));
        // B notifies the lone node: it becomes the predecessor and, once it answers, the successor.
        node.handle_peer_msg(
            b.addr,
            Frame::new(0, PeerMsg::PredecessorSet { node: b }),
            Time(1),
        );
        let probe = sent(&mut node)
            .into_iter()
            .find(|t| t.to == b.addr && t.frame.msg == PeerMsg::PredecessorGet)
            .expect("the notifier is probed as a successor");
        let reply = PeerMsg::PredecessorReply {
            pred: Some(me),
            succs: vec![],
        };
        node.handle_peer_msg(b.addr, Frame::new(probe.frame.request, reply), Time(2));
        assert_eq!(node.successors().first(), Some(&b));
        // A hint names a node between us and B that never answers.
        node.handle_peer_msg(
            b.addr,
            Frame::new(0, PeerMsg::SuccessorHint { node: dead }),
            Time(3),
        );
        let out = sent(&mut node);
        assert!(out.iter().any(|t| t.to == dead.addr), "{out:?}");
        node.handle_timeout(Time(3 + timeout));
        // Stabilize rounds from now on ask B (which, silent in this test, is dropped in the end), never
        // the dead node.
        let mut now = Time(3 + timeout);
        for _ in 0..20 {
            now = node.poll_timeout().expect("periodic timers").max(now);
            node.handle_timeout(now);
            assert!(sent(&mut node).iter().all(|t| t.to != dead.addr));
        }
    }
}
