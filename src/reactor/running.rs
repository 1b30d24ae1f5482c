//! A node running on its own thread, or sharing one ([`super::hub`]): what tests, testnets and
//! benches hold. Dropping it stops the node.

use super::refusals::{Counters, Refusals};
use super::{Reactor, StopHandle};
use crate::config::Config;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, mpsc};

pub struct RunningNode {
    pub api: SocketAddr,
    pub p2p: SocketAddr,
    /// The id at start: a node without `id_slot` takes the slot it chooses when it joins (INFO
    /// and `voidphone-dht ring` show the id it has).
    pub id: crate::id::Id,
    stop: StopHandle,
    /// The reactor's refusal counters (it runs on another thread).
    refusals: Arc<Counters>,
    exit: Exit,
}

/// How to wait for a stopped node to be gone.
enum Exit {
    Thread(std::thread::JoinHandle<io::Result<()>>),
    /// The shared thread says so when it has dropped the node.
    Shared(mpsc::Receiver<()>),
    Gone,
}

impl RunningNode {
    /// Binds a node for `cfg` and runs it on a new thread.
    pub fn spawn(cfg: &Config, seed: u64) -> io::Result<RunningNode> {
        let reactor = Reactor::bind(cfg, seed)?;
        let name = format!("node-{}", reactor.p2p_addr().port());
        let mut node = RunningNode::new(&reactor, Exit::Gone);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || reactor.run())?;
        node.exit = Exit::Thread(thread);
        Ok(node)
    }

    /// A node run by a shared thread, which says on `exit` when it has dropped the node.
    pub(super) fn shared(reactor: &Reactor, exit: mpsc::Receiver<()>) -> RunningNode {
        RunningNode::new(reactor, Exit::Shared(exit))
    }

    fn new(reactor: &Reactor, exit: Exit) -> RunningNode {
        RunningNode {
            api: reactor.api_addr(),
            p2p: reactor.p2p_addr(),
            id: reactor.node().me().id,
            stop: reactor.stop_handle(),
            refusals: reactor.net.counters(),
            exit,
        }
    }

    /// What the node has refused so far (connections, dials, frames; see [`super::Refusal`]).
    pub fn refusals(&self) -> Refusals {
        self.refusals.snapshot()
    }

    /// Leaves the ring gracefully (values handed on) and waits until the node is gone.
    pub fn leave(mut self) {
        self.stop.leave();
        self.join();
    }

    /// Stops the node abruptly, like a crash, and waits until it is gone.
    pub fn kill(mut self) {
        self.stop.kill();
        self.join();
    }

    fn join(&mut self) {
        match std::mem::replace(&mut self.exit, Exit::Gone) {
            Exit::Thread(t) => {
                let _ = t.join();
            }
            // An error means the shared thread has ended: the node is gone too.
            Exit::Shared(rx) => {
                let _ = rx.recv();
            }
            Exit::Gone => {}
        }
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        self.stop.kill();
        self.join();
    }
}
