//! The Chord papers' experiments as commands (issue 13): each runs through
//! `voidphone_dht::sim::experiments`, prints its table (markdown) and writes it as CSV; `plot` turns
//! the CSVs into PNGs. docs/EVALUATION.md holds the figures and the commands.
//!
//! ```text
//! cargo run --release --example eval -- <experiment> [options]
//!   path       path length vs N, 2^3 … --n (default 10^5), full routing and fingers only
//!   failures   simultaneous failures, N = --n (1000), p = 0.1 … 0.5, both periods (--periods)
//!   churn      churn, N = --n (1000), R = 0.05 … 0.40 per s, both periods (600 s at the
//!              papers' periods, 60 s at ours, or --seconds; 100 lookups a second)
//!   load       keys per node, N = --n (10^4), --keys (5·10^5) keys, random placement and ours
//!   wan        GET latency, one-way delays 10–100 ms per link, N in --sizes (1000,10000)
//!   plot       the PNGs from the CSVs in --out
//!   all        every experiment above, then plot
//! options: --n N, --seed S (else each experiment's own), --out DIR (docs/plots), --lookups L,
//!          --seconds S (churn, per run), --periods paper|ours|both, --silent (failures),
//!          --sizes N,N,… (wan), --gets G (wan), --keys K (load), --rates R,R,… (churn)
//! ```
//!
//! Kept out of the shipped binary: the plotting crates are dev-dependencies.

mod plot;

use std::path::{Path, PathBuf};
use std::time::Instant;
use voidphone_dht::sim::experiments::{
    self, ChurnSetup, FAILED_FRACTIONS, FailureSetup, Fault, Periods, Routing, Table,
};

/// The command line.
struct Args {
    experiment: String,
    n: Option<usize>,
    seed: Option<u64>,
    out: PathBuf,
    lookups: Option<usize>,
    seconds: Option<u64>,
    periods: Vec<Periods>,
    fault: Fault,
    sizes: Vec<usize>,
    gets: u64,
    keys: usize,
    rates: Vec<f64>,
}

/// How long each churn run lasts by default: 20 of the papers' 30 s rounds, 60 of our 1 s ones
/// (our periods cost about 40 times the events per simulated second), and the lookups per second
/// (each costs a few events: a hundred a second add little to the ring's own traffic).
const CHURN_PAPER_S: u64 = 600;
const CHURN_OURS_S: u64 = 60;
const CHURN_LOOKUPS_PER_S: u64 = 100;

/// Churn rates R (joins plus crashes per second), as in the paper's Table III.
const CHURN_RATES: [f64; 8] = [0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40];

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("eval: {e}\nusage: eval <path|failures|churn|load|wan|plot|all> [options]");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("eval {}: {e}", args.experiment);
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&args.out)?;
    match args.experiment.as_str() {
        "path" => path(args),
        "failures" => failures(args),
        "churn" => churn(args),
        "load" => load(args),
        "wan" => wan(args),
        "plot" => plot::all(&args.out),
        "all" => {
            path(args)?;
            failures(args)?;
            churn(args)?;
            load(args)?;
            wan(args)?;
            plot::all(&args.out)
        }
        other => Err(format!("no experiment {other:?}").into()),
    }
}

fn parse_args() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut args = Args {
        experiment: String::new(),
        n: None,
        seed: None,
        out: PathBuf::from("docs/plots"),
        lookups: None,
        seconds: None,
        periods: vec![Periods::Ours, Periods::Paper],
        fault: Fault::Refusing,
        sizes: vec![1000, 10_000],
        gets: 200,
        keys: 500_000,
        rates: CHURN_RATES.to_vec(),
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("n") => args.n = Some(p.value()?.parse()?),
            Long("seed") => args.seed = Some(p.value()?.parse()?),
            Long("out") => args.out = p.value()?.into(),
            Long("lookups") => args.lookups = Some(p.value()?.parse()?),
            Long("seconds") => args.seconds = Some(p.value()?.parse()?),
            Long("periods") => args.periods = periods(&p.value()?.string()?)?,
            Long("silent") => args.fault = Fault::Silent,
            Long("sizes") => args.sizes = list(&p.value()?.string()?)?,
            Long("gets") => args.gets = p.value()?.parse()?,
            Long("keys") => args.keys = p.value()?.parse()?,
            Long("rates") => args.rates = list(&p.value()?.string()?)?,
            Value(v) if args.experiment.is_empty() => args.experiment = v.string()?,
            _ => return Err(arg.unexpected()),
        }
    }
    if args.experiment.is_empty() {
        return Err("which experiment?".into());
    }
    Ok(args)
}

