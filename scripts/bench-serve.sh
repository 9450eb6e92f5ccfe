#!/usr/bin/env bash
# Benchmarks of `pitr serve`; prints the figures as plain lines on stdout (progress and logs go
# to stderr). docs/benchmarks.md ("pitr serve") records a run and the commands.
#
#   scripts/bench-serve.sh [snapshot|replay|lag]...  (default: all)
#
#   snapshot  a big RDB (DEBUG POPULATE, no RDB compression) archived, then, alternating,
#             a redis-server started on that RDB until loaded (native) and an empty
#             redis-server told `REPLICAOF` a `pitr serve --to offset:<snapshot>` until its
#             link is up, the sync done and the keys loaded; the replica both with the default
#             `repl-diskless-load disabled` (RDB to disk, then loaded) and with
#             `repl-diskless-load on-empty-db` (loaded from the socket); next to them, a
#             replica of a real master started on the same RDB (what any full sync costs),
#             and `pitr restore --via replication` into an empty server, from start to exit
#             (target: at most 1.1 of the native load).
#   replay    one million SETs archived from a live master, served by
#             `pitr serve --to latest` to an empty replica until its offset reaches the cut,
#             next to `redis-cli --pipe` of the same commands (the incremental AOF that
#             `pitr restore --output-dir` writes) into an empty server.
#   lag       a master under a steady write load (BENCH_LAG_RATE SETs a second) archived with
#             the default --flush-interval (1 s); a replica of `pitr serve --follow` (default
#             --poll-interval 1 s); every 50 ms a write stamped with the master's TIME (EVAL),
#             the replica polled every 10 ms: the lag is when the replica first shows a stamp
#             minus the stamp (one clock: same machine); p50, p99, max.
#
# Needs redis-server, redis-cli, redis-benchmark 7+ and python3. Every process it starts is
# stopped on exit (also on Ctrl-C) and its scratch directory removed (BENCH_KEEP=1 keeps it).
# Everything listens on 127.0.0.1.
#
# Environment (defaults in brackets):
#   BENCH_ROUNDS           runs of each side of a comparison, alternating       [3]
#   BENCH_SERVE_KEYS       DEBUG POPULATE keys of the big snapshot               [3000000]
#   BENCH_SERVE_VALUE      DEBUG POPULATE value size in bytes                    [100]
#   BENCH_REPLAY_COMMANDS  SETs archived for replay                              [1000000]
#   BENCH_LAG_SECONDS      how long the lag is measured                          [60]
#   BENCH_LAG_RATE         background SETs a second during the lag section      [1000]
#   BENCH_KEEP=1           keep the scratch directory (logs, archives)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
exec </dev/null

ROUNDS="${BENCH_ROUNDS:-3}"
KEYS="${BENCH_SERVE_KEYS:-3000000}"
VALUE="${BENCH_SERVE_VALUE:-100}"
REPLAY_COMMANDS="${BENCH_REPLAY_COMMANDS:-1000000}"
LAG_SECONDS="${BENCH_LAG_SECONDS:-60}"
LAG_RATE="${BENCH_LAG_RATE:-1000}"

select_sections "snapshot replay lag" "$@"
sections=("${SECTIONS[@]}")

WORK="$(mktemp -d "${TMPDIR:-/tmp}/pitr-bench-serve.XXXXXX")"
PIDS=()

# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="${2:-$(now)}" 'BEGIN { printf "%.3f", b - a }'; }
calc() { awk "BEGIN { printf \"${2:-%.3f}\", $1 }"; }
kilo() { awk -v n="$1" 'BEGIN { printf "%.0fk", n / 1000 }'; }
json_num() { grep -o "\"$1\": *-\?[0-9.eE+-]*" | head -n1 | sed 's/.*: *//'; }
best_min() { printf '%s\n' "$@" | sort -g | head -n1; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
dbsize() { redis-cli -p "$1" dbsize | tr -d '\r'; }
info_field() { redis-cli -p "$1" info "$2" | tr -d '\r' | sed -n "s/^$3://p"; }

PITR=""
build() {
  banner "build"
  cargo build --release --bin pitr >&2
  local target
  target="$(cargo metadata --no-deps --format-version 1 \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
  [ -x "$target/release/pitr" ] || die "no $target/release/pitr after the build"
  # A copy: the target directory is shared, and a concurrent build may replace the binary.
  PITR="$WORK/pitr"
  cp "$target/release/pitr" "$PITR"
}

stop_redis_pid() {
  stop_pid "$1" 60
  forget_pid "$1"
}

# wait_loaded PORT PID: polls INFO persistence every 20 ms until loading:0.
wait_loaded() {
  while :; do
    redis-cli -p "$1" info persistence 2>/dev/null | grep -q '^loading:0' && return 0
    kill -0 "$2" 2>/dev/null || die "redis-server on port $1 exited while loading"
    sleep 0.02
  done
}

# The archiver: start_archiver NAME MASTER_PORT STORE [ARGS...].
ARCH_PID=""
ARCH_LOG=""
start_archiver() {
  ARCH_LOG="$WORK/$1-archive.log"
  RUST_LOG=info "$PITR" archive --source "redis://127.0.0.1:$2" --store "$3" "${@:4}" \
    >"$ARCH_LOG" 2>&1 &
  ARCH_PID=$!
  PIDS+=("$ARCH_PID")
}

wait_online() {
  local t=$SECONDS
  until redis-cli -p "$1" info replication | grep -q '^slave0:.*state=online' \
    && grep -qs "snapshot durable" "$ARCH_LOG"; do
    kill -0 "$ARCH_PID" 2>/dev/null || die "the archiver exited: $(tail -n 20 "$ARCH_LOG")"
    [ $((SECONDS - t)) -lt 900 ] || die "the archiver is not online after 900 s"
    sleep 0.1
  done
}

stop_archiver() {
  local rc=0
  kill -TERM "$ARCH_PID"
  wait "$ARCH_PID" || rc=$?
  forget_pid "$ARCH_PID"
  [ "$rc" -eq 0 ] || die "the archiver exited $rc after SIGTERM: $(tail -n 20 "$ARCH_LOG")"
}

# wait_acked MASTER_PORT: everything written so far is archived (a PUBLISH on this connection,
# then WAIT: the stream is ordered).
wait_acked() {
  local out
  out="$(printf 'PUBLISH pitr-bench-serve marker\nWAIT 1 120000\n' | redis-cli -p "$1" | tr -d '\r')"
  [ "$(printf '%s\n' "$out" | tail -n1)" = "1" ] || die "PUBLISH + WAIT 1 120000 answered: $out"
}

snapshot_offset() {
  "$PITR" ls --store "$1" --json \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["generations"][-1]["snapshots"][-1]["offset"])'
}

# start_serve NAME STORE ARGS...: `pitr serve --json` on a free port; sets SERVE_PORT,
# SERVE_PID and SERVE_JSON (what it printed once listening).
SERVE_PORT=""
SERVE_PID=""
SERVE_JSON=""
start_serve() {
  local name="$1" store="$2" i
  shift 2
  SERVE_PORT="$(free_port)"
  RUST_LOG=info "$PITR" serve --store "$store" --listen "127.0.0.1:$SERVE_PORT" --json "$@" \
    >"$WORK/$name-serve.out" 2>"$WORK/$name-serve.log" &
  SERVE_PID=$!
  PIDS+=("$SERVE_PID")
  for ((i = 0; i < 6000; i++)); do
    [ -s "$WORK/$name-serve.out" ] && break
    kill -0 "$SERVE_PID" 2>/dev/null || die "pitr serve exited: $(tail -n 5 "$WORK/$name-serve.log")"
    sleep 0.01
  done
  SERVE_JSON="$(head -n1 "$WORK/$name-serve.out")"
  [ -n "$SERVE_JSON" ] || die "pitr serve did not start listening"
}

# replica_synced PORT: the link is up, no sync in progress, not loading.
replica_synced() {
  local info
  info="$(redis-cli -p "$1" info replication 2>/dev/null | tr -d '\r')"
  printf '%s\n' "$info" | grep -q '^master_link_status:up' || return 1
  printf '%s\n' "$info" | grep -q '^master_sync_in_progress:0' || return 1
  redis-cli -p "$1" info persistence 2>/dev/null | grep -q '^loading:0'
}

# --- snapshot -------------------------------------------------------------------------------

