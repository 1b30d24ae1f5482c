//! `node.toml` → a validated [`Config`]. Root keys are VoidPhone-global (`hostkey`), the `[dht]` table
//! is ours, every other table belongs to another module and is ignored. Every tuning key is optional;
//! its default is in [`Config::default`] and documented in node.toml and README.md.

use crate::id::Id;
use log::LevelFilter;
use serde::de::DeserializeOwned;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

/// How many of a key's holders a GET asks before it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadQuorum {
    /// The first holder that has the value.
    One,
    /// Every holder; the value most of them hold at the highest version wins.
    Majority,
}

/// The core's settings (the sans-IO `Node`).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    /// Pinned ring id, for the simulator and tests only: peers that check identities refuse it
    /// unless it is what the address and slot give. By default the id is
    /// `SHA-256(IP ‖ id_slot)` ([`crate::id::Id::of_ip_slot`]).
    pub node_id: Option<Id>,
    /// Which of its IP's positions this node takes (below `id_slots_per_ip`). `None` (the
    /// default): a joining node looks up where each of its slot ids would land and takes the one
    /// that best splits the range it falls in (load balance, issue 11); a new ring takes slot 0.
    pub id_slot: Option<u8>,
    /// Test only: take every id a peer claims as it is (simulations and unit tests with made-up
    /// ids). A real node checks every id against its address.
    pub test_trust_any_id: bool,
    /// Positions one IPv4 address (or IPv6 /64) may take on the ring.
    pub id_slots_per_ip: u8,
    /// How far a write's version (wall-clock ms) may lie ahead of our clock.
    pub clock_skew_max_ms: u64,
    /// The most of `storage_bytes_max` the writes of one peer IP may hold.
    pub storage_share_per_peer: f64,
    /// Stored bytes one peer IP may send us per second (token bucket, burst of two seconds).
    pub peer_store_bytes_per_s: usize,
    /// Requests one API client may have in flight at once.
    pub client_requests_max: usize,
    pub read_quorum: ReadQuorum,
    pub bootstrap: Vec<SocketAddr>,
    /// Successor list length r.
    pub successors: usize,
    pub replication_min: u8,
    pub replication_max: u8,
    pub ttl_max_s: u16,
    pub storage_bytes_max: usize,
    pub stabilize_interval_ms: u64,
    pub fix_fingers_interval_ms: u64,
    pub check_predecessor_interval_ms: u64,
    /// How long one P2P request may wait for its answer before the peer counts as unreachable.
    pub request_timeout_ms: u64,
    /// How long a client's GET may take in all (lookups and retries) before DHT FAILURE.
    pub lookup_timeout_ms: u64,
    /// Outstanding requests (lookups, P2P RPCs, client GETs) the node keeps at once.
    pub pending_requests_max: usize,
    /// How often the responsible node compares summaries with its replica holders.
    pub repair_interval_ms: u64,
    /// Rebalancing (issue 11): how often a node registers its spare slot ids and, with a range
    /// above the mean, invites a better-placed node; 0 (the default) switches it off: every move
    /// is a leave and a join, churn the ring pays for.
    pub rebalance_interval_ms: u64,
    /// Value bytes one repair round may push.
    pub repair_bytes_per_round_max: usize,
    /// Nodes remembered for one-hop routing (0 turns the cache off).
    pub routing_cache_max: usize,
}

/// The reactor's settings: sockets, buffers and connection limits.
#[derive(Clone, Debug, PartialEq)]
pub struct ReactorConfig {
    pub api_address: SocketAddr,
    pub p2p_address: SocketAddr,
    /// Open P2P connections (inbound and outbound).
    pub connections_max: usize,
    /// Open API connections: a budget of their own, so a full P2P side never locks out the
    /// modules on this host.
    pub api_connections_max: usize,
    /// Inbound P2P connections from one IP address (one IPv6 /64).
    pub p2p_connections_per_ip_max: usize,
    /// P2P messages one peer IP may send per second (token bucket, burst of two seconds); past it
    /// its connections are read no further until it has tokens again.
    pub peer_msgs_per_s: usize,
    /// A frame begun must be complete within this (a slow sender is disconnected).
    pub frame_deadline_ms: u64,
    /// Bytes waiting to be sent on one connection before the node stops reading from it.
    pub connection_buffer_bytes_max: usize,
    pub p2p_frame_bytes_max: usize,
    pub api_idle_timeout_s: u64,
    pub peer_idle_timeout_s: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub node: NodeConfig,
    pub reactor: ReactorConfig,
    pub log_level: LevelFilter,
}

