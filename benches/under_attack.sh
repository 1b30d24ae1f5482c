#!/usr/bin/env bash
# Honest clients' GET latency without and with an attack on the P2P ports, side by side in one run:
# a 16-node testnet (loopback, two shared threads), `voidphone-dht bench` for the baseline, then the
# same bench while a stranger (benches/attacker.py) holds idle connections and half frames sent a
# byte at a time against every node's P2P port, from several loopback addresses.
# Usage: benches/under_attack.sh [SECS=5] [CONNS_PER_IP=40] [IPS=8]
set -euo pipefail
secs=${1:-5}
per_ip=${2:-40}
ips=${3:-8}
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/voidphone-dht
dir=$(mktemp -d)
trap 'kill "$tn" "${atk:-}" 2>/dev/null || true; rm -rf "$dir"' EXIT
"$bin" testnet --nodes 16 --threads 2 >"$dir/tn" 2>/dev/null &
tn=$!
for _ in $(seq 100); do grep -q "formed" "$dir/tn" && break; sleep 0.1; done
apis=$(awk '$1 ~ /^[0-9]+$/ {print $3}' "$dir/tn" | paste -sd,)
p2ps=$(awk '$1 ~ /^[0-9]+$/ {print $4}' "$dir/tn" | paste -sd,)
"$bin" bench --api "$apis" --conns 16 --secs 2 --op put --keys 10000 >/dev/null
echo "no attack:"
"$bin" bench --api "$apis" --conns 16 --secs "$secs" --op get --keys 10000
python3 benches/attacker.py "$p2ps" "$per_ip" "$ips" "$((secs + 20))" &
atk=$!
sleep 3
echo "under attack ($ips IPs x $per_ip idle connections and slow half frames to each of 16 nodes):"
"$bin" bench --api "$apis" --conns 16 --secs "$secs" --op get --keys 10000
echo "node 0 as an operator sees it:"
"$bin" ring --p2p "${p2ps%%,*}"
