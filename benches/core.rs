//! The sans-IO core's request path alone: a client GET/PUT handled by a lone node and drained
//! through `drive`, no sockets.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use voidphone_dht::chord::{ClientId, Node, Outputs, Transmit, drive};
use voidphone_dht::config::Config;
use voidphone_dht::id::Id;
use voidphone_dht::time::Time;
use voidphone_dht::wire::api::{ApiReply, ApiRequest};

#[derive(Default)]
struct Count(u64);

impl Outputs for Count {
    fn transmit(&mut self, _: Transmit) {
        self.0 += 1;
    }
    fn client_reply(&mut self, _: ClientId, r: ApiReply) {
        black_box(r);
        self.0 += 1;
    }
}

fn core(c: &mut Criterion) {
    let mut node = Node::new(
        Config::default().node,
        "127.0.0.1:7402".parse().unwrap(),
        1,
        Time(0),
    );
    let keys: Vec<Id> = (0..10_000u32).map(|i| Id::hash(&i.to_be_bytes())).collect();
    let value = Bytes::from(vec![0x5a; 100]);
    for k in &keys {
        node.handle_client_req(
            1,
            ApiRequest::Put {
                ttl_s: 3600,
                replication: 1,
                key: *k,
                value: value.clone(),
            },
            Time(1),
        );
    }
    let mut out = Count::default();
    let _ = drive(&mut node, &mut out);
    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("client_get_local_hit", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            node.handle_client_req(1, ApiRequest::Get { key: keys[i] }, Time(2));
            black_box(drive(&mut node, &mut out));
        })
    });
    g.bench_function("client_put_local", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let req = ApiRequest::Put {
                ttl_s: 3600,
                replication: 1,
                key: keys[i],
                value: value.clone(),
            };
            node.handle_client_req(1, req, Time(2));
            black_box(drive(&mut node, &mut out));
        })
    });
    g.finish();
}

criterion_group!(benches, core);
criterion_main!(benches);
