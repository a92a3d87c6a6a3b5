#!/usr/bin/env bash
# Side by side: the same load scenarios against ejabberd, Prosody and Confab, one server after
# the other on this machine, and one table of the figures with ratios (issue 4).
#
#   bench/compare.sh [--profile minimal|full|both] [--sessions N] [--pairs P]
#                    [--duration S] [--inflight W] [--servers "ejabberd prosody confab"]
#                    [--members M] [--online K] [--senders G] [--group-rate R]
#                    [--scenarios "connect chat group"]
#                    [--out DIR] [--wait-idle S] [--no-build]
#
# (--wait-idle: before each scenario, wait up to S seconds, default 60, for the rest of the
# machine to be quiet; see bench/README.md, which also explains every setting.)
#
# For each profile and server: create user1..userU (U = max(N, 2P, M) + 10) with in-band
# registration (`confab-bench register`) on a seed data directory, and fill a SCRAM cache with
# one login per account. Then each scenario runs against a freshly started server on a fresh
# copy of that seed, warmed up with 10 logins (and, before `chat`, one short chat between two
# spare users, so that lazily started parts such as ejabberd's SQL pool exist):
#
#   connect  N idle sessions (default 5,000): server RSS per session ((VmRSS after - before)/N,
#            sampled by confab-bench from /proc/PID/status), login rate, server CPU per login
#   chat     P pairs (default 100) at max rate (W = 16 messages in flight per pair) for S
#            seconds (default 10): delivered msgs/s, delivery latency p50/p99, server CPU
#            (/proc/PID/stat utime+stime) per delivered message
#   group    one XEP-0045 room at conference.localhost: user1 creates it, puts user2..userM
#            on its member list (default M = 1,000), K of them join (default 200), G send
#            (default 5) at max rate (W messages per sender not yet delivered to every
#            occupant) for S seconds: deliveries/s (sent × K expected), latency p50/p99 from
#            the send to each delivery, join time, server CPU per delivery (warm-up: a
#            3-member room "warmup" of spare users); --group-rate R: R msgs/s per sender,
#            open-loop, instead of max rate
#
# MUC settings (both profiles), so that nothing throttles or caps the room: ejabberd's
# mod_muc with max_users 100000 (service and default_room_options; the default is 200),
# max_users_presence 100000 (presence broadcasts stop above 1,000 by default),
# max_user_conferences 100000, min_message_interval 0, min_presence_interval 0, room_shaper,
# user_message_shaper and user_presence_shaper none; Prosody's `Component
# "conference.localhost" "muc"` (0.12 has no occupant or message-rate limit; mod_muc_limits
# is not loaded), restrict_room_creation = false. Both default to members-only, persistent
# rooms and keep 20 messages of history (not replayed: the bench joins with maxstanzas='0');
# neither archives room messages. Confab's MUC service is `[muc] domain`, by default
# conference.<domain>; a server without one shows "—" for the group rows.
#
# Profiles (configs in bench/ejabberd and bench/prosody; bench/README.md says why each
# setting): "minimal" = roster, disco, offline, ping; "full" = minimal plus MAM archiving of
# every message (in SQLite, WAL mode), stream management and carbons (which `chat` enables
# there: --sm --carbons). Confab has one configuration: it always archives every message in
# SQLite and acknowledges it only once committed (fsync), whatever the profile.
#
# Servers run as child processes (ejabberd and Prosody as their system users when this runs as
# root) in a temporary directory, on loopback ports chosen here (never 5222). ejabberd runs
# without Erlang distribution, so it is one beam.smp process (no epmd); that is the PID
# measured. If ejabberd or Prosody is missing it is installed with apt-get (as root), and the
# system services the packages bring are stopped and disabled.
#
# Output: the table and a final JSON line on stdout; raw confab-bench outputs, server logs and
# the configurations used in --out (default /tmp/confab-compare.<time>).
set -euo pipefail

command_line="$0 $*"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
here="$repo/bench"

profiles=(minimal)
sessions=5000
pairs=100
duration=10
inflight=16
servers=(ejabberd prosody confab)
scenarios=(connect chat group)
members=1000
online=200
senders=5
group_rate=max
out="${TMPDIR:-/tmp}/confab-compare.$(date +%Y%m%d-%H%M%S)"
wait_idle=60
build=1