fn periods(s: &str) -> Result<Vec<Periods>, lexopt::Error> {
    match s {
        "paper" => Ok(vec![Periods::Paper]),
        "ours" => Ok(vec![Periods::Ours]),
        "both" => Ok(vec![Periods::Ours, Periods::Paper]),
        _ => Err(format!("--periods {s:?}: paper, ours or both").into()),
    }
}

fn list<T: std::str::FromStr>(s: &str) -> Result<Vec<T>, lexopt::Error> {
    s.split(',')
        .map(|x| {
            x.trim()
                .parse()
                .map_err(|_| format!("not a number: {x:?}").into())
        })
        .collect()
}

/// Prints `rows` as markdown, writes them to `<out>/<name>.csv`.
fn save<T: Table>(out: &Path, name: &str, rows: &[T]) -> std::io::Result<()> {
    println!("\n{name}:\n{}", experiments::markdown(rows));
    std::fs::write(out.join(format!("{name}.csv")), experiments::csv(rows))
}

/// Runs each of `runs` in turn, printing each row as it comes (long runs show progress) and the
/// wall time in all; stops at the first error.
fn rows<T: Table>(
    runs: impl IntoIterator<Item = impl FnOnce() -> Result<T, String>>,
) -> Result<Vec<T>, String> {
    let wall = Instant::now();
    eprint!("{}", experiments::markdown_header::<T>());
    let mut rows = Vec::new();
    for run in runs {
        let row = run()?;
        eprint!("{}", experiments::markdown_row(&row));
        rows.push(row);
    }
    eprintln!("({:.0} s wall)", wall.elapsed().as_secs_f64());
    Ok(rows)
}

fn path(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let max_n = args.n.unwrap_or(100_000);
    let mut sizes: Vec<usize> = (3..).map(|e| 1 << e).take_while(|&n| n <= max_n).collect();
    if sizes.last() != Some(&max_n) {
        sizes.push(max_n);
    }
    let lookups = args.lookups.unwrap_or(1000);
    let mut runs = Vec::new();
    for routing in [Routing::Full, Routing::FingersOnly] {
        for &n in &sizes {
            let seed = args.seed.unwrap_or(n as u64);
            runs.push(move || experiments::path_length(n, lookups, seed, routing));
        }
    }
    Ok(save(&args.out, "path", &rows(runs)?)?)
}

fn failures(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut runs = Vec::new();
    for &periods in &args.periods {
        for p in FAILED_FRACTIONS {
            let setup = FailureSetup {
                n: args.n.unwrap_or(1000),
                p,
                lookups: args.lookups.unwrap_or(10_000),
                seed: args.seed.unwrap_or(1000),
                fault: args.fault,
                periods,
            };
            runs.push(move || Ok(experiments::failures(setup)));
        }
    }
    let name = match args.fault {
        Fault::Refusing => "failures",
        Fault::Silent => "failures_silent",
    };
    Ok(save(&args.out, name, &rows(runs)?)?)
}

fn churn(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut runs = Vec::new();
    for &periods in &args.periods {
        for &rate_per_s in &args.rates {
            let setup = ChurnSetup {
                n: args.n.unwrap_or(1000),
                rate_per_s,
                seconds: args.seconds.unwrap_or(match periods {
                    Periods::Paper => CHURN_PAPER_S,
                    Periods::Ours => CHURN_OURS_S,
                }),
                lookups_per_s: CHURN_LOOKUPS_PER_S,
                seed: args.seed.unwrap_or(7),
                periods,
            };
            runs.push(move || Ok(experiments::churn(setup)));
        }
    }
    Ok(save(&args.out, "churn", &rows(runs)?)?)
}

fn load(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let (n, keys, seed) = (args.n.unwrap_or(10_000), args.keys, args.seed.unwrap_or(11));
    let wall = Instant::now();
    let rows = experiments::load(n, keys, seed);
    eprintln!("load: {:.0} s wall", wall.elapsed().as_secs_f64());
    Ok(save(&args.out, "load", &rows)?)
}

fn wan(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let runs = args.sizes.iter().map(|&n| {
        let (gets, seed) = (args.gets, args.seed.unwrap_or(13));
        move || experiments::wan_gets(n, gets, seed)
    });
    let rows = rows(runs)?;
    save(&args.out, "wan", &rows)?;
    // Every GET's latency, for the CDF.
    let mut cdf = String::from("n,latency_ms\n");
    for row in &rows {
        for ms in &row.latencies_ms {
            cdf += &format!("{},{ms}\n", row.n);
        }
    }
    Ok(std::fs::write(args.out.join("wan_latencies.csv"), cdf)?)
}
