//! One node in-process on port 0, driven over real TCP through the API port (issue: the foundation).

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use common::{client, key, single_node, wait_until};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use voidphone_dht::client::ApiClient;
use voidphone_dht::wire::api::{ApiReply, ApiRequest, VALUE_BYTES_MAX};

#[test]
fn put_then_get_and_last_write_wins() {
    let node = single_node();
    let mut c = client(&node);
    c.put(key(1), b"first", 60, 1).unwrap();
    assert_eq!(c.get(key(1)).unwrap().as_deref(), Some(&b"first"[..]));
    c.put(key(1), b"second", 60, 1).unwrap();
    // Another connection sees the last write.
    assert_eq!(
        client(&node).get(key(1)).unwrap().as_deref(),
        Some(&b"second"[..])
    );
}

#[test]
fn get_of_a_missing_key_is_a_failure_naming_the_key() {
    let node = single_node();
    let mut c = client(&node);
    c.send(&ApiRequest::Get { key: key(42) }).unwrap();
    assert_eq!(c.recv().unwrap(), ApiReply::Failure { key: key(42) });
}

#[test]
fn two_hundred_pipelined_gets_on_one_connection_are_all_answered() {
    let node = single_node();
    let mut c = client(&node);
    for i in 0..100 {
        c.put(key(i), format!("v{i}").as_bytes(), 60, 1).unwrap();
    }
    let mut batch = BytesMut::new();
    for i in 0..200 {
        ApiRequest::Get { key: key(i) }.encode(&mut batch);
    }
    c.send_raw(&batch).unwrap();
    let mut found = 0;
    let mut missing = 0;
    for _ in 0..200 {
        match c.recv().unwrap() {
            ApiReply::Success { key: k, value } => {
                let i = (0..100).find(|i| key(*i) == k).expect("a key we stored");
                assert_eq!(value, Bytes::from(format!("v{i}")));
                found += 1;
            }
            ApiReply::Failure { .. } => missing += 1,
        }
    }
    assert_eq!((found, missing), (100, 100));
}

