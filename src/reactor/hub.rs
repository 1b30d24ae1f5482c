//! Several nodes on one thread, for testnets and benches that run many nodes in one process: each
//! reactor keeps its own poll, and the thread waits on all their poll descriptors at once (an epoll
//! of epolls), giving a turn to each one that is ready or has a timer due. With a thread per node, a
//! 16-node ring on a 2-core machine spends most of its time switching threads. Production runs one
//! node per process.

use super::{EVENTS_PER_TURN, Reactor, RunningNode};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::io;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs the bound reactors on one new thread.
pub fn spawn_shared(reactors: Vec<Reactor>) -> io::Result<Vec<RunningNode>> {
    let mut nodes = Vec::with_capacity(reactors.len());
    let mut owned = Vec::with_capacity(reactors.len());
    for reactor in reactors {
        let (exited, exit) = mpsc::channel();
        nodes.push(RunningNode::shared(&reactor, exit));
        owned.push((reactor, exited));
    }
    let name = format!("nodes-{}", nodes.first().map_or(0, |n| n.p2p.port()));
    std::thread::Builder::new()
        .name(name)
        .spawn(move || run(owned))?;
    Ok(nodes)
}

/// Turns the reactors until every one has stopped; each stopped one is dropped (its sockets close)
/// and says so on its channel.
fn run(reactors: Vec<(Reactor, mpsc::Sender<()>)>) -> io::Result<()> {
    let mut poll = Poll::new()?;
    for (i, (r, _)) in reactors.iter().enumerate() {
        poll.registry()
            .register(&mut SourceFd(&r.poll_fd()), Token(i), Interest::READABLE)?;
    }
    let mut live: Vec<Option<(Reactor, mpsc::Sender<()>)>> =
        reactors.into_iter().map(Some).collect();
    let mut ready = vec![true; live.len()];
    let mut outer = Events::with_capacity(live.len().max(1));
    let mut inner = Events::with_capacity(EVENTS_PER_TURN);
    while live.iter().any(Option::is_some) {
        let now = Instant::now();
        for (i, slot) in live.iter_mut().enumerate() {
            let Some((reactor, _)) = slot else { continue };
            let due = reactor.next_wake_instant().is_some_and(|t| t <= now);
            if !(ready[i] || due) {
                continue;
            }
            ready[i] = false;
            // A turn that filled its event buffer may have left events behind (edge-triggered).
            let mut alive = true;
            while alive {
                alive = reactor.turn(&mut inner, Some(Duration::ZERO))?;
                if inner.iter().count() < inner.capacity() {
                    break;
                }
            }
            if !alive {
                let (reactor, exited) = slot.take().expect("live");
                let _ = poll
                    .registry()
                    .deregister(&mut SourceFd(&reactor.poll_fd()));
                drop(reactor);
                let _ = exited.send(());
            }
        }
        let wake = live
            .iter()
            .flatten()
            .filter_map(|(r, _)| r.next_wake_instant())
            .min();
        let wait = wake.map(|t| t.saturating_duration_since(Instant::now()));
        if let Err(e) = poll.poll(&mut outer, wait)
            && e.kind() != io::ErrorKind::Interrupted
        {
            return Err(e);
        }
        for event in &outer {
            ready[event.token().0] = true;
        }
    }
    Ok(())
}
