#!/usr/bin/env bash
# Runs the slixmpp interop suite against a built `confab` binary.
#
#   tests/interop/run.sh [pytest args...]
#
# Environment:
#   CONFAB_BIN    the server binary (default: $CARGO_TARGET_DIR/debug/confab, then
#                 target/debug/confab; see conftest.py)
#   CONFAB_VENV   where the Python venv lives (default /var/tmp/confab-venv); created on first
#                 use and reused while it matches requirements.txt
#   PYTHON        interpreter used to create the venv (default python3)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${CONFAB_VENV:-/var/tmp/confab-venv}"
requirements="$here/requirements.txt"
stamp="$venv/.confab-interop-requirements"
python="${PYTHON:-python3}"

venv_ready() {
  [ -x "$venv/bin/python" ] &&
    cmp -s "$requirements" "$stamp" &&
    "$venv/bin/python" -c 'import slixmpp, pytest, pytest_timeout' >/dev/null 2>&1
}

prepare_venv() {
  if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ] && [ -n "$(ls -A "$venv" 2>/dev/null)" ]; then
    echo "interop: $venv exists and is not a venv; set CONFAB_VENV elsewhere" >&2
    exit 1
  fi
  if ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "interop: creating venv in $venv"
    # --clear only ever touches an existing venv (checked above) or an empty directory.
    if ! "$python" -m venv --clear "$venv"; then
      echo "interop: '$python -m venv' failed; on Debian install python3-venv" >&2
      exit 1
    fi
  fi
  echo "interop: installing $(grep -c '==' "$requirements") pinned packages from requirements.txt"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --require-virtualenv -r "$requirements"
  cp "$requirements" "$stamp"
}

if ! venv_ready; then
  mkdir -p "$(dirname "$venv")"
  # Serialise concurrent first runs (CI and a developer, two worktrees) on the same venv.
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$venv.lock"
    flock 9
  fi
  venv_ready || prepare_venv
fi

cd "$repo"
exec "$venv/bin/python" -m pytest -q tests/interop "$@"