section_snapshot() {
  banner "snapshot: DEBUG POPULATE $KEYS key $VALUE; a replica of pitr serve vs the native load"
  local mport mpid store="$WORK/snap-archive" snap rdb rdb_mb r t0 tport tpid mode
  local native=() disk=() socket=() logged=() real=() via=()
  start_redis snap-master "rdbcompression no" "repl-diskless-sync yes" "repl-diskless-sync-delay 0"
  mport=$REDIS_PORT mpid=$REDIS_PID
  redis-cli -p "$mport" debug populate "$KEYS" key "$VALUE" >/dev/null
  start_archiver snap "$mport" "$store"
  wait_online "$mport"
  stop_archiver
  stop_redis_pid "$mpid"
  snap="$(snapshot_offset "$store")"
  [ -n "$snap" ] || die "no snapshot offset in pitr ls --json"
  # The snapshot as a dump.rdb: --output-dir at its offset.
  "$PITR" restore --store "$store" --to "offset:$snap" --output-dir "$WORK/snap-rdb" --json \
    >"$WORK/snap-rdb.json" 2>"$WORK/snap-rdb.err" || die "restore --output-dir: $(tail -n 5 "$WORK/snap-rdb.err")"
  rdb="$WORK/snap-rdb/dump.rdb"
  [ -s "$rdb" ] || die "no $rdb"
  rdb_mb="$(calc "$(stat -c %s "$rdb") / 1e6" %.0f)"
  start_serve snap "$store" --to "offset:$snap" --timeout 10m
  log "serving: $SERVE_JSON"
  for ((r = 1; r <= ROUNDS; r++)); do
    # Native: a server started on a copy of the RDB, until loading:0.
    rm -rf "${WORK:?}/snap-native"
    mkdir -p "$WORK/snap-native"
    cp "$rdb" "$WORK/snap-native/dump.rdb"
    sync
    t0="$(now)"
    start_redis snap-native "dbfilename dump.rdb"
    wait_loaded "$REDIS_PORT" "$REDIS_PID"
    native+=("$(elapsed "$t0")")
    logged+=("$(grep -o 'loaded from disk: [0-9.]* seconds' "$REDIS_DIR/redis.log" | grep -o '[0-9.]*' | head -n1)")
    [ "$(dbsize "$REDIS_PORT")" = "$KEYS" ] || die "native: $(dbsize "$REDIS_PORT") keys"
    stop_redis_pid "$REDIS_PID"
    rm -rf "${WORK:?}/snap-native"
    log "round $r: native load ${native[-1]} s (logged ${logged[-1]} s)"

    # A replica: an empty server told REPLICAOF, until synced and loaded.
    for mode in disabled on-empty-db; do
      rm -rf "${WORK:?}/snap-replica"
      start_redis snap-replica "repl-diskless-load $mode" "dbfilename dump.rdb"
      tport=$REDIS_PORT tpid=$REDIS_PID
      sync
      t0="$(now)"
      redis-cli -p "$tport" replicaof 127.0.0.1 "$SERVE_PORT" >/dev/null
      until replica_synced "$tport"; do
        kill -0 "$tpid" 2>/dev/null || die "the replica exited: $(tail -n 5 "$REDIS_DIR/redis.log")"
        sleep 0.02
      done
      if [ "$mode" = disabled ]; then
        disk+=("$(elapsed "$t0")")
      else
        socket+=("$(elapsed "$t0")")
      fi
      [ "$(dbsize "$tport")" = "$KEYS" ] || die "replica: $(dbsize "$tport") keys"
      stop_redis_pid "$tpid"
      rm -rf "${WORK:?}/snap-replica"
    done
    log "round $r: replica (repl-diskless-load disabled) ${disk[-1]} s, (on-empty-db) ${socket[-1]} s"

    # The same full sync from a real master: a server started on the RDB (diskless sync, no
    # delay), an empty replica (on-empty-db) told REPLICAOF, until synced and loaded.
    rm -rf "${WORK:?}/snap-real"
    mkdir -p "$WORK/snap-real"
    cp "$rdb" "$WORK/snap-real/dump.rdb"
    start_redis snap-real "dbfilename dump.rdb" "repl-diskless-sync yes" "repl-diskless-sync-delay 0"
    local rport=$REDIS_PORT rpid=$REDIS_PID
    wait_loaded "$rport" "$rpid"
    rm -rf "${WORK:?}/snap-replica"
    start_redis snap-replica "repl-diskless-load on-empty-db" "dbfilename dump.rdb"
    tport=$REDIS_PORT tpid=$REDIS_PID
    sync
    t0="$(now)"
    redis-cli -p "$tport" replicaof 127.0.0.1 "$rport" >/dev/null
    until replica_synced "$tport"; do
      kill -0 "$tpid" 2>/dev/null || die "the replica exited: $(tail -n 5 "$REDIS_DIR/redis.log")"
      sleep 0.02
    done
    real+=("$(elapsed "$t0")")
    [ "$(dbsize "$tport")" = "$KEYS" ] || die "replica of the real master: $(dbsize "$tport") keys"
    stop_redis_pid "$tpid"
    stop_redis_pid "$rpid"
    rm -rf "${WORK:?}/snap-replica" "${WORK:?}/snap-real"

    # The restore itself: `pitr restore --via replication` into an empty server, start to exit.
    rm -rf "${WORK:?}/snap-target"
    start_redis snap-target "dbfilename dump.rdb"
    tport=$REDIS_PORT tpid=$REDIS_PID
    sync
    t0="$(now)"
    "$PITR" restore --store "$store" --to "offset:$snap" --target "redis://127.0.0.1:$tport" \
      --via replication --json >"$WORK/snap-via.json" 2>"$WORK/snap-via.err" \
      || die "restore --via replication: $(tail -n 5 "$WORK/snap-via.err")"
    via+=("$(elapsed "$t0")")
    [ "$(dbsize "$tport")" = "$KEYS" ] || die "restore --via replication: $(dbsize "$tport") keys"
    stop_redis_pid "$tpid"
    rm -rf "${WORK:?}/snap-target"
    log "round $r: replica of a real master ${real[-1]} s; pitr restore --via replication ${via[-1]} s"
  done
  # pitr's own part: the same full sync read by a client that only counts the bytes.
  local raw
  raw="$(python3 - "$SERVE_PORT" <<'EOF'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
t = time.time()
s.sendall(b"PSYNC ? -1\r\n")
f = s.makefile("rb")
f.readline()
n = int(f.readline()[1:])
got = 0
while got < n:
    got += len(f.read(min(1 << 20, n - got)))
print("%.3f" % (time.time() - t))
EOF
)"
  stop_pid "$SERVE_PID"
  forget_pid "$SERVE_PID"
  local n d s
  n="$(best_min "${native[@]}")"
  d="$(best_min "${disk[@]}")"
  s="$(best_min "${socket[@]}")"
  echo "snapshot: RDB $rdb_mb MB, $KEYS keys of $VALUE bytes (rdbcompression no), best of $ROUNDS alternating runs each"
  echo "snapshot: native start-up load $n s (start to loading:0; logged 'DB loaded from disk' $(best_min "${logged[@]}") s)"
  echo "snapshot: replica of pitr serve --to, repl-diskless-load disabled (default): $d s (REPLICAOF to synced and loaded), ratio $(calc "$d / $n" %.2f) (target <= 1.10: $(awk -v x="$d" -v y="$n" 'BEGIN { print (x / y <= 1.1 ? "met" : "NOT met") }'))"
  echo "snapshot: replica of pitr serve --to, repl-diskless-load on-empty-db: $s s, ratio $(calc "$s / $n" %.2f) (target <= 1.10: $(awk -v x="$s" -v y="$n" 'BEGIN { print (x / y <= 1.1 ? "met" : "NOT met") }'))"
  local m v
  m="$(best_min "${real[@]}")"
  v="$(best_min "${via[@]}")"
  echo "snapshot: replica of a real master holding the same RDB (diskless sync, on-empty-db): $m s, ratio $(calc "$m / $n" %.2f) (what any full sync costs)"
  echo "snapshot: pitr restore --via replication into an empty server (start to exit): $v s, ratio $(calc "$v / $n" %.2f) (target <= 1.10: $(awk -v x="$v" -v y="$n" 'BEGIN { print (x / y <= 1.1 ? "met" : "NOT met") }'))"
  local rd=() rs=() rr=() rv=()
  for ((r = 0; r < ROUNDS; r++)); do
    rd+=("$(calc "${disk[r]} / ${native[r]}" %.2f)")
    rs+=("$(calc "${socket[r]} / ${native[r]}" %.2f)")
    rr+=("$(calc "${real[r]} / ${native[r]}" %.2f)")
    rv+=("$(calc "${via[r]} / ${native[r]}" %.2f)")
  done
  echo "snapshot: pitr serve's part: the whole full sync (+FULLRESYNC and $rdb_mb MB of RDB) read by a client that only counts the bytes: $raw s"
  echo "snapshot: median of the rounds' ratios: disabled $(median "${rd[@]}") (${rd[*]}), on-empty-db $(median "${rs[@]}") (${rs[*]}), real master $(median "${rr[@]}") (${rr[*]}), restore --via replication $(median "${rv[@]}") (${rv[*]})"
  echo "snapshot: runs: native ${native[*]}; replica (disk) ${disk[*]}; replica (on-empty-db) ${socket[*]}; replica of a real master ${real[*]}; restore --via replication ${via[*]}"
}

