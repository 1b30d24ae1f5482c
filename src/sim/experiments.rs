//! The Chord papers' experiments (Stoica et al., ToN 2003) on the simulator: path length against N,
//! simultaneous failures, churn, keys per node, and GET latency on a wide-area network. Each one
//! sets up its rings, runs them and measures; it returns rows of figures and judges nothing: the
//! tests (tests/sim_failures.rs, tests/sim_scale.rs) hold the bounds, the runner
//! (`cargo run --release --example eval`) prints the tables and writes them as CSV for the plots,
//! and docs/EVALUATION.md holds the figures.
//!
//! Only the simulator's public API is used here, as a test would use it.

mod churn;
mod failures;
mod load;
mod path;
mod wan;

pub use churn::{ChurnRow, ChurnSetup, churn};
pub use failures::{
    ATTEMPTS as LOOKUP_ATTEMPTS, FRACTIONS as FAILED_FRACTIONS, FailureRow, FailureSetup, Fault,
    failures,
};
pub use load::{LoadRow, load};
pub use path::{PathRow, Routing, path_length};
pub use wan::{DELAY_MEAN_MS, WanRow, wan_gets};

use crate::config::NodeConfig;
use crate::sim::Sim;

/// Successor list length r in the papers' experiments (2·log2 1000).
pub const R: usize = 20;

/// Which maintenance periods the nodes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Periods {
    /// The papers': stabilize, fix fingers and check predecessor every 30 s.
    Paper,
    /// The simulator's usual: stabilize every 1 s, a finger every 250 ms, predecessor every 2 s.
    Ours,
}

impl Periods {
    /// The node config with these periods and r = [`R`].
    pub fn node_config(self) -> NodeConfig {
        let mut c = match self {
            Periods::Paper => Sim::paper_node_config(),
            Periods::Ours => Sim::default_node_config(),
        };
        c.successors = R;
        c
    }

    pub fn name(self) -> &'static str {
        match self {
            Periods::Paper => "paper",
            Periods::Ours => "ours",
        }
    }
}

/// A table of results: the same rows print as markdown and write as CSV.
pub trait Table {
    /// Column names (CSV header and markdown header alike).
    fn columns() -> &'static [&'static str];
    /// This row's cells, in column order.
    fn cells(&self) -> Vec<String>;
}

/// `rows` as a markdown table.
pub fn markdown<T: Table>(rows: &[T]) -> String {
    rows.iter()
        .fold(markdown_header::<T>(), |out, row| out + &markdown_row(row))
}

/// A markdown table's header lines, for rows printed one by one as they come.
pub fn markdown_header<T: Table>() -> String {
    let n = T::columns().len();
    format!(
        "| {} |\n|{}\n",
        T::columns().join(" | "),
        " --- |".repeat(n)
    )
}

/// One markdown table line.
pub fn markdown_row<T: Table>(row: &T) -> String {
    format!("| {} |\n", row.cells().join(" | "))
}

/// `rows` as CSV (no cell holds a comma or a quote).
pub fn csv<T: Table>(rows: &[T]) -> String {
    let mut out = T::columns().join(",") + "\n";
    for row in rows {
        out += &(row.cells().join(",") + "\n");
    }
    out
}

/// The `q` quantile of `sorted` (the value at rank ⌊len·q⌋, the last one at most; 0 when empty).
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(i).copied().unwrap_or(0)
}

/// The mean of `values` (0 when empty).
pub fn mean(values: &[u64]) -> f64 {
    values.iter().sum::<u64>() as f64 / values.len().max(1) as f64
}

/// This process's peak resident memory, MiB (Linux; 0 elsewhere).
pub fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Two(u8, &'static str);

    impl Table for Two {
        fn columns() -> &'static [&'static str] {
            &["n", "name"]
        }
        fn cells(&self) -> Vec<String> {
            vec![self.0.to_string(), self.1.to_string()]
        }
    }

    #[test]
    fn tables_print_as_markdown_and_csv() {
        let rows = [Two(1, "a"), Two(2, "b")];
        assert_eq!(
            markdown(&rows),
            "| n | name |\n| --- | --- |\n| 1 | a |\n| 2 | b |\n"
        );
        assert_eq!(csv(&rows), "n,name\n1,a\n2,b\n");
    }

    #[test]
    fn quantiles_take_the_rank_below_and_stay_in_range() {
        let v: Vec<u64> = (0..100).collect();
        assert_eq!(quantile(&v, 0.01), 1);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 99);
        assert_eq!(quantile(&[], 0.5), 0);
        assert_eq!(mean(&[1, 2, 6]), 3.0);
    }
}
