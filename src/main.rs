//! The `voidphone-dht` command: run a node, or talk to one (put, get, ring), or start a local testnet.

use lexopt::prelude::*;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use voidphone_dht::balance::{self, Balance};
use voidphone_dht::client::{self, ApiClient};
use voidphone_dht::config::{Config, ConfigError};
use voidphone_dht::id::Id;
use voidphone_dht::load::{LoadSpec, Op};
use voidphone_dht::reactor::{Reactor, RunningNode};

const HELP: &str = "\
voidphone-dht: the VoidPhone DHT module (Chord)

USAGE:
    voidphone-dht [-c FILE] [OPTIONS]            run a node in the foreground
    voidphone-dht put [--api ADDR] [--ttl S] [--replication R] KEY VALUE
    voidphone-dht get [--api ADDR] KEY
    voidphone-dht ring --p2p ADDR                walk the ring from a node
    voidphone-dht testnet --nodes N              run N joined nodes on 127.0.0.1
    voidphone-dht sim --nodes N [--seed S]       simulate a ring: convergence, path lengths
    voidphone-dht bench --api A[,B] --conns C --pipeline P --secs S --op get|put   load a node or ring

RUN OPTIONS:
    -c, --config FILE        configuration file (default: node.toml)
    --api-address ADDR       override [dht] api_address
    --p2p-address ADDR       override [dht] p2p_address
    --bootstrap ADDR[,ADDR]  override [dht] bootstrap
    -v, --verbose            log more (repeat for trace)
    -q, --quiet              log warnings and errors only
    -h, --help               this text

KEY is 64 hex digits (the raw key) or any other text (its SHA-256 is the key).
VALUE '-' reads the value from standard input. `get` exits 0 when found, 1 when not, 2 on error.
";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).peekable();
    let sub = args.peek().and_then(|a| a.to_str()).map(str::to_owned);
    let parser = lexopt::Parser::from_args(args);
    let result = match sub.as_deref() {
        Some("put") => put(skip_one(parser)),
        Some("get") => get(skip_one(parser)),
        Some("ring") => ring(skip_one(parser)),
        Some("testnet") => testnet(skip_one(parser)),
        Some("sim") => simulate(skip_one(parser)),
        Some("bench") => bench(skip_one(parser)),
        _ => run(parser),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("voidphone-dht: {e}");
            ExitCode::from(2)
        }
    }
}

fn skip_one(mut p: lexopt::Parser) -> lexopt::Parser {
    let _ = p.next();
    p
}

type Res = Result<ExitCode, Box<dyn std::error::Error>>;

/// A subcommand's options, `Ok(None)` when the user asked for --help (the caller prints it).
type Parsed<T> = Result<Option<T>, Box<dyn std::error::Error>>;

fn addr(p: &mut lexopt::Parser) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let v: String = p.value()?.parse()?;
    v.parse()
        .map_err(|_| format!("expected an address like 127.0.0.1:7401, got {v:?}").into())
}