# --- replay ---------------------------------------------------------------------------------

section_replay() {
  banner "replay: $REPLAY_COMMANDS SETs through pitr serve vs redis-cli --pipe"
  local mport mpid store="$WORK/replay-archive" keys aof cmds cut r t0 tport tpid out n
  local served=() piped=()
  start_redis replay-master "repl-diskless-sync yes" "repl-diskless-sync-delay 0"
  mport=$REDIS_PORT mpid=$REDIS_PID
  start_archiver replay "$mport" "$store"
  wait_online "$mport"
  redis-benchmark -p "$mport" -t set -n "$REPLAY_COMMANDS" -r "$REPLAY_COMMANDS" -P 64 -q >&2
  wait_acked "$mport"
  keys="$(dbsize "$mport")"
  stop_archiver
  stop_redis_pid "$mpid"
  "$PITR" restore --store "$store" --to latest --output-dir "$WORK/replay-files" --json \
    >"$WORK/replay-files.json" 2>"$WORK/replay-files.err" || die "restore --output-dir: $(tail -n 5 "$WORK/replay-files.err")"
  aof="$WORK/replay-files/appendonlydir/appendonly.aof.1.incr.aof"
  [ -s "$aof" ] || die "no $aof"
  cmds="$(json_num commands <"$WORK/replay-files.json")"
  start_serve replay "$store" --to latest
  cut="$(printf '%s' "$SERVE_JSON" | json_num cut_offset)"
  log "serving: $SERVE_JSON; $cmds commands; $(stat -c %s "$aof") bytes of RESP"
  for ((r = 1; r <= ROUNDS; r++)); do
    start_redis "replay-replica-$r"
    tport=$REDIS_PORT tpid=$REDIS_PID
    t0="$(now)"
    redis-cli -p "$tport" replicaof 127.0.0.1 "$SERVE_PORT" >/dev/null
    until [ "$(info_field "$tport" replication slave_repl_offset)" -ge "$cut" ] 2>/dev/null \
      && [ "$(info_field "$tport" replication master_link_status)" = up ]; do
      kill -0 "$tpid" 2>/dev/null || die "the replica exited"
      sleep 0.01
    done
    served+=("$(elapsed "$t0")")
    [ "$(dbsize "$tport")" = "$keys" ] || die "replica: $(dbsize "$tport") keys, the master had $keys"
    stop_redis_pid "$tpid"

    start_redis "replay-pipe-$r"
    tport=$REDIS_PORT tpid=$REDIS_PID
    t0="$(now)"
    out="$(redis-cli -p "$tport" --pipe <"$aof" 2>&1)"
    piped+=("$(elapsed "$t0")")
    printf '%s\n' "$out" | grep -q 'errors: 0,' || die "redis-cli --pipe: $out"
    [ "$(dbsize "$tport")" = "$keys" ] || die "redis-cli --pipe: $(dbsize "$tport") keys"
    stop_redis_pid "$tpid"
    log "round $r: replica of pitr serve ${served[-1]} s, redis-cli --pipe ${piped[-1]} s"
  done
  stop_pid "$SERVE_PID"
  forget_pid "$SERVE_PID"
  local s p
  s="$(best_min "${served[@]}")"
  p="$(best_min "${piped[@]}")"
  n="$cmds"
  echo "replay: $n commands ($(stat -c %s "$aof") bytes of RESP), best of $ROUNDS alternating runs each"
  echo "replay: replica of pitr serve --to latest (REPLICAOF to offset $cut) $s s, $(kilo "$(calc "$n / $s" %.0f)") cmd/s; redis-cli --pipe $p s, $(kilo "$(calc "$n / $p" %.0f)") cmd/s; rate ratio serve/pipe $(calc "$p / $s" %.2f)"
  echo "replay: runs: serve ${served[*]}; redis-cli --pipe ${piped[*]}"
}