usage() { sed -n '2,56p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --profile)
      case "$2" in
        minimal | full) profiles=("$2") ;;
        both) profiles=(minimal full) ;;
        *) echo "--profile: minimal, full or both" >&2; exit 2 ;;
      esac
      shift 2 ;;
    --sessions) sessions="$2"; shift 2 ;;
    --pairs) pairs="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --inflight) inflight="$2"; shift 2 ;;
    --servers) read -r -a servers <<<"$2"; shift 2 ;;
    --scenarios) read -r -a scenarios <<<"$2"; shift 2 ;;
    --members) members="$2"; shift 2 ;;
    --online) online="$2"; shift 2 ;;
    --senders) senders="$2"; shift 2 ;;
    --group-rate) group_rate="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --wait-idle) wait_idle="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for s in "${servers[@]}"; do
  case "$s" in ejabberd | prosody | confab) ;; *) echo "unknown server $s" >&2; exit 2 ;; esac
done
for s in "${scenarios[@]}"; do
  case "$s" in connect | chat | group) ;; *) echo "unknown scenario $s" >&2; exit 2 ;; esac
done

log() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
command -v python3 >/dev/null || die "python3 is needed (JSON and the table)"

# ---------------------------------------------------------------------------------------------
# Binaries

target="${CARGO_TARGET_DIR:-$repo/target}"
if [ "$build" = 1 ]; then
  log "building confab and confab-bench (release)"
  (cd "$repo" && cargo build --release -q -p confab -p confab-bench)
fi
confab="$target/release/confab"
bench="$target/release/confab-bench"
[ -x "$confab" ] && [ -x "$bench" ] || die "no release binaries in $target/release"

is_root=0
[ "$(id -u)" = 0 ] && is_root=1

need_ejabberd=0 need_prosody=0
for s in "${servers[@]}"; do
  [ "$s" = ejabberd ] && need_ejabberd=1
  [ "$s" = prosody ] && need_prosody=1
done

