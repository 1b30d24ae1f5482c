//! The codecs alone: decoding pipelined API requests, encoding replies, P2P frames.

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use voidphone_dht::id::Id;
use voidphone_dht::msg::{Frame, PeerMsg};
use voidphone_dht::wire::api::{self, ApiReply, ApiRequest};
use voidphone_dht::wire::p2p;

fn codecs(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    let mut gets = BytesMut::new();
    for i in 0..1000u32 {
        ApiRequest::Get {
            key: Id::hash(&i.to_be_bytes()),
        }
        .encode(&mut gets);
    }
    g.throughput(Throughput::Elements(1000));
    g.bench_function("api_decode_1000_gets", |b| {
        b.iter(|| {
            let mut buf = gets.clone();
            let mut n = 0;
            while let Some(r) = api::decode_request(&mut buf).unwrap() {
                black_box(r);
                n += 1;
            }
            assert_eq!(n, 1000);
        })
    });
    let reply = ApiReply::Success {
        key: Id::hash(b"k"),
        value: Bytes::from(vec![7u8; 100]),
    };
    g.bench_function("api_encode_1000_replies_100B", |b| {
        let mut out = BytesMut::with_capacity(200_000);
        b.iter(|| {
            out.clear();
            for _ in 0..1000 {
                reply.encode(&mut out);
            }
            black_box(out.len());
        })
    });
    let mut frames = BytesMut::new();
    for i in 0..1000u32 {
        let msg = PeerMsg::StoragePut {
            ttl_ms: 1000,
            replication: 3,
            version: i as u64,
            key: Id::hash(&i.to_be_bytes()),
            value: Bytes::from(vec![1u8; 100]),
        };
        Frame::new(i as u64, msg).encode(&mut frames);
    }
    g.bench_function("p2p_decode_1000_storage_puts_100B", |b| {
        b.iter(|| {
            let mut buf = frames.clone();
            while let Some(f) = p2p::decode_frame(&mut buf, 70_000).unwrap() {
                black_box(f);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, codecs);
criterion_main!(benches);
