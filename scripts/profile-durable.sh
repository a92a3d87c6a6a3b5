#!/usr/bin/env bash
# Instruction counts of the durable message path: where a chat message's instructions go
# between the client's bytes and the SQLite commit (BENCHMARKS.md, "Durable path ...").
#
# Wall clock is useless on a shared machine; callgrind's instruction counts are not. The run:
#
#   1. a fresh data directory; 100 accounts registered (XEP-0077) against an uninstrumented
#      server, which is then stopped;
#   2. the same binary under `valgrind --tool=callgrind` on that data directory, driven by
#      `confab-bench chat --pairs 50 --max --duration 70 --grace 20`;
#   3. counters zeroed (`callgrind_control -z`) $ZERO_AT s into the chat run, once every
#      login is done, and dumped (`callgrind_control -d`) $WINDOW s later; messages are the
#      rows added to `messages` in between.
#
#   scripts/profile-durable.sh [OUT_DIR]
#
# CONFAB=path/to/confab and BENCH=path/to/confab-bench compare other builds (for instance a
# saved baseline binary); by default both are built here in release mode (which keeps debug
# info, so callgrind names functions). Writes to OUT_DIR (default: a new temporary
# directory): callgrind.out.1 (the window), summary.txt (messages, Ir per message) and
# inclusive.txt (`callgrind_annotate --inclusive=yes`). Read a function's cost per message as
# its inclusive Ir divided by the message count in summary.txt.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
out="${1:-$(mktemp -d)}"
zero_at="${ZERO_AT:-35}"
window="${WINDOW:-25}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

if [ -z "${CONFAB:-}" ] || [ -z "${BENCH:-}" ]; then
  (cd "$repo" && cargo build --release -p confab -p confab-bench)
fi
confab="${CONFAB:-$target/release/confab}"
bench="${BENCH:-$target/release/confab-bench}"

work="$(mktemp -d)"
server=""
chat=""
cleanup() {
  [ -n "$chat" ] && kill "$chat" 2>/dev/null
  [ -n "$server" ] && kill "$server" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# Starts the server ($@ before the binary, e.g. valgrind) on the data directory and sets
# $server and $port. Under valgrind the start takes seconds, hence the long wait.
start_server() {
  : >"$work/server.out"
  CONFAB__C2S__DIRECT_TLS=false "$@" "$confab" serve --registration open \
    --data-dir "$work/data" --c2s 127.0.0.1:0 --http 127.0.0.1:0 \
    >"$work/server.out" 2>>"$work/server.err" &
  server=$!
  port=""
  for _ in $(seq 1200); do
    port="$(sed -n 's/^confab: c2s listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$work/server.out")"
    [ -n "$port" ] && return
    sleep 0.1
  done
  echo "server did not start: $(cat "$work/server.err")" >&2
  exit 1
}

stop_server() {
  kill "$server"
  wait "$server" 2>/dev/null || true
  server=""
}

messages() {
  sqlite3 "$work/data/confab.db" 'SELECT count(*) FROM messages'
}

start_server
"$bench" register --server "127.0.0.1:$port" --count 100 >/dev/null
stop_server

start_server valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out"
"$bench" chat --server "127.0.0.1:$port" --pairs 50 --max --duration 70 --grace 20 \
  >"$out/chat.out" 2>&1 &
chat=$!
sleep "$zero_at"
callgrind_control -z "$server" >/dev/null 2>&1
before="$(messages)"
sleep "$window"
after="$(messages)"
callgrind_control -d "$server" >/dev/null 2>&1
wait "$chat" || true
chat=""
stop_server

# The explicit dump is numbered .1; the final dump at exit (logins, shutdown) is not used.
dump="$out/callgrind.out.1"
[ -f "$dump" ] || { echo "no callgrind dump in $out" >&2; exit 1; }
total="$(sed -n 's/^summary: \([0-9]*\).*/\1/p' "$dump")"
[ -n "$total" ] || total="$(sed -n 's/^totals: \([0-9]*\).*/\1/p' "$dump")"
count=$((after - before))
[ "$count" -gt 0 ] || { echo "no messages committed in the window" >&2; exit 1; }
callgrind_annotate --inclusive=yes --auto=no --threshold=100 "$dump" >"$out/inclusive.txt"
{
  echo "binary: $confab"
  echo "messages in the window: $count ($before -> $after)"
  echo "Ir in the window: $total"
  echo "Ir per message: $((total / count))"
} | tee "$out/summary.txt"
echo "callgrind data and annotations in $out"