#[test]
fn fifty_clients_at_once() {
    let node = single_node();
    let api = node.api;
    let threads: Vec<_> = (0..50u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = ApiClient::connect(api).unwrap();
                for i in 0..20 {
                    let k = key(t * 1000 + i);
                    c.put(k, &k.0, 60, 1).unwrap();
                    assert_eq!(c.get(k).unwrap().as_deref(), Some(&k.0[..]));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn smallest_and_largest_values() {
    let node = single_node();
    let mut c = client(&node);
    let big: Vec<u8> = (0..VALUE_BYTES_MAX).map(|i| (i % 251) as u8).collect();
    c.put(key(1), b"x", 60, 1).unwrap();
    c.put(key(2), &big, 60, 1).unwrap();
    assert_eq!(c.get(key(1)).unwrap().as_deref(), Some(&b"x"[..]));
    assert_eq!(c.get(key(2)).unwrap().as_deref(), Some(&big[..]));
}

#[test]
fn a_one_second_ttl_expires() {
    let node = single_node();
    let mut c = client(&node);
    c.put(key(7), b"short-lived", 1, 1).unwrap();
    // The VoidPhone test client's pattern: PUT, wait half a second, GET on the same connection.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.get(key(7)).unwrap().as_deref(), Some(&b"short-lived"[..]));
    wait_until(Duration::from_secs(5), "the value to expire", || {
        c.get(key(7)).unwrap().is_none()
    });
}

/// Sends `requests`, closes the sending side, and reads until the node closes its side too.
fn send_and_hang_up(node: &voidphone_dht::reactor::RunningNode, requests: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(node.api).unwrap();
    s.write_all(requests).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answers = Vec::new();
    s.read_to_end(&mut answers).unwrap();
    answers
}

#[test]
fn clients_that_send_and_hang_up_free_their_connection_slot_at_once() {
    // With room for two connections, a node that missed the end of stream behind a request (data
    // and FIN in one read) would keep those slots until the idle timeout and refuse the next client.
    let mut cfg = voidphone_dht::testnet::loopback_config(Vec::new());
    cfg.reactor.api_connections_max = 2;
    let node = voidphone_dht::reactor::RunningNode::spawn(&cfg, 1).unwrap();
    let mut req = BytesMut::new();
    ApiRequest::Get { key: key(1) }.encode(&mut req);
    for _ in 0..20 {
        assert!(!send_and_hang_up(&node, &req).is_empty());
    }
    let mut c = client(&node);
    assert_eq!(c.get(key(1)).unwrap(), None);
}

#[test]
fn a_client_that_hangs_up_behind_many_requests_gets_every_answer() {
    // 3000 GETs of a 4 KB value are 12 MB of answers, far past the reply buffer bound: the node
    // must go on answering the requests it read before the end of stream as the client reads.
    let node = single_node();
    let value = vec![7u8; 4096];
    client(&node).put(key(1), &value, 60, 1).unwrap();
    let mut reqs = BytesMut::new();
    for _ in 0..3000 {
        ApiRequest::Get { key: key(1) }.encode(&mut reqs);
    }
    let mut buf = BytesMut::from(&send_and_hang_up(&node, &reqs)[..]);
    let mut found = 0;
    while let Some(reply) = voidphone_dht::wire::api::decode_reply(&mut buf).unwrap() {
        assert!(matches!(reply, ApiReply::Success { .. }));
        found += 1;
    }
    assert_eq!(found, 3000);
}

/// A connection the node must close: every read returns EOF (or a reset) before long.
fn assert_closed_by_node(mut s: TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("expected the node to close the connection, got {n} bytes"),
    }
}

#[test]
fn malformed_frames_close_only_the_offending_connection() {
    let node = single_node();
    let mut good = client(&node);
    good.put(key(1), b"still here", 60, 1).unwrap();
    let bad_frames: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), // unknown type
        vec![0, 2, 0x02, 0x8b],                        // size below the header
        {
            let mut b = BytesMut::new();
            b.put_u16(37);
            b.put_u16(651);
            b.put_slice(&[0; 33]);
            b.to_vec() // GET with a wrong size
        },
        {
            let mut b = BytesMut::new();
            b.put_u16(40);
            b.put_u16(650);
            b.put_slice(&[0; 36]);
            b.to_vec() // PUT with an empty value
        },
    ];
    for frame in bad_frames {
        let mut s = TcpStream::connect(node.api).unwrap();
        s.write_all(&frame).unwrap();
        assert_closed_by_node(s);
    }
    // A truncated frame just waits; the connection's owner may finish it later.
    let mut half = TcpStream::connect(node.api).unwrap();
    half.write_all(&[0, 36, 0x02, 0x8b, 1, 2, 3]).unwrap();
    assert_eq!(
        good.get(key(1)).unwrap().as_deref(),
        Some(&b"still here"[..])
    );
    half.write_all(&[0u8; 29]).unwrap();
    let mut rest = ApiClient::connect(node.api).unwrap();
    assert!(rest.get(key(99)).unwrap().is_none());
    let mut reply = [0u8; 36];
    half.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    half.read_exact(&mut reply).unwrap();
    assert_eq!(
        &reply[..4],
        &[0, 36, 0x02, 0x8d],
        "the completed GET is answered with DHT FAILURE"
    );
}

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<usize>()
        .unwrap()
        * 4096
}

#[test]
fn a_client_that_never_reads_gets_backpressure_and_others_are_served() {
    let node = single_node();
    let mut setup = client(&node);
    let big = vec![0xabu8; 60_000];
    setup.put(key(1), &big, 600, 1).unwrap();
    assert!(setup.get(key(1)).unwrap().is_some());
    let before = resident_bytes();
    // 2000 GETs of a 60 kB value: 120 MB of replies that this client does not read for now.
    const GETS: usize = 2000;
    let mut greedy = TcpStream::connect(node.api).unwrap();
    let mut batch = BytesMut::new();
    for _ in 0..GETS {
        ApiRequest::Get { key: key(1) }.encode(&mut batch);
    }
    let mut writer_side = greedy.try_clone().unwrap();
    let writer = std::thread::spawn(move || writer_side.write_all(&batch).unwrap());
    // Others are served meanwhile.
    for i in 0..20 {
        let mut c = client(&node);
        c.put(key(100 + i), b"ok", 60, 1).unwrap();
        assert_eq!(c.get(key(100 + i)).unwrap().as_deref(), Some(&b"ok"[..]));
    }
    // The node stopped reading from the greedy client instead of buffering 120 MB for it.
    let grown = resident_bytes().saturating_sub(before);
    assert!(
        grown < 40 << 20,
        "memory grew by {grown} bytes while a client did not read"
    );
    // Once the client reads, every reply arrives: nothing was dropped.
    greedy
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = BytesMut::new();
    let mut replies = 0;
    let mut chunk = vec![0u8; 1 << 16];
    while replies < GETS {
        let n = greedy.read(&mut chunk).unwrap();
        assert!(n > 0, "closed after {replies} replies");
        buf.extend_from_slice(&chunk[..n]);
        while let Some(r) = voidphone_dht::wire::api::decode_reply(&mut buf).unwrap() {
            assert!(matches!(r, ApiReply::Success { ref value, .. } if value.len() == 60_000));
            replies += 1;
        }
    }
    writer.join().unwrap();
}
