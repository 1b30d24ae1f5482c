//! Path length against N (ToN 2003, Fig. 10): rings built at once from the oracle (`Sim::warm_start`,
//! as the papers' simulators begin), the papers' 30 s periods, ids = SHA-256 of each node's IP (slot
//! 0: random placement), then lookups of random keys from random nodes, each answer checked against
//! the oracle's owner. Path = PEER FIND messages from the first node to the one that answers.

use super::{Periods, Table, mean, peak_rss_mib, quantile};
use crate::sim::{NetConfig, Sim};
use std::time::Instant;

/// What a node may route by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routing {
    /// Fingers, the successor list (r = 20) and the routing cache, as the product routes.
    Full,
    /// Fingers alone, as the papers' analysis: a successor list of one (the first finger) and no
    /// routing cache.
    FingersOnly,
}

impl Routing {
    pub fn name(self) -> &'static str {
        match self {
            Routing::Full => "full",
            Routing::FingersOnly => "fingers-only",
        }
    }
}

/// One ring size's lookups.
#[derive(Clone, Debug)]
pub struct PathRow {
    pub n: usize,
    pub routing: Routing,
    pub lookups: usize,
    pub mean: f64,
    /// 1st and 99th percentiles.
    pub p1: u64,
    pub p99: u64,
    pub warm_s: f64,
    pub run_s: f64,
    /// Events handled per node per simulated second while the lookups ran.
    pub events_per_node_s: f64,
    pub peak_rss_mib: u64,
}

impl PathRow {
    /// The papers' mean path length, ½·log2 N.
    pub fn half_log2_n(&self) -> f64 {
        0.5 * (self.n as f64).log2()
    }
}

/// `lookups` lookups in a warm ring of `n` nodes routing by `routing`; `Err` names a lookup
/// answered wrong (or unanswered).
pub fn path_length(
    n: usize,
    lookups: usize,
    seed: u64,
    routing: Routing,
) -> Result<PathRow, String> {
    let wall = Instant::now();
    let mut cfg = Periods::Paper.node_config();
    if routing == Routing::FingersOnly {
        cfg.successors = 1;
        cfg.routing_cache_max = 0;
    }
    let mut sim = Sim::new(seed, cfg, NetConfig::default());
    sim.warm_start(n);
    let warm = wall.elapsed();
    let (events, from) = (sim.events, sim.now());
    let mut paths: Vec<u64> = sim
        .probe_random(lookups)
        .map_err(|e| format!("N = {n}, seed {seed}, {}: {e}", routing.name()))?
        .into_iter()
        .map(u64::from)
        .collect();
    paths.sort();
    let simulated_s = sim.now().ms_since(from) as f64 / 1000.0;
    Ok(PathRow {
        n,
        routing,
        lookups,
        mean: mean(&paths),
        p1: quantile(&paths, 0.01),
        p99: quantile(&paths, 0.99),
        warm_s: warm.as_secs_f64(),
        run_s: (wall.elapsed() - warm).as_secs_f64(),
        events_per_node_s: (sim.events - events) as f64 / n as f64 / simulated_s,
        peak_rss_mib: peak_rss_mib(),
    })
}

impl Table for PathRow {
    fn columns() -> &'static [&'static str] {
        &[
            "n",
            "routing",
            "lookups",
            "half_log2_n",
            "mean_path",
            "p1",
            "p99",
            "warm_start_s",
            "lookups_s",
            "events_per_node_s",
            "peak_rss_mib",
        ]
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.n.to_string(),
            self.routing.name().to_string(),
            self.lookups.to_string(),
            format!("{:.2}", self.half_log2_n()),
            format!("{:.2}", self.mean),
            self.p1.to_string(),
            self.p99.to_string(),
            format!("{:.1}", self.warm_s),
            format!("{:.1}", self.run_s),
            format!("{:.2}", self.events_per_node_s),
            self.peak_rss_mib.to_string(),
        ]
    }
}
