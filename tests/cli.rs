//! The built binary: a node from a config file on port 0, the put/get/ring subcommands against it,
//! configuration errors, and a clean stop on SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_voidphone-dht");

fn temp_config(name: &str, body: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vpdht-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("node.toml");
    std::fs::write(&path, body).unwrap();
    path
}

/// Starts the binary and reads the addresses it prints: (child, api, p2p).
fn start_node(config: &std::path::Path) -> (Child, String, String) {
    let mut child = Command::new(BIN)
        .args(["-c", config.to_str().unwrap(), "-q"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = |w: &str| words[words.iter().position(|x| *x == w).unwrap() + 1].to_string();
    (child, at("api"), at("p2p"))
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> (i32, Vec<u8>, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        input.write_all(data).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn node_and_client_subcommands() {
    let cfg = temp_config(
        "run",
        "[dht]\napi_address = \"127.0.0.1:0\"\np2p_address = \"127.0.0.1:0\"\n",
    );
    let (mut node, api, p2p) = start_node(&cfg);

    let (code, _, err) = run(
        &[
            "put",
            "--api",
            &api,
            "--ttl",
            "60",
            "greeting",
            "hello world",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = run(&["get", "--api", &api, "greeting"], None);
    assert_eq!((code, out.as_slice()), (0, &b"hello world"[..]));

    // A 64-hex-digit key is the raw key; VALUE '-' reads stdin.
    let hex = "0f".repeat(32);
    assert_eq!(
        run(&["put", "--api", &api, &hex, "-"], Some(b"from stdin")).0,
        0
    );
    let (code, out, _) = run(&["get", "--api", &api, &hex], None);
    assert_eq!((code, out.as_slice()), (0, &b"from stdin"[..]));

    let (code, out, _) = run(&["get", "--api", &api, "no such key"], None);
    assert_eq!((code, out.len()), (1, 0));

    let (code, out, _) = run(&["ring", "--p2p", &p2p], None);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(code, 0);
    assert!(text.contains(&p2p) && text.contains("1 nodes"), "{text}");

    // The load generator: PUT 200 keys, then GET them all back (no misses), figures printed.
    let load = |op: &str| {
        let (code, out, err) = run(
            &[
                "bench",
                "--api",
                &api,
                "--op",
                op,
                "--keys",
                "200",
                "--conns",
                "4",
                "--pipeline",
                "8",
                "--secs",
                "0.5",
            ],
            None,
        );
        assert_eq!(code, 0, "{err}");
        String::from_utf8(out).unwrap()
    };
    load("put");
    let text = load("get");
    assert!(
        text.contains("ops/s") && text.contains("misses 0"),
        "{text}"
    );
    let ops: f64 = text
        .split(": ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ops > 0.0, "{text}");

    // An unreachable node is an error (exit 2), not "not found".
    assert_eq!(run(&["get", "--api", "127.0.0.1:1", "x"], None).0, 2);

    // SIGTERM stops the node cleanly.
    Command::new("kill")
        .args(["-TERM", &node.id().to_string()])
        .status()
        .unwrap();
    let mut status = None;
    for _ in 0..250 {
        if let Some(s) = node.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = status.expect("node stopped within 5 s of SIGTERM");
    assert!(status.success(), "{status}");
}

#[test]
fn configuration_errors_exit_2_naming_file_and_key() {
    for (body, key, expected) in [
        (
            "[dht]\nsuccessors = \"many\"\n",
            "[dht] successors",
            "expected an integer",
        ),
        (
            "[dht]\napi_adress = \"127.0.0.1:1\"\n",
            "[dht] api_adress",
            "unknown key",
        ),
        (
            "[dht]\np2p_address = \"nowhere\"\n",
            "[dht] p2p_address",
            "expected IPv4:port",
        ),
    ] {
        let cfg = temp_config(&format!("bad{}", key.len()), body);
        let (code, _, err) = run(&["-c", cfg.to_str().unwrap()], None);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains(cfg.to_str().unwrap()) && err.contains(key) && err.contains(expected),
            "{err}"
        );
    }
    let (code, _, err) = run(&["-c", "/nonexistent/node.toml"], None);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn help_works_for_every_subcommand() {
    for sub in [
        &["--help"][..],
        &["put", "--help"],
        &["get", "--help"],
        &["ring", "--help"],
        &["testnet", "--help"],
    ] {
        let (code, out, _) = run(sub, None);
        assert_eq!(code, 0);
        assert!(!out.is_empty());
    }
}
