//! Lookup (GET) and PUT throughput through an in-process ring over real loopback TCP, for N = 1, 4,
//! 16 and 64 nodes, with many requests in flight: every node gets one client
//! connection, and each batch pipelines requests over all of them. The nodes share one thread per
//! core (`testnet::start_shared`), as a thread per node would measure the scheduler.

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use voidphone_dht::id::Id;
use voidphone_dht::testnet;
use voidphone_dht::wire::api::{self, ApiReply, ApiRequest};

const KEYS: u32 = 2000;
const BATCH: usize = 512;

fn key(i: u32) -> Id {
    Id::hash(&i.to_be_bytes())
}

/// Sends `count` requests spread over the connections (pipelined) and reads every reply.
fn round(conns: &mut [TcpStream], count: usize, put: bool, next: &mut u32) -> usize {
    let mut out: Vec<BytesMut> = conns.iter().map(|_| BytesMut::new()).collect();
    let mut expect = vec![0usize; conns.len()];
    let value = Bytes::from(vec![0x5au8; 100]);
    for i in 0..count {
        let c = i % conns.len();
        *next = (*next + 1) % KEYS;
        let req = if put {
            ApiRequest::Put {
                ttl_s: 3600,
                replication: 3,
                key: key(*next),
                value: value.clone(),
            }
        } else {
            expect[c] += 1;
            ApiRequest::Get { key: key(*next) }
        };
        req.encode(&mut out[c]);
    }
    for (c, o) in conns.iter_mut().zip(&out) {
        c.write_all(o).unwrap();
    }
    let mut hits = 0;
    for (c, want) in conns.iter_mut().zip(expect) {
        let mut buf = BytesMut::new();
        let mut chunk = [0u8; 65536];
        let mut got = 0;
        while got < want {
            while let Some(r) = api::decode_reply(&mut buf).unwrap() {
                got += 1;
                hits += matches!(r, ApiReply::Success { .. }) as usize;
            }
            if got < want {
                let n = c.read(&mut chunk).unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
    hits
}

fn lookups(c: &mut Criterion) {
    let sizes = [1usize, 4, 16, 64];
    let mut g = c.benchmark_group("ring_loopback");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for n in sizes {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let nodes = testnet::start_shared(n, 5, cores).unwrap();
        testnet::wait_for_ring(&nodes, Duration::from_secs(60)).unwrap();
        let mut conns: Vec<TcpStream> = nodes
            .iter()
            .map(|n| TcpStream::connect(n.api).unwrap())
            .collect();
        for c in &conns {
            c.set_nodelay(true).unwrap();
        }
        let mut next = 0;
        round(&mut conns, KEYS as usize, true, &mut next);
        // Confirms the load: every key is found before timing starts.
        let deadline = Instant::now() + Duration::from_secs(30);
        while round(&mut conns, KEYS as usize, false, &mut next) < KEYS as usize {
            assert!(
                Instant::now() < deadline,
                "values not all found in a ring of {n}"
            );
        }
        g.throughput(Throughput::Elements(BATCH as u64));
        g.bench_function(format!("get_n{n}"), |b| {
            b.iter(|| round(&mut conns, BATCH, false, &mut next))
        });
        g.bench_function(format!("put_n{n}"), |b| {
            b.iter(|| {
                round(&mut conns, BATCH, true, &mut next);
                // PUT has no reply: one GET per connection marks the batch as taken.
                let n = conns.len();
                round(&mut conns, n, false, &mut next)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