/// The smallest P2P frame limit that still carries the largest API value with its fields.
pub const P2P_FRAME_BYTES_MIN: usize = 65_600;

impl Default for Config {
    fn default() -> Config {
        Config {
            node: NodeConfig {
                node_id: None,
                id_slot: None,
                test_trust_any_id: false,
                id_slots_per_ip: 8,
                clock_skew_max_ms: 60_000,
                storage_share_per_peer: 0.1,
                peer_store_bytes_per_s: 8 << 20,
                client_requests_max: 512,
                read_quorum: ReadQuorum::One,
                bootstrap: Vec::new(),
                successors: 8,
                replication_min: 3,
                replication_max: 8,
                ttl_max_s: 43_200,
                storage_bytes_max: 64 << 20,
                stabilize_interval_ms: 1000,
                fix_fingers_interval_ms: 500,
                check_predecessor_interval_ms: 2000,
                request_timeout_ms: 1000,
                lookup_timeout_ms: 5000,
                pending_requests_max: 10_000,
                repair_interval_ms: 10_000,
                rebalance_interval_ms: 0,
                repair_bytes_per_round_max: 1 << 20,
                routing_cache_max: 1024,
            },
            reactor: ReactorConfig {
                api_address: SocketAddr::from(([127, 0, 0, 1], 7401)),
                p2p_address: SocketAddr::from(([127, 0, 0, 1], 7402)),
                connections_max: 1024,
                api_connections_max: 256,
                p2p_connections_per_ip_max: 32,
                peer_msgs_per_s: 20_000,
                frame_deadline_ms: 10_000,
                connection_buffer_bytes_max: 256 << 10,
                p2p_frame_bytes_max: 70_000,
                api_idle_timeout_s: 600,
                peer_idle_timeout_s: 120,
            },
            log_level: LevelFilter::Info,
        }
    }
}

/// A configuration problem: which file, which key, what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.problem)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error at a root-level `key` of `file` (empty: the whole file).
    fn at(file: &str, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.into(),
            key: key.into(),
            problem: problem.into(),
        }
    }
}

const DHT_KEYS: &[&str] = &[
    "api_address",
    "p2p_address",
    "bootstrap",
    "node_id",
    "log_level",
    "successors",
    "replication_min",
    "replication_max",
    "ttl_max_s",
    "storage_bytes_max",
    "stabilize_interval_ms",
    "fix_fingers_interval_ms",
    "check_predecessor_interval_ms",
    "request_timeout_ms",
    "lookup_timeout_ms",
    "pending_requests_max",
    "repair_interval_ms",
    "rebalance_interval_ms",
    "repair_bytes_per_round_max",
    "routing_cache_max",
    "connections_max",
    "connection_buffer_bytes_max",
    "p2p_frame_bytes_max",
    "api_idle_timeout_s",
    "peer_idle_timeout_s",
    "id_slot",
    "id_slots_per_ip",
    "clock_skew_max_ms",
    "storage_share_per_peer",
    "peer_store_bytes_per_s",
    "client_requests_max",
    "read_quorum",
    "api_connections_max",
    "p2p_connections_per_ip_max",
    "peer_msgs_per_s",
    "frame_deadline_ms",
];

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::at(&file, "", format!("cannot read: {e}")))?;
        Config::parse(&text, &file)
    }

    /// Parses and validates TOML text; `file` names it in errors. Keys are read in a fixed order
    /// (that of `DHT_KEYS`), so a file with several bad keys always reports the same one.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let root: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::at(file, "", e.to_string()))?;
        check_hostkey(&root, file)?;
        let empty = toml::Table::new();
        let dht = dht_table(&root, file)?.unwrap_or(&empty);
        let s = Section { dht, file };
        s.reject_unknown_keys()?;
        let mut c = Config::default();
        let (n, r) = (&mut c.node, &mut c.reactor);
        r.api_address = s.addr("api_address", r.api_address)?;
        r.p2p_address = s.addr("p2p_address", r.p2p_address)?;
        n.bootstrap = s.addrs("bootstrap")?;
        n.node_id = s.node_id()?;
        c.log_level = s.log_level(c.log_level)?;
        s.read_ring_and_storage(n)?;
        s.read_maintenance_intervals(n)?;
        s.read_request_limits(n)?;
        s.read_repair_and_routing_cache(n)?;
        s.read_reactor_limits(r)?;
        s.read_identity_and_peer_limits(n)?;
        s.read_peer_connection_limits(r)?;
        Ok(c)
    }
}