fn run(p: lexopt::Parser) -> Res {
    let Some(args) = run_args(p)? else {
        print!("{HELP}");
        return Ok(ExitCode::SUCCESS);
    };
    let cfg = match args.load_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("voidphone-dht: configuration error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    init_logging(cfg.log_level, args.verbosity);
    let mut reactor = Reactor::bind(&cfg, seed())?;
    reactor.stop_on_signals()?;
    println!(
        "voidphone-dht id {} api {} p2p {}",
        reactor.node().me().id,
        reactor.api_addr(),
        reactor.p2p_addr()
    );
    std::io::stdout().flush()?;
    reactor.run()?;
    Ok(ExitCode::SUCCESS)
}

/// What `run`'s command line asks for: a configuration file, keys of it to override, and how much
/// more (or less) than its `log_level` to log.
struct RunArgs {
    config_path: PathBuf,
    api: Option<SocketAddr>,
    p2p: Option<SocketAddr>,
    bootstrap: Option<Vec<SocketAddr>>,
    /// Log levels above (positive) or below the configured one.
    verbosity: i32,
}

fn run_args(mut p: lexopt::Parser) -> Parsed<RunArgs> {
    let mut args = RunArgs {
        config_path: PathBuf::from("node.toml"),
        api: None,
        p2p: None,
        bootstrap: None,
        verbosity: 0,
    };
    while let Some(arg) = p.next()? {
        match arg {
            Short('c') | Long("config") => args.config_path = p.value()?.into(),
            Long("api-address") => args.api = Some(addr(&mut p)?),
            Long("p2p-address") => args.p2p = Some(addr(&mut p)?),
            Long("bootstrap") => args.bootstrap = Some(bootstrap_list(&mut p)?),
            Short('v') | Long("verbose") => args.verbosity += 1,
            Short('q') | Long("quiet") => args.verbosity -= 1,
            Short('h') | Long("help") => return Ok(None),
            _ => return Err(arg.unexpected().into()),
        }
    }
    Ok(Some(args))
}

/// `--bootstrap A,B`; empty items are skipped, so `--bootstrap ''` empties the configured list.
fn bootstrap_list(p: &mut lexopt::Parser) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error>> {
    let v: String = p.value()?.parse()?;
    let list: Result<Vec<SocketAddr>, _> = v
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect();
    Ok(list.map_err(|_| format!("--bootstrap: expected addresses, got {v:?}"))?)
}

impl RunArgs {
    /// The configuration file with the command line's overrides on top.
    fn load_config(&self) -> Result<Config, ConfigError> {
        let mut cfg = Config::load(&self.config_path)?;
        if let Some(a) = self.api {
            cfg.reactor.api_address = a;
        }
        if let Some(a) = self.p2p {
            cfg.reactor.p2p_address = a;
        }
        if let Some(b) = &self.bootstrap {
            cfg.node.bootstrap = b.clone();
        }
        Ok(cfg)
    }
}

fn init_logging(base: log::LevelFilter, verbosity: i32) {
    use log::LevelFilter::*;
    let levels = [Off, Error, Warn, Info, Debug, Trace];
    let at = levels.iter().position(|l| *l == base).unwrap_or(3) as i32;
    let level = levels[(at + verbosity).clamp(0, 5) as usize];
    let cfg = simplelog::ConfigBuilder::new()
        .set_target_level(Off)
        .set_thread_level(Off)
        .build();
    let _ = simplelog::TermLogger::init(
        level,
        cfg,
        simplelog::TerminalMode::Stderr,
        simplelog::ColorChoice::Never,
    );
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32)
}

const DEFAULT_API: &str = "127.0.0.1:7401";

fn put(mut p: lexopt::Parser) -> Res {
    let (mut api, mut ttl, mut replication) = (DEFAULT_API.parse()?, 3600u16, 3u8);
    let mut positional = Vec::new();
    while let Some(arg) = p.next()? {
        match arg {
            Long("api") => api = addr(&mut p)?,
            Long("ttl") => ttl = p.value()?.parse()?,
            Long("replication") => replication = p.value()?.parse()?,
            Short('h') | Long("help") => {
                println!(
                    "voidphone-dht put [--api ADDR] [--ttl SECONDS] [--replication R] KEY VALUE  (VALUE - reads stdin)"
                );
                return Ok(ExitCode::SUCCESS);
            }
            Value(v) => positional.push(v.string()?),
            _ => return Err(arg.unexpected().into()),
        }
    }
    let [key, value] =
        <[String; 2]>::try_from(positional).map_err(|_| "put needs KEY and VALUE")?;
    let value = if value == "-" {
        let mut v = Vec::new();
        std::io::stdin().read_to_end(&mut v)?;
        v
    } else {
        value.into_bytes()
    };
    let mut c = ApiClient::connect(api)?;
    c.put(client::parse_key(&key), &value, ttl, replication)?;
    // DHT PUT has no reply; a GET on the same connection confirms the node took it.
    let _ = c.get(client::parse_key(&key))?;
    Ok(ExitCode::SUCCESS)
}

fn get(mut p: lexopt::Parser) -> Res {
    let mut api = DEFAULT_API.parse()?;
    let mut key = None;
    while let Some(arg) = p.next()? {
        match arg {
            Long("api") => api = addr(&mut p)?,
            Short('h') | Long("help") => {
                println!(
                    "voidphone-dht get [--api ADDR] KEY   (exit 0 found, 1 not found, 2 error)"
                );
                return Ok(ExitCode::SUCCESS);
            }
            Value(v) if key.is_none() => key = Some(v.string()?),
            _ => return Err(arg.unexpected().into()),
        }
    }
    let key = key.ok_or("get needs KEY")?;
    let mut c = ApiClient::connect(api)?;
    match c.get(client::parse_key(&key))? {
        Some(v) => {
            std::io::stdout().write_all(&v)?;
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("not found");
            Ok(ExitCode::from(1))
        }
    }
}

