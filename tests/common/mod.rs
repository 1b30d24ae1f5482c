//! Helpers shared by the integration tests: nodes on 127.0.0.1 with OS-picked ports, and polling
//! for a condition with a deadline (never a fixed sleep hoping for convergence).
#![allow(dead_code)]

use std::time::{Duration, Instant};
use voidphone_dht::client::ApiClient;
use voidphone_dht::id::Key;
use voidphone_dht::reactor::RunningNode;
use voidphone_dht::testnet::loopback_config;

pub fn single_node() -> RunningNode {
    RunningNode::spawn(&loopback_config(Vec::new()), 1).expect("node starts")
}

/// Polls `cond` every 20 ms until it holds or `within` has passed; panics with `what` then.
pub fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {within:?} waiting for: {what}");
}

pub fn key(i: u64) -> Key {
    voidphone_dht::id::Id::hash(&i.to_be_bytes())
}

pub fn client(node: &RunningNode) -> ApiClient {
    ApiClient::connect(node.api).expect("connect to API")
}