# Installs the reference servers if missing, without letting the packages start their
# services (policy-rc.d), then makes sure the system services are stopped and disabled.
install_refs() {
  local pkgs=()
  if [ "$need_ejabberd" = 1 ]; then
    [ -x /usr/sbin/ejabberdctl ] || pkgs+=(ejabberd)
    dpkg -s erlang-p1-sqlite3 >/dev/null 2>&1 || pkgs+=(erlang-p1-sqlite3)
  fi
  if [ "$need_prosody" = 1 ]; then
    command -v prosody >/dev/null || pkgs+=(prosody)
    dpkg -s lua-dbi-sqlite3 >/dev/null 2>&1 || pkgs+=(lua-dbi-sqlite3)
  fi
  command -v sqlite3 >/dev/null || pkgs+=(sqlite3)
  if [ ${#pkgs[@]} -gt 0 ]; then
    [ "$is_root" = 1 ] || die "missing packages ${pkgs[*]}: run as root, or install them"
    log "installing ${pkgs[*]}"
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
      chmod +x /usr/sbin/policy-rc.d
      made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >&2
    [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  fi
  [ "$is_root" = 1 ] || return 0
  # Stop and disable the system services, whichever way works here.
  if [ "$need_ejabberd" = 1 ]; then
    if [ -s /run/ejabberd/ejabberd.pid ] && kill -0 "$(cat /run/ejabberd/ejabberd.pid)" 2>/dev/null; then
      log "stopping the system ejabberd service"
      timeout 60 ejabberdctl stop >/dev/null 2>&1 || kill "$(cat /run/ejabberd/ejabberd.pid)" || true
    fi
    command -v systemctl >/dev/null && systemctl disable ejabberd >/dev/null 2>&1 || true
  fi
  if [ "$need_prosody" = 1 ]; then
    if [ -s /run/prosody/prosody.pid ] && kill -0 "$(cat /run/prosody/prosody.pid)" 2>/dev/null; then
      log "stopping the system prosody service"
      timeout 60 prosodyctl stop >/dev/null 2>&1 || kill "$(cat /run/prosody/prosody.pid)" || true
    fi
    command -v systemctl >/dev/null && systemctl disable prosody >/dev/null 2>&1 || true
  fi
}
install_refs

version_of() {
  case "$1" in
    ejabberd) dpkg-query -W -f='${Version}' ejabberd 2>/dev/null || echo "?" ;;
    prosody) dpkg-query -W -f='${Version}' prosody 2>/dev/null || echo "?" ;;
    confab) "$confab" --version 2>/dev/null | awk '{print $2}' || echo "?" ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# Server processes

mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/confab-compare-work.XXXXXX")"
chmod 755 "$work"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    sleep 1
    kill -9 "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# A free loopback TCP port (nothing accepts on it), never 5222.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 20000))
    [ "$p" = 5222 ] && continue
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

# Runs "$@" as system user $1 when root (setpriv keeps the PID: exec all the way down).
as_user() {
  local user="$1"; shift
  if [ "$is_root" = 1 ]; then
    exec setpriv --reuid="$user" --regid="$user" --init-groups "$@"
  else
    exec "$@"
  fi
}

# start_server SERVER PROFILE DIR: starts it on a new port; sets server_pid and port. A
# server that exits at start (say another process took the port meanwhile) is tried again.
start_server() {
  local attempt
  for attempt in 1 2 3; do
    try_start_server "$@" && return 0
    log "$1 exited at start (attempt $attempt): $(tail -n 3 "$3"/server.out "$3"/server.err "$3"/*.log 2>/dev/null | tr '\n' ' ' | cut -c1-600)"
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  done
  die "$1 did not start"
}

try_start_server() {
  local srv="$1" profile="$2" dir="$3"
  port="$(free_port)"
  local nofile
  nofile="$(ulimit -Hn)"
  [ "$nofile" = unlimited ] && nofile=1048576
  case "$srv" in
    confab)
      local http
      http="$(free_port)"
      (ulimit -n "$nofile"; CONFAB__C2S__DIRECT_TLS=false exec "$confab" serve --registration open --data-dir "$dir/data" \
        --c2s "127.0.0.1:$port" --http "127.0.0.1:$http") >"$dir/server.out" 2>"$dir/server.err" &
      ;;
    ejabberd)
      sed -e "s|@PORT@|$port|g; s|@DIR@|$dir|g" "$here/ejabberd/$profile.yml" >"$dir/ejabberd.yml"
      if [ "$profile" = full ] && [ ! -e "$dir/ejabberd.sqlite" ]; then
        sqlite3 "$dir/ejabberd.sqlite" 'pragma journal_mode=WAL;' >/dev/null
      fi
      [ "$is_root" = 1 ] && chown -R ejabberd:ejabberd "$dir"
      (cd "$dir" && ulimit -n "$nofile" && as_user ejabberd env HOME="$dir" \
        EJABBERD_CONFIG_PATH="$dir/ejabberd.yml" EJABBERD_LOG_PATH="$dir/ejabberd.log" \
        ERL_LIBS=/usr/lib/x86_64-linux-gnu ERL_MAX_PORTS=$((nofile + 1000)) \
        ERL_CRASH_DUMP="$dir/erl_crash.dump" ERL_CRASH_DUMP_BYTES=0 \
        erl -noinput -noshell +K true +P 2000000 -mnesia dir "\"$dir/db\"" -s ejabberd) \
        >"$dir/server.out" 2>&1 &
      ;;
    prosody)
      sed -e "s|@PORT@|$port|g; s|@DIR@|$dir|g" "$here/prosody/$profile.cfg.lua" >"$dir/prosody.cfg.lua"
      mkdir -p "$dir/data"
      if [ "$profile" = full ] && [ ! -e "$dir/data/prosody.sqlite" ]; then
        sqlite3 "$dir/data/prosody.sqlite" 'pragma journal_mode=WAL;' >/dev/null
      fi
      [ "$is_root" = 1 ] && chown -R prosody:prosody "$dir"
      (cd "$dir" && ulimit -n "$nofile" && as_user prosody env HOME="$dir" \
        prosody --config "$dir/prosody.cfg.lua" -F) >"$dir/server.out" 2>&1 &
      ;;
  esac
  server_pid=$!
  local i
  for i in $(seq 600); do
    kill -0 "$server_pid" 2>/dev/null || return 1
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  [ "$i" -lt 600 ] || die "$srv did not listen on $port within 60 s"
  sleep 1   # let start-up work finish before measuring
  local comm
  comm="$(cat "/proc/$server_pid/comm")"
  log "$srv ($profile) started: pid $server_pid ($comm), c2s 127.0.0.1:$port"
}