fn ring(mut p: lexopt::Parser) -> Res {
    let mut start: SocketAddr = "127.0.0.1:7402".parse()?;
    while let Some(arg) = p.next()? {
        match arg {
            Long("p2p") => start = addr(&mut p)?,
            Short('h') | Long("help") => {
                println!(
                    "voidphone-dht ring [--p2p ADDR]   walk the ring along successors from a node"
                );
                return Ok(ExitCode::SUCCESS);
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let nodes = client::walk_ring(start, 10_000, Duration::from_secs(2))?;
    // Written, not printed: a reader that stops early (`| head`) ends the output, not a panic.
    // The address column fits the longest address (IPv6 ones run to 47 characters); `ip` says
    // which family each node speaks (a node speaks on its one advertised address).
    let w = nodes
        .iter()
        .map(|n| n.node.addr.to_string().len())
        .max()
        .unwrap_or(0)
        .max(22);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<10} {:<w$} {:<10} {:>8} {:>8} {:>10} {:>6} {:>8} {:>3}",
        "id", "p2p", "pred", "primary", "replica", "bytes", "quota", "refused", "ip"
    )?;
    for n in &nodes {
        let pred = n.pred.map_or("-".to_string(), |p| p.id.short());
        let family = if n.node.addr.is_ipv4() { "v4" } else { "v6" };
        writeln!(
            out,
            "{:<10} {:<w$} {:<10} {:>8} {:>8} {:>10} {:>5.1}% {:>8} {:>3}",
            n.node.id.short(),
            n.node.addr.to_string(),
            pred,
            n.values_primary,
            n.values_replica,
            n.bytes_stored,
            100.0 * n.bytes_stored as f64 / n.bytes_max.max(1) as f64,
            n.refusals,
            family
        )?;
    }
    writeln!(out, "{} nodes", nodes.len())?;
    write_near_full(&mut out, &nodes)?;
    write_balance(&mut out, &nodes)?;
    Ok(ExitCode::SUCCESS)
}

/// The nodes whose stores are nearly full (they invite nodes into their ranges when rebalancing).
fn write_near_full(out: &mut impl Write, nodes: &[client::NodeInfo]) -> std::io::Result<()> {
    let full: Vec<String> = nodes
        .iter()
        .filter(|n| n.bytes_stored * 100 >= n.bytes_max * u64::from(balance::FULL_PERCENT))
        .map(|n| n.node.addr.to_string())
        .collect();
    if full.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "near full ({}% of the quota or more): {}",
        balance::FULL_PERCENT,
        full.join(", ")
    )
}

/// How evenly the ring spreads its load: per node, relative to the mean, the range of ids it is
/// responsible for, the values it holds as that node, and the bytes it stores.
fn write_balance(out: &mut impl Write, nodes: &[client::NodeInfo]) -> std::io::Result<()> {
    let mut ids: Vec<Id> = nodes.iter().map(|n| n.node.id).collect();
    ids.sort();
    let rows = [
        ("range", Balance::of(&balance::ring_arcs(&ids))),
        (
            "primary values",
            Balance::of_counts(
                &nodes
                    .iter()
                    .map(|n| n.values_primary as u64)
                    .collect::<Vec<_>>(),
            ),
        ),
        (
            "bytes stored",
            Balance::of_counts(&nodes.iter().map(|n| n.bytes_stored).collect::<Vec<_>>()),
        ),
    ];
    for (what, b) in rows {
        if let Some(b) = b {
            writeln!(
                out,
                "{what:<15} per node / mean: 1st percentile {:.2}, 99th {:.2}, max {:.2}; {} of {} nodes hold none",
                b.p1, b.p99, b.max, b.empty, b.nodes
            )?;
        }
    }
    Ok(())
}

const TESTNET_HELP: &str = "voidphone-dht testnet --nodes N [--threads T]   run N joined nodes on 127.0.0.1 until Ctrl-C\n  (a thread per node, or all of them sharing T threads)";

