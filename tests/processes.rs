//! Real processes of the built binary on 127.0.0.1 (the design card's scripted multi-node test):
//! 12 nodes, 300 values with replication 3; 3 nodes killed at once with SIGKILL; then a rolling
//! restart of every node (SIGTERM, which hands values on, then a fresh process). Every value is
//! found through every live node after each step.

mod common;

use common::wait_until;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use voidphone_dht::client::ApiClient;
use voidphone_dht::id::{Id, Key};
use voidphone_dht::testnet;

const BIN: &str = env!("CARGO_BIN_EXE_voidphone-dht");

struct Proc {
    child: Child,
    api: SocketAddr,
    p2p: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Slot 0 pinned (no slot choice at join): the test places its kills by the ids addresses give.
fn config_file() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("vpdht-procs-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "[dht]\napi_address = \"127.0.0.1:0\"\np2p_address = \"127.0.0.1:0\"\nstabilize_interval_ms = 200\n\
         fix_fingers_interval_ms = 100\ncheck_predecessor_interval_ms = 400\nrequest_timeout_ms = 500\n\
         repair_interval_ms = 1000\nid_slot = 0\n",
    )
    .unwrap();
    path
}

fn start(config: &std::path::Path, bootstrap: Option<SocketAddr>) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args(["-c", config.to_str().unwrap(), "-q"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", &b.to_string()]);
    }
    // Every node its own loopback address: ring ids come from the IP.
    let p2p = SocketAddr::new(voidphone_dht::testnet::next_loopback_ip(), 0);
    cmd.args(["--p2p-address", &p2p.to_string()]);
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = |w: &str| {
        words[words.iter().position(|x| *x == w).unwrap() + 1]
            .parse()
            .unwrap()
    };
    Proc {
        api: at("api"),
        p2p: at("p2p"),
        child,
    }
}

fn signal(p: &Proc, sig: &str) {
    Command::new("kill")
        .args([sig, &p.child.id().to_string()])
        .status()
        .unwrap();
}

fn ring_whole(procs: &[Proc]) -> bool {
    let mut want: Vec<SocketAddr> = procs.iter().map(|p| p.p2p).collect();
    want.sort_by_key(|a| Id::of_addr(*a));
    testnet::ring_order(procs[0].p2p).is_ok_and(|walk| testnet::is_rotation(&walk, &want))
}

fn key(i: u64) -> Key {
    Id::hash(format!("process-test-{i}").as_bytes())
}

fn all_found(procs: &[Proc]) -> bool {
    procs.iter().all(|p| {
        let Ok(mut c) = ApiClient::connect(p.api) else {
            return false;
        };
        (0..300u64).all(|i| {
            c.get(key(i))
                .ok()
                .flatten()
                .is_some_and(|v| v == format!("value-{i}").as_bytes())
        })
    })
}

#[test]
fn values_survive_three_kills_and_a_rolling_restart() {
    let config = config_file();
    let first = start(&config, None);
    let boot = first.p2p;
    let mut procs = vec![first];
    for _ in 1..12 {
        procs.push(start(&config, Some(boot)));
    }
    wait_until(
        Duration::from_secs(30),
        "12 processes form one ring",
        || ring_whole(&procs),
    );
    for i in 0..300u64 {
        let mut c = ApiClient::connect(procs[i as usize % 12].api).unwrap();
        c.put(key(i), format!("value-{i}").as_bytes(), 3600, 3)
            .unwrap();
    }
    wait_until(
        Duration::from_secs(30),
        "every value through every node",
        || all_found(&procs),
    );

    // SIGKILL three nodes at once, spread round the ring so no key loses all three holders.
    procs.sort_by_key(|p| Id::of_addr(p.p2p));
    let victims: Vec<Proc> = [8, 4, 0].iter().map(|&i| procs.remove(i)).collect();
    for v in &victims {
        signal(v, "-KILL");
    }
    drop(victims);
    wait_until(Duration::from_secs(30), "ring of 9 after the kills", || {
        ring_whole(&procs)
    });
    wait_until(
        Duration::from_secs(30),
        "every value after a repair round",
        || all_found(&procs),
    );

    // Rolling restart: each node leaves gracefully (SIGTERM) and a new process joins.
    for _ in 0..procs.len() {
        let mut old = procs.remove(0);
        signal(&old, "-TERM");
        let status = old.child.wait().unwrap();
        assert!(status.success(), "a node exits 0 after SIGTERM: {status}");
        let via = procs[0].p2p;
        procs.push(start(&config, Some(via)));
        wait_until(
            Duration::from_secs(30),
            "ring whole after a restart",
            || ring_whole(&procs),
        );
        wait_until(
            Duration::from_secs(30),
            "every value after a restart",
            || all_found(&procs),
        );
    }
}