/// `hostkey` is the one VoidPhone-global root key we look at: it must at least be a path.
fn check_hostkey(root: &toml::Table, file: &str) -> Result<(), ConfigError> {
    if root.get("hostkey").is_some_and(|h| !h.is_str()) {
        return Err(ConfigError::at(file, "hostkey", "expected a path (string)"));
    }
    Ok(())
}

/// Our `[dht]` table, `None` when the file has none (every key then takes its default).
fn dht_table<'a>(
    root: &'a toml::Table,
    file: &str,
) -> Result<Option<&'a toml::Table>, ConfigError> {
    match root.get("dht") {
        None => Ok(None),
        Some(toml::Value::Table(t)) => Ok(Some(t)),
        Some(_) => Err(ConfigError::at(file, "dht", "expected a table [dht]")),
    }
}

/// Typed access to the `[dht]` table with errors that name the key and the expectation.
struct Section<'a> {
    dht: &'a toml::Table,
    file: &'a str,
}

/// The `[dht]` keys in groups, read in `DHT_KEYS` order; a bound may be a key read before it
/// (`replication_max` ≥ `replication_min`, `lookup_timeout_ms` ≥ `request_timeout_ms`).
impl Section<'_> {
    /// A misspelt key would otherwise silently leave its default in place; the alphabetically
    /// first unknown key is the one reported.
    fn reject_unknown_keys(&self) -> Result<(), ConfigError> {
        let mut keys: Vec<&String> = self.dht.keys().collect();
        keys.sort();
        match keys.into_iter().find(|k| !DHT_KEYS.contains(&k.as_str())) {
            None => Ok(()),
            Some(k) => Err(self.err(k, format!("unknown key (known: {})", DHT_KEYS.join(", ")))),
        }
    }

    fn read_ring_and_storage(&self, n: &mut NodeConfig) -> Result<(), ConfigError> {
        n.successors = self.int("successors", n.successors, 1, 32)?;
        n.replication_min = self.int("replication_min", n.replication_min, 1, 32)?;
        n.replication_max =
            self.int("replication_max", n.replication_max, n.replication_min, 32)?;
        n.ttl_max_s = self.int("ttl_max_s", n.ttl_max_s, 1, u16::MAX)?;
        n.storage_bytes_max =
            self.int("storage_bytes_max", n.storage_bytes_max, 1 << 16, 1 << 40)?;
        Ok(())
    }

    fn read_maintenance_intervals(&self, n: &mut NodeConfig) -> Result<(), ConfigError> {
        n.stabilize_interval_ms = self.int(
            "stabilize_interval_ms",
            n.stabilize_interval_ms,
            10,
            3_600_000,
        )?;
        n.fix_fingers_interval_ms = self.int(
            "fix_fingers_interval_ms",
            n.fix_fingers_interval_ms,
            10,
            3_600_000,
        )?;
        n.check_predecessor_interval_ms = self.int(
            "check_predecessor_interval_ms",
            n.check_predecessor_interval_ms,
            10,
            3_600_000,
        )?;
        Ok(())
    }

    fn read_request_limits(&self, n: &mut NodeConfig) -> Result<(), ConfigError> {
        n.request_timeout_ms = self.int("request_timeout_ms", n.request_timeout_ms, 10, 600_000)?;
        n.lookup_timeout_ms = self.int(
            "lookup_timeout_ms",
            n.lookup_timeout_ms,
            n.request_timeout_ms,
            600_000,
        )?;
        n.pending_requests_max = self.int(
            "pending_requests_max",
            n.pending_requests_max,
            16,
            10_000_000,
        )?;
        Ok(())
    }

    fn read_repair_and_routing_cache(&self, n: &mut NodeConfig) -> Result<(), ConfigError> {
        n.repair_interval_ms =
            self.int("repair_interval_ms", n.repair_interval_ms, 100, 3_600_000)?;
        n.rebalance_interval_ms = self.int(
            "rebalance_interval_ms",
            n.rebalance_interval_ms,
            0,
            86_400_000,
        )?;
        n.repair_bytes_per_round_max = self.int(
            "repair_bytes_per_round_max",
            n.repair_bytes_per_round_max,
            1 << 16,
            1 << 34,
        )?;
        n.routing_cache_max = self.int("routing_cache_max", n.routing_cache_max, 0, 1_000_000)?;
        Ok(())
    }

    fn read_reactor_limits(&self, r: &mut ReactorConfig) -> Result<(), ConfigError> {
        r.connections_max = self.int("connections_max", r.connections_max, 4, 1_000_000)?;
        r.connection_buffer_bytes_max = self.int(
            "connection_buffer_bytes_max",
            r.connection_buffer_bytes_max,
            1 << 16,
            1 << 30,
        )?;
        r.p2p_frame_bytes_max = self.int(
            "p2p_frame_bytes_max",
            r.p2p_frame_bytes_max,
            P2P_FRAME_BYTES_MIN,
            1 << 24,
        )?;
        r.api_idle_timeout_s =
            self.int("api_idle_timeout_s", r.api_idle_timeout_s, 1, 86_400 * 7)?;
        r.peer_idle_timeout_s =
            self.int("peer_idle_timeout_s", r.peer_idle_timeout_s, 1, 86_400)?;
        Ok(())
    }
}

