//! The sans-IO core's request path alone: a client GET/PUT handled by a lone node and drained
//! through `drive`, no sockets.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use voidphone_dht::chord::{ClientId, Input, Node, Outputs, Transmit, drive};
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
        node.handle_input(
            Input::ClientRequest {
                client: 1,
                req: ApiRequest::Put {
                    ttl_s: 3600,
                    replication: 1,
                    key: *k,
                    value: value.clone(),
                },
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
            node.handle_input(
                Input::ClientRequest {
                    client: 1,
                    req: ApiRequest::Get { key: keys[i] },
                },
                Time(2),
            );
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
            node.handle_input(Input::ClientRequest { client: 1, req }, Time(2));
            black_box(drive(&mut node, &mut out));
        })
    });
    g.finish();
}

/// One routing step: a node of a converged 64-node simulated ring handles a PEER FIND for a random
/// target (answer or forward) and drains its outputs.
fn routing_step(c: &mut Criterion) {
    use voidphone_dht::msg::{Frame, PeerMsg};
    use voidphone_dht::sim::{NetConfig, Sim};
    let mut sim = Sim::new(3, Sim::default_node_config(), NetConfig::default());
    sim.check_every_event = false;
    sim.grow(64, 2_000);
    sim.converge(300_000).expect("ring converges");
    sim.run_for(30_000);
    let now = sim.now();
    let addr = *sim.nodes.keys().next().unwrap();
    let node = &mut sim.nodes.get_mut(&addr).unwrap().node;
    let targets: Vec<Id> = (0..4096u32).map(|i| Id::hash(&i.to_le_bytes())).collect();
    let asker = "127.0.0.2:9".parse().unwrap();
    let mut out = Count::default();
    let mut i = 0usize;
    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Elements(1));
    g.bench_function("routing_step_peer_find_n64", |b| {
        b.iter(|| {
            i = (i + 1) % targets.len();
            let msg = PeerMsg::PeerFind {
                target: targets[i],
                hops: 0,
                last_hop: false,
                reply_to: asker,
                read: false,
            };
            node.handle_input(
                Input::PeerFrame {
                    from: asker,
                    frame: Frame::new(i as u64, msg),
                },
                now,
            );
            black_box(drive(node, &mut out));
        })
    });
    g.finish();
}

criterion_group!(benches, core, routing_step);
criterion_main!(benches);