stop_server() {
  [ -n "$server_pid" ] || return 0
  kill "$server_pid" 2>/dev/null || true
  local i
  for i in $(seq 150); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

# Waits (up to --wait-idle seconds) until the rest of the machine is quiet: less than 0.3
# cores busy over one second. Prints the busy cores it last saw.
wait_quiet() {
  local deadline=$((SECONDS + wait_idle)) busy
  while :; do
    busy="$(python3 - <<'EOF'
import time
def snap():
    f = open('/proc/stat').readline().split()[1:]
    v = list(map(int, f))
    idle = v[3] + v[4]
    return sum(v) - idle
a = snap(); time.sleep(1); b = snap()
import os
print("%.2f" % ((b - a) / os.sysconf('SC_CLK_TCK')))
EOF
)"
    if python3 -c "import sys; sys.exit(0 if $busy < 0.3 else 1)" || [ "$SECONDS" -ge "$deadline" ]; then
      echo "$busy"
      return
    fi
    sleep 2
  done
}

# ---------------------------------------------------------------------------------------------
# Runs

users=$(( sessions > 2 * pairs ? sessions : 2 * pairs ))
users=$(( members > users ? members : users ))
spare=$((users + 1))           # users spare..spare+9: warm-up logins, never measured
total=$((users + 10))

# The SCRAM cache is per server: each has its own salts.
common_args() { echo --server "127.0.0.1:$port" --scram-cache "$work/$1.scram-cache"; }

# Registers everyone on a seed data directory and fills the SCRAM cache.
make_seed() {
  local srv="$1" seed="$work/$srv-seed"
  mkdir -p "$seed"
  start_server "$srv" minimal "$seed"
  log "$srv: registering user1..user$total"
  "$bench" register --server "127.0.0.1:$port" --count "$total" --connections 8 \
    >"$out/$srv-register.out" 2>&1 || die "$srv: registration failed (see $out/$srv-register.out)"
  tail -n 1 "$out/$srv-register.out" >&2
  log "$srv: one login per account for the SCRAM cache"
  "$bench" connect $(common_args "$srv") --count "$total" --hold 0 --settle 0 \
    >"$out/$srv-cache.out" 2>&1 || die "$srv: cache logins failed (see $out/$srv-cache.out)"
  stop_server
}

