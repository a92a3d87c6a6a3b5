#!/usr/bin/env bash
# Runs the WebSocket client tests against a built `confab` binary: @xmpp/client in Node
# (with a slixmpp peer on the TCP listener) and @xmpp/client's browser bundle in headless
# Chromium.
#
#   tests/websocket/run.sh [node --test args...]
#
# Environment:
#   CONFAB_BIN          the server binary (default: $CARGO_TARGET_DIR/debug/confab, then
#                       target/debug/confab)
#   CONFAB_NODE_CACHE   where node_modules is installed from package-lock.json (default
#                       /var/tmp/confab-node); reused while the lock file is unchanged
#   CONFAB_VENV         the interop suite's Python venv with slixmpp (default
#                       /var/tmp/confab-venv); prepared through tests/interop/run.sh if missing
#   CHROMIUM            the browser (default /usr/bin/chromium; installed with apt-get when
#                       missing and running as root)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${CONFAB_NODE_CACHE:-/var/tmp/confab-node}"
venv="${CONFAB_VENV:-/var/tmp/confab-venv}"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

if [ -z "${CONFAB_BIN:-}" ]; then
  target="${CARGO_TARGET_DIR:-$repo/target}"
  case "$target" in /*) ;; *) target="$repo/$target" ;; esac
  CONFAB_BIN="$target/debug/confab"
fi
if [ ! -x "$CONFAB_BIN" ]; then
  echo "websocket: confab binary not found at $CONFAB_BIN; run cargo build -p confab" >&2
  exit 1
fi
export CONFAB_BIN

# @xmpp/client 0.14 needs Node 20.10 or later.
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 10) ? 0 : 1)'; then
  echo "websocket: Node $(node --version 2>/dev/null || echo '(none)') is too old; 20.10+ is needed" >&2
  exit 1
fi

node_ready() {
  [ -d "$cache/node_modules/@xmpp/client" ] && cmp -s "$here/package-lock.json" "$cache/package-lock.json"
}

mkdir -p "$cache"
if ! node_ready; then
  # Serialise concurrent first runs (CI and a developer) on the same cache.
  if command -v flock >/dev/null 2>&1; then
    exec 8>"$cache.lock"
    flock 8
  fi
  if ! node_ready; then
    echo "websocket: installing pinned npm packages into $cache"
    cp "$here/package.json" "$here/package-lock.json" "$cache/"
    (cd "$cache" && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
ln -sfn "$cache/node_modules" "$here/node_modules"

if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "websocket: installing Debian's chromium"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "websocket: $CHROMIUM not found; install chromium (apt-get install chromium)" >&2
    exit 1
  fi
fi

if ! "$venv/bin/python" -c 'import slixmpp' >/dev/null 2>&1; then
  echo "websocket: preparing the interop venv for the slixmpp peer"
  CONFAB_VENV="$venv" "$repo/tests/interop/run.sh" --collect-only -q >/dev/null
fi
export CONFAB_PYTHON="$venv/bin/python"

cd "$here"
exec node --test "$@" node_client.test.mjs browser.test.mjs
