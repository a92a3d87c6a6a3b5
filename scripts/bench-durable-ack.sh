#!/usr/bin/env bash
# The cost of durable acknowledgements: Confab commits every chat message to SQLite before it
# delivers it or acknowledges it, and this measures what that costs. Each scenario runs
# against a fresh release server on a fresh data directory:
#
#   max    100 pairs at maximum rate (16 in flight per pair), 10 s: throughput
#   1k     100 pairs, 1,000 msgs/s offered, 15 s: ack and delivery latency at light load
#   5k     100 pairs, 5,000 msgs/s offered, 15 s: latency at moderate load
#
#   scripts/bench-durable-ack.sh [scenario...]     (default: max 1k 5k)
#
# Prints confab-bench's table for each, and the final JSON lines to $OUT (default
# /tmp/confab-durable-ack.jsonl). Run it on a machine that is otherwise idle; the figures are
# ratios to compare side by side, not absolutes (BENCHMARKS.md, "Durable acknowledgements").
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
target="${CARGO_TARGET_DIR:-$repo/target}"
out="${OUT:-/tmp/confab-durable-ack.jsonl}"
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(max 1k 5k)

cargo build --release -p confab -p confab-bench
confab="$target/release/confab"
bench="$target/release/confab-bench"
: >"$out"

for scenario in "${scenarios[@]}"; do
  case "$scenario" in
    max) load=(--max --duration 10) ;;
    1k) load=(--rate 10 --duration 15) ;;
    5k) load=(--rate 50 --duration 15) ;;
    *) echo "unknown scenario $scenario (max, 1k, 5k)" >&2; exit 2 ;;
  esac
  work="$(mktemp -d)"
  CONFAB__C2S__DIRECT_TLS=false "$confab" serve --registration open --data-dir "$work/data" \
    --c2s 127.0.0.1:0 --http 127.0.0.1:0 >"$work/server.out" 2>"$work/server.err" &
  server=$!
  trap 'kill $server 2>/dev/null || true' EXIT
  port=""
  for _ in $(seq 100); do
    port="$(sed -n 's/^confab: c2s listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$work/server.out")"
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "server did not start: $(cat "$work/server.err")" >&2; exit 1; }
  "$bench" register --server "127.0.0.1:$port" --count 200 >/dev/null
  echo "== $scenario =="
  "$bench" chat --server "127.0.0.1:$port" --pid "$server" --pairs 100 "${load[@]}" |
    tee "$work/chat.out"
  tail -n 1 "$work/chat.out" | sed "s/^/{\"scenario\":\"$scenario\",\"report\":/; s/\$/}/" >>"$out"
  kill "$server"
  wait "$server" 2>/dev/null || true
  trap - EXIT
  rm -rf "$work"
done
echo "JSON lines in $out"
