#!/usr/bin/env bash
# The project's one test command (the README's; CI runs it through .ci/run):
# build everything, run the Rust tests, then the slixmpp interop suite against the built
# server. Exits non-zero as soon as a stage fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

started=$SECONDS
stage() {
  printf '\n==> %s\n' "$*"
}

stage "build: cargo build --workspace --all-targets"
cargo build --workspace --all-targets

stage "unit and integration tests: cargo test --workspace"
cargo test --workspace

# Where cargo put the binary: honours CARGO_TARGET_DIR (relative or absolute) and any
# build.target-dir in cargo configuration.
target_dir="$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
export CONFAB_BIN="$target_dir/debug/confab"
if [ ! -x "$CONFAB_BIN" ]; then
  echo "test.sh: built binary not found at $CONFAB_BIN" >&2
  exit 1
fi

stage "interop: slixmpp against $CONFAB_BIN (tests/interop/run.sh)"
tests/interop/run.sh

stage "websocket: @xmpp/client in Node and headless Chromium (tests/websocket/run.sh)"
tests/websocket/run.sh

stage "all stages passed in $((SECONDS - started))s"
