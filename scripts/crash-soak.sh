#!/usr/bin/env bash
# Crash soak: the interop crash-loop test (tests/interop/test_crash_loop.py) at a large size
# against a release build. The server is SIGKILLed N times at random moments while a slixmpp
# client streams messages under XEP-0198; every acknowledged message must reach its recipient
# exactly once and be in the archive exactly once.
#
#   scripts/crash-soak.sh [--kills N] [--rate MSGS_PER_SEC] [--seed S] [--no-build]
#
# --kills   SIGKILLs (default 100)
# --rate    new messages per second from the sender (default 150)
# --seed    seed for the kill timing (default random; printed in the summary)
# --no-build  use CONFAB_BIN, or the existing release binary, without running cargo
#
# Prints one summary line:
#   crash-soak: kills=100 sent=... acked=... lost=0 duplicated=0 unacked=0 seconds=...
# and exits non-zero if the test failed (the pytest report above it says why; the server's
# log is in the pytest tmp directory it names).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

kills=100
rate=""
seed=""
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --kills) kills="$2"; shift 2 ;;
    --kills=*) kills="${1#*=}"; shift ;;
    --rate) rate="$2"; shift 2 ;;
    --rate=*) rate="${1#*=}"; shift ;;
    --seed) seed="$2"; shift 2 ;;
    --seed=*) seed="${1#*=}"; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "crash-soak: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done

if [ -z "${CONFAB_BIN:-}" ]; then
  if [ "$build" = 1 ]; then
    echo "crash-soak: cargo build --release -p confab"
    cargo build --release -p confab
  fi
  target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
  CONFAB_BIN="$target_dir/release/confab"
fi
if [ ! -x "$CONFAB_BIN" ]; then
  echo "crash-soak: no server binary at $CONFAB_BIN" >&2
  exit 1
fi
export CONFAB_BIN

summary="$(mktemp "${TMPDIR:-/tmp}/crash-soak.XXXXXX.json")"
trap 'rm -f "$summary"' EXIT
export CONFAB_CRASH_KILLS="$kills" CONFAB_CRASH_SUMMARY="$summary"
[ -n "$rate" ] && export CONFAB_CRASH_RATE="$rate"
[ -n "$seed" ] && export CONFAB_CRASH_SEED="$seed"

echo "crash-soak: $kills kills against $CONFAB_BIN"
status=0
tests/interop/run.sh -k test_acknowledged_messages_survive_sigkill || status=$?

if [ -s "$summary" ]; then
  python3 - "$summary" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
for key in ("bob", "carol", "problems"):
    if s.get(key):
        print(f"crash-soak: {key}: {json.dumps(s[key])}")
print(
    "crash-soak: kills={kills} sent={sent} acked={acked} lost={lost} duplicated={duplicated} "
    "unacked={unacked} transmissions={transmissions} seconds={seconds} seed={seed}".format(**s)
)
EOF
else
  echo "crash-soak: no summary (the test did not get to its checks); exit status $status"
fi
exit "$status"
