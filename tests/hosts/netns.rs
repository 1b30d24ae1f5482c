//! A lab of Linux network namespaces for tests/hosts.rs: one bridge (or more) in the root namespace,
//! one namespace per host with a veth into a bridge and its own addresses, and the built binary
//! running inside each namespace. Traffic stays inside: the namespaces have no default route, the
//! bridges have no address, and the test talks to a node from inside that node's namespace (a
//! thread that entered it with setns(2), or `ip netns exec`).
//!
//! Everything the lab makes is named `vdht-s<scenario>…`; a [`Lab`] removes it all when dropped
//! (panics included), and a new lab first removes whatever an earlier run left under [`PREFIX`].
//! Labs run one at a time, also across processes (a lock file): a second `cargo test` waits
//! instead of deleting the first one's namespaces as leftovers.
#![allow(dead_code)]

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use voidphone_dht::client::{self, ApiClient, NodeInfo};
use voidphone_dht::id::Id;

pub const BIN: &str = env!("CARGO_BIN_EXE_voidphone-dht");
/// Every namespace, bridge and veth the harness makes starts with this.
pub const PREFIX: &str = "vdht-";
pub const API_PORT: u16 = 7401;
pub const P2P_PORT: u16 = 7402;

/// The fast maintenance timers of the loopback tests (src/testnet.rs), so rings form in seconds.
pub const FAST_TIMERS: &str = "stabilize_interval_ms = 200\nfix_fingers_interval_ms = 100\n\
    check_predecessor_interval_ms = 400\nrequest_timeout_ms = 500\nrepair_interval_ms = 1000\n";

/// Which addresses a host's interface gets (every namespace also has its own `lo`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Family {
    V4,
    V6,
    /// Both; the node advertises (and listens on) one of them: `speaks`.
    Dual {
        speaks_v6: bool,
    },
}

pub struct Host {
    pub ns: String,
    /// The veth end in the root namespace, a port of one of the lab's bridges.
    pub veth: String,
    pub family: Family,
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    pub node: Option<Node>,
}

/// A running `voidphone-dht` process inside a host's namespace.
pub struct Node {
    child: Child,
    pub id: Id,
    pub api: SocketAddr,
    pub p2p: SocketAddr,
    pub log: PathBuf,
}

pub struct Lab {
    pub scenario: u8,
    pub dir: PathBuf,
    pub hosts: Vec<Host>,
    pub bridges: Vec<String>,
    torn_down: bool,
    _file_lock: File,
    _serial: MutexGuard<'static, ()>,
}

/// Why the lab cannot run here (not root, no `ip`, no namespaces), or `None` when it can.
pub fn unavailable() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        })
        .unwrap_or_default();
    if uid != "0" {
        return Some(format!("needs root (effective uid {uid:?})"));
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => {}
        _ => return Some("needs the `ip` command (iproute2)".into()),
    }
    if let Err(e) = ip(&["netns", "list"]) {
        return Some(format!("`ip netns` does not work: {e}"));
    }
    None
}

/// Runs `ip ARGS`; its stdout, or stderr as the error.
pub fn ip(args: &[&str]) -> Result<String, String> {
    run("ip", args)
}

pub fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd} {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(result: Result<String, String>) -> String {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `f` on a thread inside namespace `ns` (setns(2)): sockets it opens live there, and keep
/// doing so when handed back to the caller's thread.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        let t = s.spawn(|| {
            let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns only changes which network namespace this thread's new sockets are
            // made in; the descriptor is open for the whole call.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {ns}: {}", io::Error::last_os_error());
            f()
        });
        t.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// Polls `cond` every 50 ms for at most `within`: how long it took to hold, or `None`.
pub fn poll_until(within: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if cond() {
            return Some(started.elapsed());
        }
        if started.elapsed() >= within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The names of `PREFIX`ed namespaces and links the machine has now.
pub fn leftovers(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect();
    names.extend(
        ip(&["-o", "link", "show"])
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n))
            .filter(|n| n.starts_with(prefix))
            .map(str::to_owned),
    );
    names
}

/// Kills every process in namespace `ns` and deletes it.
fn delete_ns(ns: &str) {
    for pid in ip(&["netns", "pids", ns])
        .unwrap_or_default()
        .split_whitespace()
    {
        let _ = run("kill", &["-KILL", pid]);
    }
    let _ = ip(&["netns", "del", ns]);
}