fn testnet(p: lexopt::Parser) -> Res {
    let Some(args) = testnet_args(p)? else {
        println!("{TESTNET_HELP}");
        return Ok(ExitCode::SUCCESS);
    };
    init_logging(log::LevelFilter::Info, args.verbosity);
    let started = std::time::Instant::now();
    let nodes = if args.threads == 0 {
        voidphone_dht::testnet::start(args.nodes, seed())?
    } else {
        voidphone_dht::testnet::start_shared(args.nodes, seed(), args.threads)?
    };
    print_testnet_nodes(&nodes);
    match voidphone_dht::testnet::wait_for_ring(&nodes, Duration::from_secs(30)) {
        Ok(()) => println!(
            "ring of {} formed in {} ms; try: voidphone-dht ring --p2p {}",
            args.nodes,
            started.elapsed().as_millis(),
            nodes[0].p2p
        ),
        Err(e) => println!("ring not formed yet: {e}"),
    }
    println!("Ctrl-C stops the testnet.");
    std::io::stdout().flush()?;
    wait_for_signal()?;
    drop::<Vec<RunningNode>>(nodes);
    Ok(ExitCode::SUCCESS)
}

/// What `testnet`'s command line asks for.
struct TestnetArgs {
    /// Nodes to start, 1 to 512.
    nodes: usize,
    /// Threads all nodes share; 0 gives every node a thread of its own.
    threads: usize,
    /// Log levels above (positive) or below `info`; the testnet starts one below, at `warn`.
    verbosity: i32,
}

fn testnet_args(mut p: lexopt::Parser) -> Parsed<TestnetArgs> {
    let mut args = TestnetArgs {
        nodes: 8,
        threads: 0,
        verbosity: -1,
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("nodes") | Short('n') => args.nodes = p.value()?.parse()?,
            Long("threads") => args.threads = p.value()?.parse()?,
            Short('v') | Long("verbose") => args.verbosity += 1,
            Short('h') | Long("help") => return Ok(None),
            _ => return Err(arg.unexpected().into()),
        }
    }
    if !(1..=512).contains(&args.nodes) {
        return Err("--nodes takes 1 to 512".into());
    }
    Ok(Some(args))
}

fn print_testnet_nodes(nodes: &[RunningNode]) {
    println!("{:<4} {:<10} {:<22} {:<22}", "#", "id", "api", "p2p");
    for (i, n) in nodes.iter().enumerate() {
        println!(
            "{:<4} {:<10} {:<22} {:<22}",
            i,
            n.id.short(),
            n.api.to_string(),
            n.p2p.to_string()
        );
    }
}

fn wait_for_signal() -> std::io::Result<()> {
    let (mut read, write) = std::os::unix::net::UnixStream::pair()?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGINT, write.try_clone()?)?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGTERM, write)?;
    let mut b = [0u8; 1];
    read.read_exact(&mut b)
}

const SIM_HELP: &str = "voidphone-dht sim [--nodes N] [--seed S] [--probes P] [--loss 0.01]   simulated ring: convergence and path lengths";

