//! The CI smoke of the fuzz targets (`fuzz/`, run with cargo-fuzz for the long runs): the same
//! harnesses (`fuzz/src/lib.rs`, included by path) fed bytes from a seeded PRNG instead of
//! libFuzzer. No panic, every decoded item re-encodes, the node's invariants hold after every
//! input, every GET gets its answer. A core failure names its seed: `FUZZ_SEED=<seed> FUZZ_TRACE=1
//! cargo test --release --test fuzz_smoke core` replays that run alone and prints its inputs.

#[path = "../fuzz/src/lib.rs"]
mod harness;

use harness::Src;
use voidphone_dht::time::Prng;

fn random_bytes(rng: &mut Prng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// Flips, inserts, deletes or truncates a few bytes, as a fuzzer's mutations would.
fn mutate(rng: &mut Prng, bytes: &mut Vec<u8>) {
    for _ in 0..rng.below(4) {
        if bytes.is_empty() {
            return;
        }
        let at = rng.below(bytes.len() as u64) as usize;
        match rng.below(4) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => bytes[at] = rng.next_u64() as u8,
            2 => bytes.insert(at, rng.next_u64() as u8),
            _ => bytes.truncate(at),
        }
    }
}

/// A decoder input: `header` random bytes (chunking mode and seed, and the P2P frame limit), then
/// either random bytes or a stream of valid frames, mutated or not.
fn decoder_input(rng: &mut Prng, header: usize, valid: impl Fn(&mut Src) -> Vec<u8>) -> Vec<u8> {
    let mut input = random_bytes(rng, header);
    let mut stream = if rng.below(4) == 0 {
        let len = rng.below(200) as usize;
        random_bytes(rng, len)
    } else {
        let seed = random_bytes(rng, 1024);
        valid(&mut Src::new(&seed))
    };
    if rng.chance(0.5) {
        mutate(rng, &mut stream);
    }
    input.extend_from_slice(&stream);
    input
}

#[test]
fn api_decoders_on_random_and_mutated_streams() {
    let mut rng = Prng::new(0xA91);
    for _ in 0..20_000 {
        let input = decoder_input(&mut rng, 2, harness::api_stream);
        harness::api_decode(&input);
    }
}

#[test]
fn p2p_decoder_on_random_and_mutated_streams() {
    let mut rng = Prng::new(0xB2B);
    for _ in 0..20_000 {
        let input = decoder_input(&mut rng, 3, harness::p2p_stream);
        harness::p2p_decode(&input);
    }
}

#[test]
fn core_on_random_input_sequences() {
    let mut inputs = 0;
    let mut runs = 0;
    let only: Option<u64> = std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok());
    let mut seed = only.unwrap_or(1) - 1;
    while inputs < 50_000 && (only.is_none() || runs == 0) {
        seed += 1;
        let mut rng = Prng::new(seed);
        let len = 64 + rng.below(4096) as usize;
        let bytes = random_bytes(&mut rng, len);
        let given = std::panic::catch_unwind(|| harness::core(&bytes))
            .unwrap_or_else(|_| panic!("core harness failed on seed {seed}"));
        inputs += given;
        runs += 1;
    }
    eprintln!("{runs} core runs, {inputs} inputs");
}
