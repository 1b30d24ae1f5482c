//! Several nodes on one thread, for testnets and benches that run many nodes in one process: the
//! nodes' sockets all go in one poll (each node's tokens offset by its own base), one wait serves
//! them all, and each node whose sockets spoke or whose timer is due takes its turn. With a thread
//! per node, a 16-node ring on a 2-core machine spends most of its time switching threads.
//! Production runs one node per process.

use super::{EVENTS_PER_TURN, Reactor, RunningNode};
use crate::config::Config;
use mio::{Events, Poll, Token, Waker};
use std::io;
use std::sync::{Arc, mpsc};
use std::time::Instant;

/// Tokens per node: more than the connections (P2P and API) a node on a shared thread may have.
const TOKENS_PER_NODE: usize = 1 << 24;
const HUB_WAKER: Token = Token(usize::MAX);

/// Nodes bound to one poll, to be run on one thread.
pub struct Hub {
    poll: Poll,
    waker: Arc<Waker>,
    reactors: Vec<Reactor>,
}

impl Hub {
    pub fn new() -> io::Result<Hub> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), HUB_WAKER)?);
        Ok(Hub {
            poll,
            waker,
            reactors: Vec::new(),
        })
    }

    /// Binds one more node on this hub; returns its P2P address.
    pub fn bind(&mut self, cfg: &Config, seed: u64) -> io::Result<std::net::SocketAddr> {
        if cfg.reactor.connections_max + cfg.reactor.api_connections_max >= TOKENS_PER_NODE - 8 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "connections_max + api_connections_max too large for a shared thread",
            ));
        }
        let base = self.reactors.len() * TOKENS_PER_NODE;
        let reactor = Reactor::bind_on(cfg, seed, self.poll.registry(), base, self.waker.clone())?;
        let addr = reactor.p2p_addr();
        self.reactors.push(reactor);
        Ok(addr)
    }

    /// Runs the bound nodes on one new thread.
    pub fn spawn(self) -> io::Result<Vec<RunningNode>> {
        let mut nodes = Vec::with_capacity(self.reactors.len());
        let mut live = Vec::with_capacity(self.reactors.len());
        for reactor in self.reactors {
            let (exited, exit) = mpsc::channel();
            nodes.push(RunningNode::shared(&reactor, exit));
            live.push(Some((reactor, exited)));
        }
        let name = format!("nodes-{}", nodes.first().map_or(0, |n| n.p2p.port()));
        let poll = self.poll;
        std::thread::Builder::new().name(name).spawn(move || {
            let result = run(poll, live);
            if let Err(e) = &result {
                log::error!("a thread of shared nodes stopped: {e}");
            }
            result
        })?;
        Ok(nodes)
    }
}

type Slot = Option<(Reactor, mpsc::Sender<()>)>;

/// Until every node has stopped: one wait for all sockets, the events handed to their nodes, then a
/// turn's end (timers, flush) for each node that had events or a timer due. A stopped node is
/// dropped (its sockets close) and says so on its channel.
fn run(mut poll: Poll, mut live: Vec<Slot>) -> io::Result<()> {
    let mut events = Events::with_capacity(EVENTS_PER_TURN);
    let mut touched = vec![false; live.len()];
    loop {
        for slot in live.iter_mut() {
            if slot.as_mut().is_some_and(|(r, _)| !r.keep_running()) {
                let (reactor, exited) = slot.take().expect("live");
                drop(reactor);
                let _ = exited.send(());
            }
        }
        if live.iter().all(Option::is_none) {
            return Ok(());
        }
        let wake = live
            .iter()
            .flatten()
            .filter_map(|(r, _)| r.next_wake_instant())
            .min();
        let wait = wake.map(|t| t.saturating_duration_since(Instant::now()));
        if let Err(e) = poll.poll(&mut events, wait)
            && e.kind() != io::ErrorKind::Interrupted
        {
            return Err(e);
        }
        for event in &events {
            let token = event.token();
            if token == HUB_WAKER {
                continue;
            }
            let i = token.0 / TOKENS_PER_NODE;
            if let Some((reactor, _)) = live[i].as_mut() {
                reactor.on_event(token.0, event);
                touched[i] = true;
            }
        }
        let now = Instant::now();
        for (i, slot) in live.iter_mut().enumerate() {
            let Some((reactor, _)) = slot else { continue };
            let due = reactor.next_wake_instant().is_some_and(|t| t <= now);
            if std::mem::take(&mut touched[i]) || due {
                reactor.after_events();
            }
        }
    }
}
