//! Many hosts (issue 12): every node the built binary in a network namespace of its own, on its
//! own IPv4 and/or IPv6 address, the namespaces joined by a Linux bridge (tests/hosts/netns.rs).
//! Skipped, with the reason printed, without root or `ip netns`. Scenarios run one at a time
//! (the lab's lock), and each prints its measured figures (`--nocapture` shows them).

#[path = "hosts/netns.rs"]
mod netns;

use netns::{Family, Lab, poll_until};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use voidphone_dht::id::{Id, Key};

/// One value the test wrote and expects back.
#[derive(Clone)]
struct Val {
    key: Key,
    value: Vec<u8>,
}

/// `n` values of `bytes` bytes each (at least their label), labelled by scenario and `tag`.
fn values(scenario: u8, tag: &str, n: usize, bytes: usize) -> Vec<Val> {
    (0..n)
        .map(|i| {
            let label = format!("s{scenario}-{tag}-{i}");
            let mut value = label.clone().into_bytes();
            value.resize(bytes.max(value.len()), b'.');
            Val {
                key: Id::hash(label.as_bytes()),
                value,
            }
        })
        .collect()
}

/// What GETs from a set of hosts returned.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Reads {
    right: usize,
    wrong: usize,
    missing: usize,
}

impl Reads {
    fn all_right(&self) -> bool {
        self.wrong == 0 && self.missing == 0
    }
}

/// Starts a node on every host of `which` (the first starts the ring, the others join through
/// it), and waits until every node's predecessor and successor are what the sorted ids say:
/// how long that took.
fn form_ring(lab: &mut Lab, which: &[usize], extra: &str, within: Duration) -> Duration {
    let started = Instant::now();
    lab.start(which[0], &[], extra);
    let boot = [lab.p2p(which[0])];
    for &i in &which[1..] {
        lab.start(i, &boot, extra);
    }
    poll_until(within, || ring_consistent(lab, which)).unwrap_or_else(|| {
        panic!(
            "no consistent ring of {} within {within:?}: {}",
            which.len(),
            ring_view(lab, which)
        )
    });
    started.elapsed()
}

/// Does every node of `which` have the predecessor and successor the sorted ids give it?
fn ring_consistent(lab: &Lab, which: &[usize]) -> bool {
    let mut ids: Vec<Id> = which.iter().map(|&i| lab.node(i).id).collect();
    ids.sort();
    which.iter().all(|&i| {
        let Ok(info) = lab.info(i) else { return false };
        let at = ids
            .binary_search(&info.node.id)
            .expect("a node of the ring");
        let next = ids[(at + 1) % ids.len()];
        let prev = ids[(at + ids.len() - 1) % ids.len()];
        info.succs.first().map(|s| s.id) == Some(next) && info.pred.map(|p| p.id) == Some(prev)
    })
}

/// Each node's id, predecessor and successor, for failure messages.
fn ring_view(lab: &Lab, which: &[usize]) -> String {
    which
        .iter()
        .map(|&i| match lab.info(i) {
            Ok(info) => format!(
                "\n  h{i} {:?} pred {:?} succ {:?}",
                info.node.id,
                info.pred.map(|p| p.id),
                info.succs.first().map(|s| s.id)
            ),
            Err(e) => format!("\n  h{i}: {e}"),
        })
        .collect()
}

/// PUTs value `j` through host `which[j % len]`, replication 3, TTL 1 h; each connection ends
/// with a GET of its last key, so every PUT has been taken when this returns.
fn put_spread(lab: &Lab, which: &[usize], vals: &[Val]) {
    for (slot, &i) in which.iter().enumerate() {
        let mine: Vec<&Val> = vals.iter().skip(slot).step_by(which.len()).collect();
        let Some(last) = mine.last() else { continue };
        let mut c = lab.client(i);
        for v in &mine {
            c.put(v.key, &v.value, 3600, 3).expect("PUT");
        }
        c.get(last.key).expect("GET after the PUTs");
    }
}

/// GETs every value from every host of `which` (a thread per host).
fn read_all(lab: &Lab, which: &[usize], vals: &[Val]) -> Reads {
    let per_host: Vec<Reads> = std::thread::scope(|s| {
        let threads: Vec<_> = which
            .iter()
            .map(|&i| {
                s.spawn(move || {
                    let mut c = lab.client(i);
                    let mut r = Reads::default();
                    for v in vals {
                        match c.get(v.key).expect("GET") {
                            Some(got) if got[..] == v.value[..] => r.right += 1,
                            Some(_) => r.wrong += 1,
                            None => r.missing += 1,
                        }
                    }
                    r
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    per_host.iter().fold(Reads::default(), |a, r| Reads {
        right: a.right + r.right,
        wrong: a.wrong + r.wrong,
        missing: a.missing + r.missing,
    })
}

/// Reads until every value is right from every host or `within` has passed: the first pass, the
/// last pass, and how long it took to be all right.
fn read_until_right(
    lab: &Lab,
    which: &[usize],
    vals: &[Val],
    within: Duration,
) -> (Reads, Reads, Option<Duration>) {
    let started = Instant::now();
    let first = read_all(lab, which, vals);
    let mut last = first;
    if first.all_right() {
        return (first, last, Some(started.elapsed()));
    }
    let took = poll_until(within, || {
        last = read_all(lab, which, vals);
        last.all_right()
    });
    (first, last, took)
}

/// `voidphone-dht ring` from every host of `which` must list exactly the P2P addresses of
/// `expect`'s nodes.
fn assert_ring_cli(lab: &Lab, which: &[usize], expect: &[usize]) {
    let want: BTreeSet<SocketAddr> = expect.iter().map(|&i| lab.p2p(i)).collect();
    for &i in which {
        let (addrs, count) = lab.ring_cli(i);
        let got: BTreeSet<SocketAddr> = addrs.into_iter().collect();
        assert_eq!(
            (count, &got),
            (want.len(), &want),
            "ring walk from host {i}"
        );
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Scenario 1: 16 hosts on IPv4 join one ring; 300 values PUT through every host are read back
/// right from every host; `voidphone-dht ring` from every host lists all 16.
#[test]
fn ipv4_sixteen_hosts() {
    let Some(mut lab) = Lab::new(1, 1) else {
        return;
    };
    let hosts: Vec<usize> = (0..16).map(|_| lab.add_host(Family::V4)).collect();
    let join = form_ring(&mut lab, &hosts, "", Duration::from_secs(30));
    let vals = values(1, "v", 300, 100);
    let put_started = Instant::now();
    put_spread(&lab, &hosts, &vals);
    let put_took = put_started.elapsed();
    let (first, last, took) = read_until_right(&lab, &hosts, &vals, Duration::from_secs(20));
    eprintln!(
        "[hosts s1] IPv4, 16 hosts: ring consistent {} after the first start; 300 PUTs {}; \
         first read pass {first:?}; all 4800 reads right after {took:?}",
        secs(join),
        secs(put_took)
    );
    assert!(took.is_some(), "reads never all right: last pass {last:?}");
    assert_ring_cli(&lab, &hosts, &hosts);
    lab.finish();
}
