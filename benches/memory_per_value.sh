#!/usr/bin/env bash
# Memory per stored value: starts one node (loopback, ports the OS picks), stores N distinct values
# of B bytes through the API with `voidphone-dht bench --op put`, and prints the node's resident
# memory before and after and the bytes per value beyond key (32) and value (B).
# Usage: benches/memory_per_value.sh [N=1000000] [B=100]
set -euo pipefail
n=${1:-1000000}
vsize=${2:-100}
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/voidphone-dht
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
sed -e 's/^api_address = .*/api_address = "127.0.0.1:0"/' \
    -e 's/^p2p_address = .*/p2p_address = "127.0.0.1:0"/' \
    -e 's/^log_level = .*/log_level = "warn"/' \
    -e 's/^storage_bytes_max = .*/storage_bytes_max = 4294967296/' node.toml >"$dir/node.toml"
"$bin" -c "$dir/node.toml" >"$dir/out" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "api " "$dir/out" && break; sleep 0.1; done
api=$(grep -o "api [0-9.:]*" "$dir/out" | cut -d' ' -f2)
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
idle=$(rss)
# Every key is written at least once: the bench cycles through the N keys.
secs=$(( n / 200000 + 3 ))
"$bin" bench --api "$api" --op put --keys "$n" --vsize "$vsize" --pipeline 64 --conns 4 --secs "$secs"
held=$("$bin" ring --p2p "$(grep -o "p2p [0-9.:]*" "$dir/out" | cut -d' ' -f2)" | awk 'NR==2 {print $4}')
full=$(rss)
echo "values held: $held (of $n)"
echo "RSS idle: $idle kB, with values: $full kB"
awk -v i="$idle" -v f="$full" -v n="$held" -v b="$vsize" 'BEGIN {
  per = (f - i) * 1024 / n
  printf "bytes per value: %.1f, beyond key (32) and value (%d): %.1f\n", per, b, per - 32 - b }'