fn remove_everything(prefix: &str) {
    for name in leftovers(prefix) {
        if ip(&["netns", "pids", &name]).is_ok() {
            delete_ns(&name);
        } else {
            let _ = ip(&["link", "del", &name]);
        }
    }
}

static SERIAL: Mutex<()> = Mutex::new(());

impl Lab {
    /// A lab for scenario `scenario` (its addresses are 10.77.<scenario>.x and fd77:<scenario>::),
    /// with `bridges` bridges; `None` (and the reason printed) where namespaces are not available.
    pub fn new(scenario: u8, bridges: usize) -> Option<Lab> {
        if let Some(why) = unavailable() {
            eprintln!("SKIPPED: multi-host test: {why}");
            return None;
        }
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let lock_path = std::env::temp_dir().join("vdht-hosts.lock");
        let file_lock = File::create(&lock_path).expect("lock file");
        file_lock.lock().expect("lock the lab");
        remove_everything(PREFIX);
        // Logs of an earlier failed run of this scenario go; this run's stay if it fails.
        let tmp = std::env::temp_dir();
        let mine = format!("vdht-s{scenario}-");
        for old in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            if old.file_name().to_string_lossy().starts_with(&mine) {
                let _ = std::fs::remove_dir_all(old.path());
            }
        }
        let dir = tmp.join(format!("{mine}{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("lab dir");
        let mut lab = Lab {
            scenario,
            dir,
            hosts: Vec::new(),
            bridges: Vec::new(),
            torn_down: false,
            _file_lock: file_lock,
            _serial: serial,
        };
        for _ in 0..bridges {
            lab.add_bridge();
        }
        Some(lab)
    }

    fn prefix(&self) -> String {
        format!("{PREFIX}s{}", self.scenario)
    }

    fn add_bridge(&mut self) {
        let name = format!("{}b{}", self.prefix(), self.bridges.len());
        must(ip(&["link", "add", &name, "type", "bridge"]));
        quiet_link(&name);
        must(ip(&["link", "set", &name, "up"]));
        self.bridges.push(name);
    }

    /// Host `i` (its index is its number in names and addresses), on bridge 0: 10.77.<scenario>.
    /// <i+1>/24 and fd77:<scenario>:0:<i+1>::1/48 (each host a /64 of its own).
    pub fn add_host(&mut self, family: Family) -> usize {
        let v6 = Ipv6Addr::new(
            0xfd77,
            self.scenario as u16,
            0,
            self.hosts.len() as u16 + 1,
            0,
            0,
            0,
            1,
        );
        self.add_host_at(family, v6)
    }

    /// An IPv6-only host in host `other`'s /64 (a second machine on the same LAN prefix).
    pub fn add_host_sharing_64(&mut self, other: usize) -> usize {
        let base = u128::from(self.hosts[other].v6.expect("an IPv6 host"));
        let v6 = Ipv6Addr::from(base + 1 + self.hosts.len() as u128);
        self.add_host_at(Family::V6, v6)
    }

    fn add_host_at(&mut self, family: Family, v6_addr: Ipv6Addr) -> usize {
        let i = self.hosts.len();
        let s = self.scenario;
        let ns = format!("{}h{i}", self.prefix());
        let veth = format!("{}v{i}", self.prefix());
        must(ip(&["netns", "add", &ns]));
        must(ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]));
        quiet_link(&veth);
        must(ip(&[
            "link",
            "set",
            &veth,
            "master",
            &self.bridges[0],
            "up",
        ]));
        must(ip(&["-n", &ns, "link", "set", "lo", "up"]));
        must(ip(&["-n", &ns, "link", "set", "eth0", "up"]));
        let has_v4 = !matches!(family, Family::V6);
        let has_v6 = !matches!(family, Family::V4);
        let v4 = has_v4.then(|| Ipv4Addr::new(10, 77, s, i as u8 + 1));
        // A node's id counts an IPv6 address by its /64: hosts get a /64 each, all of them on
        // the link through the /48.
        let v6 = has_v6.then_some(v6_addr);
        let mut host = Host {
            ns,
            veth,
            family,
            v4: None,
            v6: None,
            node: None,
        };
        if let Some(a) = v4 {
            host.set_v4(a);
        }
        if let Some(a) = v6 {
            must(ip(&[
                "-n",
                &host.ns,
                "addr",
                "add",
                &format!("{a}/48"),
                "dev",
                "eth0",
                "nodad",
            ]));
            host.v6 = Some(a);
        }
        self.hosts.push(host);
        i
    }

    /// Starts host `i`'s node on a config file (its P2P address, API on its own `lo`, bootstrap,
    /// `extra` lines for `[dht]`), and waits for the line it prints once its ports are bound.
    pub fn start(&mut self, i: usize, bootstrap: &[SocketAddr], extra: &str) -> &Node {
        let h = &self.hosts[i];
        let p2p = SocketAddr::new(h.speaks(), P2P_PORT);
        let api = if h.v4.is_some() {
            SocketAddr::from(([127, 0, 0, 1], API_PORT))
        } else {
            SocketAddr::from((Ipv6Addr::LOCALHOST, API_PORT))
        };
        let boot: Vec<String> = bootstrap.iter().map(|b| format!("\"{b}\"")).collect();
        let cfg = format!(
            "[dht]\napi_address = \"{api}\"\np2p_address = \"{p2p}\"\nbootstrap = [{}]\n\
             {FAST_TIMERS}{extra}",
            boot.join(", ")
        );
        let cfg_path = self.dir.join(format!("h{i}.toml"));
        std::fs::write(&cfg_path, cfg).expect("write config");
        let log = self.dir.join(format!("h{i}.log"));
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &h.ns, BIN, "-c"])
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        // SAFETY: prctl is async-signal-safe and touches only the child. The node dies with the
        // thread that started it, so an interrupted test (Ctrl-C, SIGKILL: no Drop) leaves no
        // node running; `ip netns exec` execs the node, which keeps the setting.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn ip netns exec");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = |w: &str| words.iter().position(|x| *x == w).map(|p| words[p + 1]);
        let (Some(id), Some(_), Some(_)) = (at("id"), at("api"), at("p2p")) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "host {i}: node did not start ({line:?}); log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let id = Id::from_hex(id).expect("id in hex");
        let node = Node {
            child,
            id,
            api,
            p2p,
            log,
        };
        self.hosts[i].node = Some(node);
        self.hosts[i].node.as_ref().unwrap()
    }

    /// SIGKILL host `i`'s node (a crash).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut n) = self.hosts[i].node.take() {
            let _ = n.child.kill();
            let _ = n.child.wait();
        }
    }

    /// SIGTERM host `i`'s node (a graceful leave: it hands its values on) and waits until it
    /// has exited: how long that took. SIGKILL after `within`.
    pub fn stop(&mut self, i: usize, within: Duration) -> Duration {
        let started = Instant::now();
        let Some(mut n) = self.hosts[i].node.take() else {
            return Duration::ZERO;
        };
        let _ = run("kill", &["-TERM", &n.child.id().to_string()]);
        let exited = poll_until(within, || matches!(n.child.try_wait(), Ok(Some(_))));
        if exited.is_none() {
            let _ = n.child.kill();
            let _ = n.child.wait();
        }
        started.elapsed()
    }

    pub fn node(&self, i: usize) -> &Node {
        self.hosts[i]
            .node
            .as_ref()
            .unwrap_or_else(|| panic!("host {i} runs no node"))
    }

    pub fn p2p(&self, i: usize) -> SocketAddr {
        self.node(i).p2p
    }

    /// An API client connected from inside host `i` to its node.
    pub fn client(&self, i: usize) -> ApiClient {
        let api = self.node(i).api;
        in_ns(&self.hosts[i].ns, || ApiClient::connect(api))
            .unwrap_or_else(|e| panic!("host {i}: API {api}: {e}"))
    }

    /// Host `i`'s node's INFO, asked from inside its namespace.
    pub fn info(&self, i: usize) -> io::Result<NodeInfo> {
        let p2p = self.node(i).p2p;
        in_ns(&self.hosts[i].ns, || {
            client::node_info(p2p, Duration::from_secs(1))
        })
    }

    /// The ring walked from host `i` along successors (the library's walk).
    pub fn walk(&self, i: usize) -> Vec<NodeInfo> {
        let p2p = self.node(i).p2p;
        in_ns(&self.hosts[i].ns, || {
            client::walk_ring(p2p, 64, Duration::from_secs(1))
        })
        .unwrap_or_default()
    }

    /// `voidphone-dht ring --p2p <its address>` run inside host `i`: the P2P addresses it lists
    /// with the family it names for each (`v4`, `v6`), and the node count it prints.
    pub fn ring_cli(&self, i: usize) -> (Vec<(SocketAddr, String)>, usize) {
        let p2p = self.node(i).p2p.to_string();
        let out = must(ip(&[
            "netns",
            "exec",
            &self.hosts[i].ns,
            BIN,
            "ring",
            "--p2p",
            &p2p,
        ]));
        // The node lines come between the header and "N nodes" (other lines may follow).
        let listed = out
            .lines()
            .skip(1)
            .take_while(|l| !l.ends_with(" nodes"))
            .filter_map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                let addr = words.get(1)?.parse().ok()?;
                Some((addr, words.last()?.to_string()))
            })
            .collect();
        let count = out
            .lines()
            .find_map(|l| l.strip_suffix(" nodes")?.parse().ok())
            .unwrap_or_else(|| panic!("host {i}: ring output without a count:\n{out}"));
        (listed, count)
    }

    /// Moves host `i`'s veth to bridge `b`: hosts on different bridges cannot reach each other.
    pub fn move_to_bridge(&mut self, i: usize, b: usize) {
        while self.bridges.len() <= b {
            self.add_bridge();
        }
        must(ip(&[
            "link",
            "set",
            &self.hosts[i].veth,
            "master",
            &self.bridges[b],
        ]));
    }

    /// Limits host `i`'s link both ways with a token bucket (`tbf rate … burst … latency …`).
    pub fn limit(&self, i: usize, rate: &str, burst: &str, latency: &str) {
        let tbf = [
            "root", "tbf", "rate", rate, "burst", burst, "latency", latency,
        ];
        let h = &self.hosts[i];
        let mut outer = vec!["qdisc", "add", "dev", &h.veth];
        outer.extend(tbf);
        must(run("tc", &outer));
        let mut inner = vec!["-n", &h.ns, "qdisc", "add", "dev", "eth0"];
        inner.extend(tbf);
        must(run("tc", &inner));
    }

    /// Removes host `i`'s bandwidth limits.
    pub fn unlimit(&self, i: usize) {
        let h = &self.hosts[i];
        must(run("tc", &["qdisc", "del", "dev", &h.veth, "root"]));
        must(run(
            "tc",
            &["-n", &h.ns, "qdisc", "del", "dev", "eth0", "root"],
        ));
    }

    /// Does host `i`'s node log contain `text`?
    pub fn log_has(&self, i: usize, text: &str) -> bool {
        std::fs::read_to_string(&self.node(i).log).is_ok_and(|l| l.contains(text))
    }

    /// Gives host `i` a new IPv4 address in place of its old one (the node must be stopped).
    pub fn readdress_v4(&mut self, i: usize, new: Ipv4Addr) {
        let h = &mut self.hosts[i];
        if let Some(old) = h.v4 {
            must(ip(&[
                "-n",
                &h.ns,
                "addr",
                "del",
                &format!("{old}/24"),
                "dev",
                "eth0",
            ]));
        }
        h.set_v4(new);
    }

    /// Stops every process and deletes every namespace, veth and bridge of the lab, then checks
    /// that `ip netns list` and `ip link` show nothing of it.
    pub fn finish(mut self) {
        self.teardown();
        let left = leftovers(&self.prefix());
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        for i in 0..self.hosts.len() {
            self.kill(i);
        }
        for h in &self.hosts {
            delete_ns(&h.ns); // its veth pair goes with it
        }
        for b in &self.bridges {
            let _ = ip(&["link", "del", b]);
        }
        remove_everything(&self.prefix());
        if std::thread::panicking() || std::env::var_os("VDHT_KEEP_LOGS").is_some() {
            eprintln!("node logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

impl Host {
    /// The address the node advertises and listens on.
    pub fn speaks(&self) -> IpAddr {
        match (self.family, self.v4, self.v6) {
            (Family::Dual { speaks_v6: true }, _, Some(a)) | (Family::V6, _, Some(a)) => a.into(),
            (_, Some(a), _) => a.into(),
            _ => panic!("{}: no address to speak on", self.ns),
        }
    }

    fn set_v4(&mut self, a: Ipv4Addr) {
        must(ip(&[
            "-n",
            &self.ns,
            "addr",
            "add",
            &format!("{a}/24"),
            "dev",
            "eth0",
        ]));
        self.v4 = Some(a);
    }
}

/// A link in the root namespace that sends nothing of its own: no IPv6 link-local address (no
/// router or neighbour solicitations from the root namespace into the lab).
fn quiet_link(name: &str) {
    let _ = ip(&["link", "set", "dev", name, "addrgenmode", "none"]);
}