# run_scenario SERVER PROFILE SCENARIO
run_scenario() {
  local srv="$1" profile="$2" scenario="$3"
  local dir="$work/$srv-$profile-$scenario" res="$out/$profile/$srv"
  rm -rf "$dir"
  cp -a "$work/$srv-seed" "$dir"
  rm -f "$dir"/*.log "$dir"/server.* "$dir"/error.log
  mkdir -p "$res"
  local other
  other="$(wait_quiet)"
  start_server "$srv" "$profile" "$dir"
  local c
  c="$(common_args "$srv")"
  # Warm-up: 10 logins of spare users (one-time costs are then not spread over the sessions).
  "$bench" connect $c --first "$spare" --count 10 --hold 0 --settle 0 >"$res/$scenario-warmup.out" 2>&1 ||
    die "$srv: warm-up failed (see $res/$scenario-warmup.out)"
  case "$scenario" in
    connect)
      log "$srv ($profile): connect $sessions (machine busy before: $other cores)"
      "$bench" connect $c --count "$sessions" --hold 3 --settle 2 --pid "$server_pid" \
        >"$res/connect.out" 2>"$res/connect.err" || log "$srv: connect exited with an error"
      ;;
    chat)
      "$bench" chat $c --first "$spare" --pairs 1 --rate 20 --duration 1 \
        >>"$res/$scenario-warmup.out" 2>&1 || die "$srv: chat warm-up failed (see $res/$scenario-warmup.out)"
      log "$srv ($profile): chat $pairs pairs, max rate, $duration s (machine busy before: $other cores)"
      local chat_extra=""
      [ "$profile" = full ] && chat_extra="--sm --carbons" # exercise the loaded modules
      "$bench" chat $c --pairs "$pairs" --max --inflight "$inflight" --duration "$duration" $chat_extra \
        --pid "$server_pid" >"$res/chat.out" 2>"$res/chat.err" || log "$srv: chat exited with an error"
      ;;
    group)
      # A server without a MUC service fails here: its group rows stay empty.
      if "$bench" group $c --first "$spare" --members 3 --online 3 --senders 1 --rate 20 \
        --duration 1 --room warmup >>"$res/$scenario-warmup.out" 2>&1; then
        local pace="--max --inflight $inflight"
        [ "$group_rate" = max ] || pace="--rate $group_rate"
        log "$srv ($profile): group $members members, $online online, $senders senders, $pace, $duration s (machine busy before: $other cores)"
        "$bench" group $c --members "$members" --online "$online" --senders "$senders" $pace \
          --duration "$duration" --pid "$server_pid" \
          >"$res/group.out" 2>"$res/group.err" || log "$srv: group exited with an error"
      else
        log "$srv: group warm-up failed (no MUC service?), see $res/$scenario-warmup.out"
      fi
      ;;
  esac
  local rss_kib
  rss_kib="$(awk '/^VmRSS/ {print $2}' "/proc/$server_pid/status" 2>/dev/null || echo "")"
  stop_server
  # Keep the server's log and configuration next to the results.
  for f in server.out server.err ejabberd.log error.log prosody.log ejabberd.yml prosody.cfg.lua; do
    [ -f "$dir/$f" ] && cp "$dir/$f" "$res/$scenario-$f"
  done
  # One JSON line: the scenario's report plus what this script knows.
  python3 - "$res/$scenario.out" "$srv" "$profile" "$scenario" "$other" "${rss_kib:-0}" \
    "$(version_of "$srv")" >>"$out/results.jsonl" <<'EOF'
import json, sys
path, srv, profile, scenario, other, rss, version = sys.argv[1:]
report = None
try:
    lines = [l for l in open(path).read().splitlines() if l.startswith("{")]
    report = json.loads(lines[-1]) if lines else None
except OSError:
    pass
print(json.dumps({"server": srv, "version": version, "profile": profile, "scenario": scenario,
                  "machine_busy_before_cores": float(other),
                  "server_rss_end_kib": int(rss or 0), "report": report}))
EOF
  rm -rf "$dir"
}

log "results in $out"
: >"$out/results.jsonl"
{
  echo "date: $(date -Is)"
  echo "host: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  echo "command: $command_line"
  echo "profiles: ${profiles[*]}  sessions: $sessions  pairs: $pairs  duration: $duration  inflight: $inflight"
  echo "scenarios: ${scenarios[*]}  group: $members members, $online online, $senders senders, rate $group_rate"
  for s in "${servers[@]}"; do echo "$s: $(version_of "$s")"; done
} >"$out/run.txt"

for srv in "${servers[@]}"; do
  make_seed "$srv"
  for profile in "${profiles[@]}"; do
    for scenario in "${scenarios[@]}"; do
      run_scenario "$srv" "$profile" "$scenario"
    done
  done
done

# ---------------------------------------------------------------------------------------------
# The table

python3 - "$out/results.jsonl" "$sessions" "$pairs" "$duration" "$inflight" "$members" "$online" "$senders" "$group_rate" <<'EOF' | tee "$out/table.txt"
import json, sys
path, sessions, pairs, duration, inflight, members, online, senders, group_rate = sys.argv[1:]
rows = [json.loads(l) for l in open(path) if l.strip()]
by = {(r["profile"], r["server"], r["scenario"]): r for r in rows}
servers = ["ejabberd", "prosody", "confab"]
profiles = [p for p in ["minimal", "full"] if any(r["profile"] == p for r in rows)]

def get(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d

def per(a, b, scale=1.0):
    return None if a is None or not b else a / b * scale

metrics = [
    # (scenario, label, better, function of report)
    ("connect", f"connect {sessions}: RSS per idle session (KiB)", "lower",
     lambda r: get(r, "rss_per_session_kib")),
    ("connect", "connect: server RSS before (MiB)", "lower",
     lambda r: per(get(r, "rss_before_kib"), 1024)),
    ("connect", "connect: sessions online", "higher", lambda r: get(r, "succeeded")),
    ("connect", "connect: login rate (/s)", "higher", lambda r: get(r, "login_rate_per_s")),
    ("connect", "connect: login p99 (ms)", "lower", lambda r: get(r, "login_latency", "p99_ms")),
    ("connect", "connect: server CPU per login (µs)", "lower",
     lambda r: per(get(r, "cpu_during_logins", "server_cpu_s"), get(r, "succeeded"), 1e6)),
    ("connect", "connect: other processes (cores)", "info",
     lambda r: get(r, "cpu_during_logins", "other_cores")),
    ("chat", f"chat {pairs} pairs max: delivered (msgs/s)", "higher",
     lambda r: get(r, "throughput_per_s")),
    ("chat", "chat: latency p50 (ms)", "lower", lambda r: get(r, "latency", "p50_ms")),
    ("chat", "chat: latency p99 (ms)", "lower", lambda r: get(r, "latency", "p99_ms")),
    ("chat", "chat: server CPU per message (µs)", "lower",
     lambda r: get(r, "server_cpu_us_per_msg")),
    ("chat", "chat: server busy (cores)", "info", lambda r: get(r, "cpu", "server_cores")),
    ("chat", "chat: lost + duplicated", "lower",
     lambda r: None if r is None else (r.get("lost") or 0) + (r.get("duplicated") or 0)),
    ("chat", "chat: other processes (cores)", "info", lambda r: get(r, "cpu", "other_cores")),
    ("group", f"group {members}/{online}/{senders} {group_rate}: deliveries (/s)", "higher",
     lambda r: get(r, "deliveries_per_s")),
    ("group", "group: latency p50 (ms)", "lower", lambda r: get(r, "latency", "p50_ms")),
    ("group", "group: latency p99 (ms)", "lower", lambda r: get(r, "latency", "p99_ms")),
    ("group", "group: server CPU per delivery (µs)", "lower",
     lambda r: get(r, "server_cpu_us_per_delivery")),
    ("group", "group: join time (s)", "lower", lambda r: get(r, "join_s")),
    ("group", "group: lost + duplicated", "lower",
     lambda r: None if r is None else (r.get("lost") or 0) + (r.get("duplicated") or 0)),
    ("group", "group: other processes (cores)", "info", lambda r: get(r, "cpu", "other_cores")),
]

def fmt(v):
    if v is None:
        return "—"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 100):
        return f"{int(v):,}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"

def ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×"

summary = {"sessions": int(sessions), "pairs": int(pairs), "duration_s": float(duration),
           "inflight_per_pair": int(inflight), "group_members": int(members),
           "group_online": int(online), "group_senders": int(senders),
           "group_rate_per_sender": None if group_rate == "max" else float(group_rate),
           "profiles": {}}
out = []
for profile in profiles:
    head = ["", "ejabberd", "Prosody", "Confab", "Confab/ejabberd", "Confab/Prosody", "better"]
    table = []
    summary["profiles"][profile] = {}
    for scenario, label, better, f in metrics:
        vals = [f(get(by.get((profile, s, scenario)), "report")) for s in servers]
        if all(v is None for v in vals):
            continue
        ratios = ["", ""] if better == "info" else [ratio(vals[2], vals[0]), ratio(vals[2], vals[1])]
        table.append([label] + [fmt(v) for v in vals] + ratios + [better])
        summary["profiles"][profile][label] = dict(zip(servers, vals))
    widths = [max(len(r[i]) for r in [head] + table) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i])
                               for i, c in enumerate(r))
    out.append(f"== profile {profile} ==")
    out.append(line(head))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(r) for r in table)
    out.append("")
versions = {r["server"]: r["version"] for r in rows}
out.append("versions: " + ", ".join(f"{s} {versions.get(s, '—')}" for s in servers))
out.append("Confab archives every chat message in SQLite and acknowledges it only after the "
           "commit (fsync), in both profiles.")
print("\n".join(out))
summary["versions"] = versions
print(json.dumps(summary, ensure_ascii=False))
EOF
log "raw outputs, logs and configurations in $out"