/// The limits that hold strangers to their share (issue 10).
impl Section<'_> {
    fn read_identity_and_peer_limits(&self, n: &mut NodeConfig) -> Result<(), ConfigError> {
        n.id_slots_per_ip = self.int("id_slots_per_ip", n.id_slots_per_ip, 1, 64)?;
        if self.dht.contains_key("id_slot") {
            n.id_slot = Some(self.int("id_slot", 0, 0, n.id_slots_per_ip - 1)?);
        }
        n.clock_skew_max_ms = self.int("clock_skew_max_ms", n.clock_skew_max_ms, 0, 86_400_000)?;
        n.storage_share_per_peer =
            self.fraction("storage_share_per_peer", n.storage_share_per_peer)?;
        n.peer_store_bytes_per_s = self.int(
            "peer_store_bytes_per_s",
            n.peer_store_bytes_per_s,
            1 << 16,
            1 << 40,
        )?;
        n.client_requests_max = self.int(
            "client_requests_max",
            n.client_requests_max,
            1,
            n.pending_requests_max,
        )?;
        n.read_quorum = self.read_quorum(n.read_quorum)?;
        Ok(())
    }

    fn read_peer_connection_limits(&self, r: &mut ReactorConfig) -> Result<(), ConfigError> {
        r.api_connections_max =
            self.int("api_connections_max", r.api_connections_max, 1, 1_000_000)?;
        r.p2p_connections_per_ip_max = self.int(
            "p2p_connections_per_ip_max",
            r.p2p_connections_per_ip_max,
            2,
            r.connections_max,
        )?;
        r.peer_msgs_per_s = self.int("peer_msgs_per_s", r.peer_msgs_per_s, 100, 100_000_000)?;
        r.frame_deadline_ms = self.int("frame_deadline_ms", r.frame_deadline_ms, 100, 600_000)?;
        Ok(())
    }

    /// A number in (0, 1].
    fn fraction(&self, key: &str, default: f64) -> Result<f64, ConfigError> {
        let expected = "a number above 0 and at most 1";
        match self.typed::<f64>(key, expected)? {
            None => Ok(default),
            Some(v) if v > 0.0 && v <= 1.0 => Ok(v),
            Some(v) => Err(self.err(key, format!("expected {expected}, got {v}"))),
        }
    }

    fn read_quorum(&self, default: ReadQuorum) -> Result<ReadQuorum, ConfigError> {
        let expected = "\"one\" or \"majority\"";
        match self.typed::<String>("read_quorum", expected)?.as_deref() {
            None => Ok(default),
            Some("one") => Ok(ReadQuorum::One),
            Some("majority") => Ok(ReadQuorum::Majority),
            Some(other) => {
                Err(self.err("read_quorum", format!("expected {expected}, got {other:?}")))
            }
        }
    }
}

