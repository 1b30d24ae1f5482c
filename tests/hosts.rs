//! Many hosts (issue 12): every node the built binary in a network namespace of its own, on its
//! own IPv4 and/or IPv6 address, the namespaces joined by a Linux bridge (tests/hosts/netns.rs).
//! Skipped, with the reason printed, without root or `ip netns`. Scenarios run one at a time
//! (the lab's lock), and each prints its measured figures (`--nocapture` shows them).

#[path = "hosts/netns.rs"]
mod netns;

use netns::{Family, Lab, poll_until};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use voidphone_dht::id::{Id, Key};
use voidphone_dht::wire::api::{ApiReply, ApiRequest};

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
    /// The longest a GET waited for its answer.
    slowest: Duration,
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

/// GETs every value from every host of `which` (a thread per host, the GETs pipelined).
fn read_all(lab: &Lab, which: &[usize], vals: &[Val]) -> Reads {
    let per_host: Vec<Reads> = std::thread::scope(|s| {
        let threads: Vec<_> = which
            .iter()
            .map(|&i| s.spawn(move || read_from(lab, i, vals)))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    per_host.iter().fold(Reads::default(), |a, r| Reads {
        right: a.right + r.right,
        wrong: a.wrong + r.wrong,
        missing: a.missing + r.missing,
        slowest: a.slowest.max(r.slowest),
    })
}

/// GETs every value through host `i`, 256 in flight at a time (a GET that misses takes up to
/// `lookup_timeout_ms`; one after the other they would take minutes).
fn read_from(lab: &Lab, i: usize, vals: &[Val]) -> Reads {
    let mut c = lab.client(i);
    let mut r = Reads::default();
    for chunk in vals.chunks(256) {
        let want: HashMap<Key, &[u8]> = chunk.iter().map(|v| (v.key, &v.value[..])).collect();
        let sent = Instant::now();
        for v in chunk {
            c.send(&ApiRequest::Get { key: v.key }).expect("GET");
        }
        for _ in chunk {
            let reply = c.recv().unwrap_or_else(|e| panic!("host {i}: reply: {e}"));
            r.slowest = r.slowest.max(sent.elapsed());
            match reply {
                ApiReply::Success { key, value } if want.get(&key) == Some(&&value[..]) => {
                    r.right += 1
                }
                ApiReply::Success { .. } => r.wrong += 1,
                ApiReply::Failure { .. } => r.missing += 1,
            }
        }
    }
    r
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

/// Scenario 2: the same as scenario 1 with IPv6 only (the namespaces have no IPv4 address but
/// `lo`'s; the API is on ::1).
#[test]
fn ipv6_sixteen_hosts() {
    let Some(mut lab) = Lab::new(2, 1) else {
        return;
    };
    let hosts: Vec<usize> = (0..16).map(|_| lab.add_host(Family::V6)).collect();
    let join = form_ring(&mut lab, &hosts, "", Duration::from_secs(30));
    let vals = values(2, "v", 300, 100);
    put_spread(&lab, &hosts, &vals);
    let (first, last, took) = read_until_right(&lab, &hosts, &vals, Duration::from_secs(20));
    eprintln!(
        "[hosts s2] IPv6 only, 16 hosts: ring consistent {} after the first start; first read \
         pass {first:?}; all 4800 reads right after {took:?}",
        secs(join)
    );
    assert!(took.is_some(), "reads never all right: last pass {last:?}");
    for h in &lab.hosts {
        assert!(h.v4.is_none() && h.speaks().is_ipv6());
    }
    assert_ring_cli(&lab, &hosts, &hosts);
    lab.finish();
}

/// Scenario 2, mixed families. A node advertises, listens on and dials from one address, and peers
/// believe a HELLO only from the address it advertises; so a ring is of one family, and a
/// dual-stack host is a member of the ring of the family it speaks, bridging nothing. Checked:
/// an IPv4 ring of dual-stack and IPv4-only hosts and an IPv6 ring of IPv6-only and dual-stack
/// hosts form side by side on one bridge; an IPv6-only node bootstrapping through a dual-stack
/// node's IPv6 address finds nothing listening and stays alone; a dual-stack node speaking IPv4
/// that bootstraps through an IPv6 node is not believed (its HELLO comes from its IPv6 address)
/// and stays alone; values of one ring are not found from the other. And the /64 rule: a second
/// host in an IPv6 node's /64 on the same `id_slot` gets the same id, and the ring keeps the first
/// (the second believes it joined: it has a successor, but no node points to it and it has no
/// predecessor; nothing warns its operator); on another `id_slot` it joins.
#[test]
fn mixed_families() {
    let Some(mut lab) = Lab::new(6, 1) else {
        return;
    };
    let dual4 = Family::Dual { speaks_v6: false };
    let dual6 = Family::Dual { speaks_v6: true };
    let families = [
        dual4,
        dual4,
        Family::V4,
        Family::V4,
        Family::V6,
        Family::V6,
        dual6,
    ];
    for f in families {
        lab.add_host(f);
    }
    let (ring4, ring6) = ([0, 1, 2, 3], [4, 5, 6]);
    let j4 = form_ring(&mut lab, &ring4, "", Duration::from_secs(30));
    let j6 = form_ring(&mut lab, &ring6, "", Duration::from_secs(30));

    // Across families: an IPv6-only node through a dual-stack (IPv4-speaking) node's IPv6
    // address, and a dual-stack IPv4-speaking node through an IPv6 node.
    let v6_only = lab.add_host(Family::V6);
    let cross4 = lab.add_host(dual4);
    let dual_v6_addr = SocketAddr::new(lab.hosts[0].v6.unwrap().into(), netns::P2P_PORT);
    lab.start(v6_only, &[dual_v6_addr], "");
    lab.start(cross4, &[lab.p2p(4)], "");
    // The same /64 as host 4: on slot 0 (host 4's id), and on slot 1.
    let same_slot = lab.add_host_sharing_64(4);
    let other_slot = lab.add_host_sharing_64(4);
    lab.start(same_slot, &[lab.p2p(5)], "");
    lab.start(other_slot, &[lab.p2p(5)], "id_slot = 1\n");
    assert_eq!(
        lab.node(same_slot).id,
        lab.node(4).id,
        "one /64, one slot, one id"
    );
    let stuck = [v6_only, cross4];
    let seen = poll_until(Duration::from_secs(20), || {
        stuck.iter().all(|&i| lab.log_has(i, "cannot join"))
    });
    assert!(
        seen.is_some(),
        "nodes across families should report that they cannot join"
    );
    assert!(
        lab.log_has(4, "not believed")
            || lab.log_has(5, "not believed")
            || lab.log_has(6, "not believed"),
        "the IPv6 ring should refuse the IPv4-speaking node's HELLO from its IPv6 address"
    );
    let ring6_now = [4, 5, 6, other_slot];
    poll_until(Duration::from_secs(20), || {
        ring_consistent(&lab, &ring6_now)
    })
    .expect("the second host of a /64 on its own slot joins");
    for &i in &stuck {
        let walk = lab.walk(i);
        assert_eq!(walk.len(), 1, "host {i} should be alone, walk: {walk:?}");
    }
    assert_ring_cli(&lab, &ring4, &ring4);
    // The ring of the /64 keeps host 4 in the place both hosts claim.
    assert_ring_cli(&lab, &ring6_now, &ring6_now);
    let dup = lab.info(same_slot).expect("INFO");
    eprintln!(
        "[hosts s2 mixed] the second host on one /64 and slot: pred {:?}, succs {:?}",
        dup.pred.map(|p| p.addr),
        dup.succs.iter().map(|p| p.addr).collect::<Vec<_>>()
    );

    // Values stay in their ring.
    let vals4 = values(6, "v4", 60, 100);
    let vals6 = values(6, "v6", 60, 100);
    put_spread(&lab, &ring4, &vals4);
    put_spread(&lab, &ring6, &vals6);
    let (_, in4, t4) = read_until_right(&lab, &ring4, &vals4, Duration::from_secs(10));
    let (_, in6, t6) = read_until_right(&lab, &ring6_now, &vals6, Duration::from_secs(10));
    assert!(t4.is_some() && t6.is_some(), "{in4:?} {in6:?}");
    let across = read_all(&lab, &ring6_now, &vals4[..10]);
    assert_eq!(
        (across.right, across.wrong),
        (0, 0),
        "IPv4 ring's values from the IPv6 ring"
    );
    eprintln!(
        "[hosts s2 mixed] IPv4 ring of 4 (2 dual-stack) consistent {}, IPv6 ring of 3 (1 \
         dual-stack) {}; both cross-family bootstraps: alone ('cannot \
         join') after {seen:?}; same /64 on id_slot 1 joined; values found only in their ring",
        secs(j4),
        secs(j6)
    );
    lab.finish();
}

/// Does any node of `which` name `addr` as its predecessor or in its successor list?
fn anyone_names(lab: &Lab, which: &[usize], addr: SocketAddr) -> bool {
    which.iter().any(|&i| match lab.info(i) {
        Ok(info) => {
            info.pred.is_some_and(|p| p.addr == addr) || info.succs.iter().any(|s| s.addr == addr)
        }
        Err(_) => true, // cannot tell yet
    })
}

/// Waits until the nodes of `which` together hold every value `copies` times (primary plus
/// replicas): copies are sent without waiting for an answer.
fn wait_for_copies(lab: &Lab, which: &[usize], values: usize, copies: usize, within: Duration) {
    let mut held = (0, 0);
    let done = poll_until(within, || {
        held = which.iter().fold((0, 0), |(p, r), &i| match lab.info(i) {
            Ok(info) => (
                p + info.values_primary as usize,
                r + info.values_replica as usize,
            ),
            Err(_) => (p, r),
        });
        held == (values, values * (copies - 1))
    });
    assert!(
        done.is_some(),
        "copies held (primary, replica) {held:?}, want ({values}, {})",
        values * (copies - 1)
    );
}

/// Scenario 4: a host restarts with a new address (a crash, SIGKILL, then the same machine back
/// on another IP, as after a DHCP change). Its values are served by the replicas meanwhile; the
/// old identity leaves every node's predecessor and successor list within a bound; the new one
/// joins; every value is found from every host.
#[test]
fn restart_with_new_address() {
    restart_with_new_address_on(4, false);
}

/// Scenario 4, routing caches: after the restart no GET pays a request timeout for a route
/// through the old identity. Fails today: a routing-cache guess that times out is not forgotten
/// (only maintenance forgets failed peers), so on the hosts whose cache names the dead node for
/// its old range, every GET of those keys waits one `request_timeout_ms` first, indefinitely
/// (measured: 11 of 300 keys on 5 of 15 hosts, 500 ms each, still after 60 s).
#[test]
#[ignore = "routing caches keep a dead node: src/chord/clients.rs does not forget a timed-out guess"]
fn restart_with_new_address_leaves_no_stale_route() {
    restart_with_new_address_on(7, true);
}

fn restart_with_new_address_on(scenario: u8, check_routes: bool) {
    let Some(mut lab) = Lab::new(scenario, 1) else {
        return;
    };
    let hosts: Vec<usize> = (0..16).map(|_| lab.add_host(Family::V4)).collect();
    form_ring(&mut lab, &hosts, "", Duration::from_secs(30));
    let vals = values(scenario, "v", 300, 100);
    put_spread(&lab, &hosts, &vals);
    wait_for_copies(&lab, &hosts, vals.len(), 3, Duration::from_secs(20));
    let before = read_all(&lab, &hosts, &vals);

    let moved = 5;
    let others: Vec<usize> = hosts.iter().copied().filter(|&i| i != moved).collect();
    let (old_addr, old_id) = (lab.p2p(moved), lab.node(moved).id);
    let killed = Instant::now();
    lab.kill(moved);
    lab.readdress_v4(moved, std::net::Ipv4Addr::new(10, 77, scenario, 106));
    lab.start(moved, &[lab.p2p(0)], "");
    let restarted = killed.elapsed();
    assert_ne!(lab.node(moved).id, old_id, "a new address gives a new id");

    // Until the old identity is gone from every list: read passes from the other hosts.
    let watching = AtomicBool::new(true);
    let (gone, passes) = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let gone = poll_until(Duration::from_secs(30), || {
                !anyone_names(&lab, &hosts, old_addr)
            });
            watching.store(false, Ordering::Relaxed);
            gone.map(|_| killed.elapsed())
        });
        let mut passes = Vec::new();
        while watching.load(Ordering::Relaxed) || passes.is_empty() {
            passes.push(read_all(&lab, &others, &vals));
        }
        (watcher.join().unwrap(), passes)
    });
    let joined = poll_until(Duration::from_secs(30), || ring_consistent(&lab, &hosts))
        .map(|_| killed.elapsed());
    let (first, last, all_right) = read_until_right(&lab, &hosts, &vals, Duration::from_secs(20));
    let bad: Vec<&Reads> = passes.iter().filter(|r| !r.all_right()).collect();
    eprintln!(
        "[hosts s4] before: slowest GET {:?}; host {moved} killed, back on a new address after \
         {}; old identity out of every pred/successor list {gone:?} after the kill; ring \
         consistent with the new identity {joined:?} after the kill; {} read passes (4500 GETs \
         each) until then, {} not all right {bad:?}; after: first pass {first:?}, all 4800 \
         right after {all_right:?}",
        before.slowest,
        secs(restarted),
        passes.len(),
        bad.len()
    );
    assert!(before.all_right(), "{before:?}");
    assert!(bad.is_empty(), "reads from the kill on: {bad:?}");
    assert!(
        gone.is_some_and(|t| t < Duration::from_secs(10)),
        "old identity still in a pred/successor list 10 s after the kill ({gone:?})"
    );
    assert!(joined.is_some(), "{}", ring_view(&lab, &hosts));
    assert!(all_right.is_some(), "values lost: {last:?}");
    assert_ring_cli(&lab, &hosts, &hosts);
    if check_routes {
        // Fingers and routing caches may still name the old identity: a GET routed there waits
        // for one request timeout (500 ms) before it takes another route.
        let mut pass = Reads::default();
        let fast = poll_until(Duration::from_secs(20), || {
            pass = read_all(&lab, &hosts, &vals);
            pass.all_right() && pass.slowest < Duration::from_millis(250)
        })
        .map(|_| killed.elapsed());
        eprintln!("[hosts s4] no GET slower than 250 ms {fast:?} after the kill; last {pass:?}");
        assert!(fast.is_some(), "stale routes 20 s on: {pass:?}");
    }
    lab.finish();
}
