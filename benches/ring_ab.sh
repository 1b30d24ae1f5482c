#!/usr/bin/env bash
# A/B of the 16-node loopback ring bench: two builds alternating in one run, so that both meet the
# same machine. Usage: benches/ring_ab.sh OLD_BINARY NEW_BINARY [ROUNDS]
# (build the old one from a worktree: git worktree add /tmp/old REV && cargo build --release there).
set -euo pipefail
old=$1 new=$2 rounds=${3:-3}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for round in $(seq "$rounds"); do
  for which in old new; do
    bin=$old; [ "$which" = new ] && bin=$new
    "$bin" testnet --nodes 16 --threads 2 >"$out" 2>/dev/null &
    testnet=$!
    for _ in $(seq 100); do grep -q "ring of 16 formed" "$out" && break; sleep 0.2; done
    api=$(awk '$3 ~ /^127\.0\.0\.1:/ {print $3}' "$out" | paste -sd,)
    "$bin" bench --api "$api" --op put --secs 2 --conns 4 --pipeline 64 --keys 10000 --vsize 100 >/dev/null 2>&1
    for conns in 16 32; do
      echo "round $round $which: $("$bin" bench --api "$api" --op get --secs 3 --conns "$conns" --pipeline 1 --keys 10000 --vsize 100 2>&1 | tail -1)"
    done
    kill "$testnet"; wait "$testnet" 2>/dev/null || true
  done
done