impl Section<'_> {
    fn err(&self, key: &str, problem: String) -> ConfigError {
        ConfigError {
            file: self.file.into(),
            key: format!("[dht] {key}"),
            problem,
        }
    }

    fn typed<T: DeserializeOwned>(
        &self,
        key: &str,
        expected: &str,
    ) -> Result<Option<T>, ConfigError> {
        match self.dht.get(key) {
            None => Ok(None),
            Some(v) => T::deserialize(v.clone())
                .map(Some)
                .map_err(|_| self.err(key, format!("expected {expected}, got {v}"))),
        }
    }

    fn int<T>(&self, key: &str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: DeserializeOwned + PartialOrd + Copy + fmt::Display,
    {
        let expected = format!("an integer from {min} to {max}");
        match self.typed::<T>(key, &expected)? {
            None => Ok(default),
            Some(v) if v >= min && v <= max => Ok(v),
            Some(v) => Err(self.err(key, format!("expected {expected}, got {v}"))),
        }
    }

    fn parse_addr(&self, key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
        text.parse().map_err(|_| {
            self.err(
                key,
                format!("expected IPv4:port or [IPv6]:port, got {text:?}"),
            )
        })
    }

    fn addr(&self, key: &str, default: SocketAddr) -> Result<SocketAddr, ConfigError> {
        match self.typed::<String>(key, "an address string like \"127.0.0.1:7401\"")? {
            None => Ok(default),
            Some(text) => self.parse_addr(key, &text),
        }
    }

    fn addrs(&self, key: &str) -> Result<Vec<SocketAddr>, ConfigError> {
        let list = self
            .typed::<Vec<String>>(key, "a list of address strings")?
            .unwrap_or_default();
        list.iter().map(|a| self.parse_addr(key, a)).collect()
    }

    fn node_id(&self) -> Result<Option<Id>, ConfigError> {
        let Some(text) = self.typed::<String>("node_id", "64 hex digits")? else {
            return Ok(None);
        };
        Id::from_hex(&text)
            .map(Some)
            .ok_or_else(|| self.err("node_id", format!("expected 64 hex digits, got {text:?}")))
    }

    fn log_level(&self, default: LevelFilter) -> Result<LevelFilter, ConfigError> {
        let expected = "one of off, error, warn, info, debug, trace";
        match self.typed::<String>("log_level", expected)? {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| self.err("log_level", format!("expected {expected}, got {text:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "n.toml")
    }

    #[test]
    fn empty_file_gives_defaults_and_other_tables_are_ignored() {
        assert_eq!(parse("").unwrap(), Config::default());
        let c = parse("hostkey = \"k.pem\"\n[gossip]\nfoo = 1\n[dht]\nsuccessors = 4\n").unwrap();
        assert_eq!(c.node.successors, 4);
    }

    #[test]
    fn shipped_node_toml_is_valid() {
        let c = Config::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/node.toml"))).unwrap();
        assert_eq!(c.reactor.api_address, "127.0.0.1:7401".parse().unwrap());
        assert_eq!(c.reactor.p2p_address, "127.0.0.1:7402".parse().unwrap());
    }

    #[test]
    fn addresses_and_lists_parse() {
        let c = parse(
            "[dht]\napi_address = \"[::1]:9\"\nbootstrap = [\"127.0.0.1:1\", \"127.0.0.2:2\"]\n",
        )
        .unwrap();
        assert_eq!(c.reactor.api_address, "[::1]:9".parse().unwrap());
        assert_eq!(c.node.bootstrap.len(), 2);
    }

    /// Parsing `text` fails at `key` with a problem that mentions `problem`, and says the file.
    fn assert_error(text: &str, key: &str, problem: &str) {
        let e = parse(text).unwrap_err();
        assert_eq!(e.key, key, "{text}");
        assert!(e.problem.contains(problem), "{text}: {e}");
        assert!(e.to_string().starts_with("n.toml: "));
    }

    #[test]
    fn errors_name_unknown_keys_and_misplaced_root_keys() {
        assert_error("[dht]\nsuccesors = 3", "[dht] succesors", "unknown key");
        assert_error("dht = 3", "dht", "expected a table");
        assert_error("hostkey = 3", "hostkey", "expected a path");
    }

    #[test]
    fn errors_name_the_range_of_integers() {
        let successors = "[dht] successors";
        assert_error(
            "[dht]\nsuccessors = \"8\"",
            successors,
            "expected an integer from 1 to 32",
        );
        assert_error("[dht]\nsuccessors = 0", successors, "got 0");
        let replication = "[dht]\nreplication_min = 5\nreplication_max = 4";
        assert_error(replication, "[dht] replication_max", "from 5 to 32");
        let frame = "[dht]\np2p_frame_bytes_max = 1000";
        assert_error(frame, "[dht] p2p_frame_bytes_max", "from 65600");
    }

    #[test]
    fn errors_name_the_form_of_addresses() {
        let api = "[dht] api_address";
        assert_error(
            "[dht]\napi_address = \"localhost\"",
            api,
            "expected IPv4:port",
        );
        assert_error(
            "[dht]\napi_address = 7401",
            api,
            "expected an address string",
        );
        let bootstrap = "[dht] bootstrap";
        assert_error(
            "[dht]\nbootstrap = \"1.2.3.4:5\"",
            bootstrap,
            "expected a list",
        );
        assert_error(
            "[dht]\nbootstrap = [\"1.2.3.4\"]",
            bootstrap,
            "expected IPv4:port",
        );
    }

    #[test]
    fn errors_name_the_form_of_node_id_and_log_level() {
        assert_error("[dht]\nnode_id = \"abc\"", "[dht] node_id", "64 hex digits");
        assert_error(
            "[dht]\nlog_level = \"loud\"",
            "[dht] log_level",
            "one of off",
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let syntax = parse("[dht\n").unwrap_err();
        assert!(syntax.to_string().contains("line 1"), "{syntax}");
    }
}