# --- lag ------------------------------------------------------------------------------------

section_lag() {
  banner "lag: pitr serve --follow under $LAG_RATE SETs/s for $LAG_SECONDS s"
  local mport mpid store="$WORK/lag-archive" rport rpid
  start_redis lag-master "repl-diskless-sync yes" "repl-diskless-sync-delay 0"
  mport=$REDIS_PORT mpid=$REDIS_PID
  redis-cli -p "$mport" set lag:stamp 0 >/dev/null
  start_archiver lag "$mport" "$store"
  wait_online "$mport"
  start_serve lag "$store" --follow
  start_redis lag-replica "replicaof 127.0.0.1 $SERVE_PORT"
  rport=$REDIS_PORT rpid=$REDIS_PID
  until replica_synced "$rport"; do sleep 0.05; done
  python3 - "$mport" "$rport" "$LAG_SECONDS" "$LAG_RATE" >"$WORK/lag.txt" <<'EOF'
import socket, sys, time

def conn(port):
    s = socket.create_connection(("127.0.0.1", int(port)))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s, s.makefile("rb")

def cmd(c, *args):
    s, f = c
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    s.sendall(out)
    line = f.readline()
    if line[:1] == b"$":
        n = int(line[1:])
        return None if n < 0 else f.read(n + 2)[:-2]
    if line[:1] == b"-":
        raise SystemExit("error: %r" % line)
    return line[1:].strip()

master, replica = conn(sys.argv[1]), conn(sys.argv[2])
seconds, rate = float(sys.argv[3]), int(sys.argv[4])
stamp = ("local t = redis.call('TIME') "
         "local ms = t[1] * 1000 + math.floor(t[2] / 1000) "
         "redis.call('SET', 'lag:stamp', ms) return ms")
start = time.time()
tick, i, seen, lags, pending = 0, 0, 0, [], []
while time.time() - start < seconds:
    tick += 1
    target = start + tick * 0.01
    # The steady load: rate/100 SETs every 10 ms.
    for _ in range(rate // 100):
        cmd(master, "SET", "lag:key:%d" % (i % 100000), "v" * 100)
        i += 1
    if tick % 5 == 0:
        pending.append(int(cmd(master, "EVAL", stamp, 0)))
    got = int(cmd(replica, "GET", "lag:stamp") or 0)
    if got != seen:
        # Every stamp up to the one shown has arrived by now (within this 10 ms poll).
        now_ms = time.time() * 1000
        lags.extend(now_ms - s for s in pending if s <= got)
        pending = [s for s in pending if s > got]
        seen = got
    d = target - time.time()
    if d > 0:
        time.sleep(d)
lags.sort()
q = lambda p: lags[min(len(lags) - 1, int(p * len(lags)))]
print(len(lags), i, "%.0f %.0f %.0f %.0f" % (q(0.5), q(0.99), lags[-1], lags[0]))
EOF
  local samples writes p50 p99 max min
  read -r samples writes p50 p99 max min <"$WORK/lag.txt"
  [ "$samples" -gt 0 ] || die "no stamp reached the replica"
  stop_redis_pid "$rpid"
  stop_pid "$SERVE_PID"
  forget_pid "$SERVE_PID"
  stop_archiver
  stop_redis_pid "$mpid"
  echo "lag: pitr serve --follow (--poll-interval 1s) of pitr archive (--flush-interval 1s), $LAG_SECONDS s under $LAG_RATE SETs/s ($writes SETs): one stamp written every 50 ms, $samples seen on the replica (polled every 10 ms: a stamp's lag is when the replica first showed it or a newer one, minus its master TIME)"
  echo "lag: replica behind the master: p50 $p50 ms, p99 $p99 ms, max $max ms, min $min ms"
}

build
for s in "${sections[@]}"; do
  "section_$s"
done
