//! GET latency on a simulated wide-area network (issue 13): every pair of nodes keeps one one-way
//! delay drawn once from 10–100 ms (`NetConfig::fixed_link_latency`, mean 55 ms). A warm-started
//! ring with the product's default periods and timeouts (the simulator's usual 500 ms request
//! timeout is for 5–50 ms links: a lookup of six 100 ms hops would time out); values put from
//! random nodes, then read one at a time, each from a random node, timed from the client's request
//! to its answer. Reported beside the lookup's mean path h: a GET whose lookup carries the read
//! (FIND VALUE) costs h + 1 one-way delays; one that routes the lookup, then asks the holder, h + 3.

use super::{Table, quantile};
use crate::config::Config;
use crate::id::Id;
use crate::msg::{FIND_VALUE, STORAGE_GET, VALUE_FOUND};
use crate::sim::{NetConfig, Sim};
use crate::time::Prng;
use crate::wire::api::{ApiReply, ApiRequest};
use bytes::Bytes;
use std::time::Instant;

/// The mean one-way delay of a link, ms.
pub const DELAY_MEAN_MS: f64 = 55.0;

/// One ring size's GETs.
#[derive(Clone, Debug)]
pub struct WanRow {
    pub n: usize,
    /// Each GET's time to its answer, ms, sorted.
    pub latencies_ms: Vec<u64>,
    /// The mean lookup path (500 probes after the GETs).
    pub h: f64,
    /// Messages sent ring-wide during the GETs: FIND VALUE (every hop), VALUE FOUND, STORAGE GET.
    pub find_values: u64,
    pub values_found: u64,
    pub storage_gets: u64,
    pub wall_s: f64,
}

impl WanRow {
    pub fn quantile_ms(&self, q: f64) -> u64 {
        quantile(&self.latencies_ms, q)
    }
}

/// `gets` values put, then read one at a time, in a warm ring of `n` nodes; `Err` names a GET that
/// returned the wrong value or no answer within 10 s.
pub fn wan_gets(n: usize, gets: u64, seed: u64) -> Result<WanRow, String> {
    let wall = Instant::now();
    let net = NetConfig {
        latency_min_ms: 10,
        latency_max_ms: 100,
        fixed_link_latency: true,
        pieces_max: 1,
        ..NetConfig::default()
    };
    let mut sim = Sim::new(seed, Config::default().node, net);
    let addrs = sim.warm_start(n);
    let mut rng = Prng::new(seed ^ 0x3a9);
    let key = |i: u64| Id::hash(&format!("wan {i}").into_bytes());
    for i in 0..gets {
        let put = ApiRequest::Put {
            ttl_s: 3600,
            replication: 3,
            key: key(i),
            value: Bytes::from(i.to_be_bytes().to_vec()),
        };
        sim.client_request(addrs[rng.below(n as u64) as usize], i, put);
    }
    sim.run_for(5_000);
    sim.replies.clear();
    let sent = |sim: &Sim| {
        [FIND_VALUE, VALUE_FOUND, STORAGE_GET].map(|t| sim.traffic.get(&t).map_or(0, |&(n, _)| n))
    };
    let before = sent(&sim);
    let mut latencies_ms = Vec::new();
    for i in 0..gets {
        let at = addrs[rng.below(n as u64) as usize];
        sim.client_request(at, 1_000_000 + i, ApiRequest::Get { key: key(i) });
        let took = sim.run_until_cond(1, 10_000, |s| !s.replies.is_empty());
        let (_, _, reply) = sim.replies.pop().ok_or(format!("GET {i}: no answer"))?;
        if !matches!(&reply, ApiReply::Success { value, .. } if value[..] == i.to_be_bytes()) {
            return Err(format!("GET {i}: {reply:?}"));
        }
        latencies_ms.push(took.ok_or(format!("GET {i}: no answer"))?);
        sim.replies.clear();
    }
    latencies_ms.sort();
    let after = sent(&sim);
    let paths = sim.probe_random(500)?;
    let h = paths.iter().map(|&p| p as f64).sum::<f64>() / paths.len() as f64;
    Ok(WanRow {
        n,
        latencies_ms,
        h,
        find_values: after[0] - before[0],
        values_found: after[1] - before[1],
        storage_gets: after[2] - before[2],
        wall_s: wall.elapsed().as_secs_f64(),
    })
}

impl Table for WanRow {
    fn columns() -> &'static [&'static str] {
        &[
            "n",
            "gets",
            "h",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "h_plus_1_5_delays_ms",
            "h_plus_3_delays_ms",
            "find_value_msgs",
            "value_found_msgs",
            "storage_get_msgs",
            "wall_s",
        ]
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.n.to_string(),
            self.latencies_ms.len().to_string(),
            format!("{:.2}", self.h),
            self.quantile_ms(0.5).to_string(),
            self.quantile_ms(0.9).to_string(),
            self.quantile_ms(0.99).to_string(),
            format!("{:.0}", (self.h + 1.5) * DELAY_MEAN_MS),
            format!("{:.0}", (self.h + 3.0) * DELAY_MEAN_MS),
            self.find_values.to_string(),
            self.values_found.to_string(),
            self.storage_gets.to_string(),
            format!("{:.1}", self.wall_s),
        ]
    }
}
