use voidphone_dht::id::Id;
use voidphone_dht::sim::{NetConfig, Sim, oracle};
use voidphone_dht::time::Prng;
#[test]
fn debug() {
    let seed = 256;
    let mut rng = Prng::new(seed);
    let mut sim = Sim::new(seed, Sim::default_node_config(), NetConfig::default());
    sim.check_every_event = false;
    let mut addrs = vec![sim.add_node(None)];
    let mut times: Vec<u64> = (0..255).map(|_| rng.below(2000)).collect();
    times.sort();
    for t in times { sim.run_until(voidphone_dht::time::Time(t)); let via = addrs[rng.below(addrs.len() as u64) as usize]; addrs.push(sim.add_node(Some(via))); }
    sim.run_for(100_000);
    println!("{:?}", oracle::check_ideal(&sim));
    for (id, a) in sim.live_sorted() {
        let h = id.short();
        if ["0379", "0424", "067a", "06fd", "035b"].iter().any(|p| h.starts_with(p)) {
            let n = sim.node(a);
            println!("{} pred {:?} succs {:?}", h, n.predecessor().map(|p| p.id), n.successors().iter().map(|p| p.id).collect::<Vec<Id>>());
        }
    }
}