fn simulate(p: lexopt::Parser) -> Res {
    use voidphone_dht::sim::{NetConfig, Sim};
    let Some(args) = sim_args(p)? else {
        println!("{SIM_HELP}");
        return Ok(ExitCode::SUCCESS);
    };
    let (n, seed) = (args.nodes, args.seed);
    let mut sim = Sim::new(
        seed,
        Sim::default_node_config(),
        NetConfig {
            loss: args.loss,
            ..NetConfig::default()
        },
    );
    sim.check_every_event = n <= 64;
    let started = std::time::Instant::now();
    sim.grow(n, 5_000);
    let took = sim
        .converge(1_800_000)
        .map_err(|e| format!("seed {seed}: no convergence: {e}"))?;
    sim.run_for(30_000);
    let mut paths = sim
        .probe_random(args.probes)
        .map_err(|e| format!("seed {seed}: {e}"))?;
    paths.sort();
    let mean = paths.iter().map(|p| *p as f64).sum::<f64>() / paths.len() as f64;
    let pct = |q: f64| paths[((paths.len() as f64 * q) as usize).min(paths.len() - 1)];
    println!(
        "nodes {n} seed {seed}: converged {:.1} s (simulated) after the last join; path length mean {mean:.2} p1 {} p99 {} (½·log2 N = {:.2}); {} events, trace {:016x}, {:.1} s wall",
        took as f64 / 1000.0,
        pct(0.01),
        pct(0.99),
        0.5 * (n as f64).log2(),
        sim.events,
        sim.trace_hash(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// What `sim`'s command line asks for.
struct SimArgs {
    /// Nodes in the simulated ring.
    nodes: usize,
    /// Seeds the whole simulation; the same seed replays the same run.
    seed: u64,
    /// Random keys looked up from random nodes to measure path lengths.
    probes: usize,
    /// Chance that the simulated network loses a message.
    loss: f64,
}

fn sim_args(mut p: lexopt::Parser) -> Parsed<SimArgs> {
    let mut args = SimArgs {
        nodes: 256,
        seed: 1,
        probes: 2000,
        loss: 0.0,
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("nodes") | Short('n') => args.nodes = p.value()?.parse()?,
            Long("seed") => args.seed = p.value()?.parse()?,
            Long("probes") => args.probes = p.value()?.parse()?,
            Long("loss") => args.loss = p.value()?.parse()?,
            Short('h') | Long("help") => return Ok(None),
            _ => return Err(arg.unexpected().into()),
        }
    }
    Ok(Some(args))
}

const BENCH_HELP: &str = "voidphone-dht bench --api ADDR[,ADDR...] --conns C --pipeline P --secs S --op get|put [--keys K] [--vsize BYTES]\n  prints ops/s, p50 and p99 latency of a pipelined round, and misses. Run --op put first to load the keys.";

/// `bench`: a load generator in the spirit of redis-benchmark (src/load.rs: one thread, one poll
/// loop over every connection; each round writes `pipeline` requests and reads the replies, and a
/// round of PUTs ends with one GET that confirms them).
fn bench(p: lexopt::Parser) -> Res {
    let Some(BenchArgs { spec, secs }) = bench_args(p)? else {
        println!("{BENCH_HELP}");
        return Ok(ExitCode::SUCCESS);
    };
    let report = voidphone_dht::load::run(&spec)?;
    println!(
        "op {} conns {} pipeline {} nodes {}: {:.0} ops/s, round p50 {} us, p99 {} us, misses {}",
        spec.op.name(),
        spec.conns,
        spec.pipeline,
        spec.apis.len(),
        report.ops as f64 / secs,
        report.round_us(0.5),
        report.round_us(0.99),
        report.misses
    );
    Ok(ExitCode::SUCCESS)
}

/// What `bench`'s command line asks for: the load, and its length in seconds as given, which
/// ops/s divides by.
struct BenchArgs {
    spec: LoadSpec,
    secs: f64,
}

/// Reads every option before judging any, so an unknown option is reported before a bad value.
fn bench_args(mut p: lexopt::Parser) -> Parsed<BenchArgs> {
    let (mut apis, mut conns, mut pipeline, mut secs) =
        (vec![DEFAULT_API.parse()?], 16usize, 1usize, 5.0f64);
    let (mut op, mut keys, mut vsize) = ("get".to_string(), 10_000u64, 100usize);
    while let Some(arg) = p.next()? {
        match arg {
            Long("api") => apis = api_list(&mut p)?,
            Long("conns") => conns = p.value()?.parse()?,
            Long("pipeline") => pipeline = p.value()?.parse()?,
            Long("secs") => secs = p.value()?.parse()?,
            Long("op") => op = p.value()?.parse()?,
            Long("keys") => keys = p.value()?.parse()?,
            Long("vsize") => vsize = p.value()?.parse()?,
            Short('h') | Long("help") => return Ok(None),
            _ => return Err(arg.unexpected().into()),
        }
    }
    let op = Op::from_name(&op).ok_or("--op takes get or put")?;
    if conns == 0
        || pipeline == 0
        || keys == 0
        || vsize == 0
        || vsize > voidphone_dht::wire::api::VALUE_BYTES_MAX
    {
        return Err("--conns, --pipeline, --keys must be positive and --vsize 1..65495".into());
    }
    let spec = LoadSpec {
        conns,
        pipeline,
        duration: Duration::from_secs_f64(secs),
        op,
        keys,
        value_bytes: vsize,
        apis,
    };
    Ok(Some(BenchArgs { spec, secs }))
}

/// `--api A,B`: the nodes the connections are spread over.
fn api_list(p: &mut lexopt::Parser) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error>> {
    let v: String = p.value()?.parse()?;
    v.split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| format!("--api: bad address list {v:?}").into())
}
