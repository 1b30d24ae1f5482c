//! voidphone-dht: the distributed hash table module of VoidPhone, on the Chord protocol.
//!
//! The shape (see docs/ARCHITECTURE.md): a sans-IO core ([`chord::Node`]) that takes events and `now`
//! and emits messages and timer requests, driven by a thin mio reactor ([`reactor`]) in production
//! and by a deterministic discrete-event simulator ([`sim`]) in tests.
#![forbid(unsafe_code)]
#![warn(clippy::iter_over_hash_type)]

pub mod balance;
pub mod chord;
pub mod client;
pub mod config;
pub mod id;
pub mod load;
pub mod msg;
pub mod reactor;
pub mod sim;
pub mod storage;
pub mod testnet;
pub mod time;
pub mod wheel;
pub mod wire;
