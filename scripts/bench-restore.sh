#!/usr/bin/env bash
# Benchmarks of `pitr restore`; prints the figures as plain lines on stdout (progress and
# logs go to stderr). docs/benchmarks.md ("Restore") records a run and the commands.
#
#   scripts/bench-restore.sh [replay|snapshot|files|rss|latency|day|all]...  (default: all)
#
#   replay    >= 1M small commands archived from a live master, replayed by
#             `pitr restore --to latest --target` into an empty server, next to
#             `redis-cli --pipe` of the same commands (the incremental AOF that
#             `pitr restore --output-dir` writes) into another empty server; alternating,
#             BENCH_ROUNDS times each, best of each (target: ratio >= 0.90).
#   snapshot  the snapshot phase of a live restore (RESTORE per key, and with
#             --max-restore-bytes 1 the commands path) of a big RDB (DEBUG POPULATE, no RDB
#             compression), next to a redis-server loading the same RDB at start-up.
#   files     `pitr restore --output-dir` of that snapshot plus commands after it, then a
#             redis-server started with the printed command line until loaded, next to a
#             redis-server loading the master's own SAVEd dump.rdb of the same point
#             (target: ratio <= 1.20).
#   rss       RDB parse throughput (cargo bench --bench rdb_parse, and `pitr verify` of the
#             big snapshot), and peak RSS (ru_maxrss = VmHWM) of `pitr restore` in both modes
#             on the big snapshot, on one huge list, on one huge string (random bytes, and
#             zeros, which the RDB holds LZF-compressed) and on an archive of full 64 MiB
#             segments of small commands (target <= 256 MiB).
#   latency   an archive of >= BENCH_LATENCY_SEGMENTS segments on Garage (S3 on 127.0.0.1),
#             written with --flush-interval 10ms under a steady write load; then
#             `pitr restore --to latest --output-dir` and `pitr verify` through
#             scripts/latency-proxy.py adding a 20 ms round trip (an object store in the same
#             region), with --parallel 1 and the default side by side, alternating, and once
#             straight to Garage; prints the times and their ratio.
#   day       an archive on Garage of one simulated day at the default settings scaled down
#             S times (BENCH_DAY_SCALE): --flush-interval 1s/S, --snapshot-interval 24h/S,
#             --compaction-levels 1m/S,1h/S,24h/S (whole seconds, at least 1 s), of a data set
#             of BENCH_DAY_KEYS random values under a steady load of BENCH_DAY_RATE SETs a
#             second, stopped just before the scheduled snapshot falls due (the latest moment
#             then replays a whole interval of stream); prints the objects per level and per
#             simulated day, then, alternating, a redis-server loading the master's dump.rdb
#             and `pitr restore --to latest --output-dir` through scripts/latency-proxy.py
#             (BENCH_DAY_RTT_MS) plus a redis-server loading its files (same DEBUG DIGEST),
#             their ratio, `pitr verify` through the proxy, and the S3 requests of each
#             (Garage's metrics).
#
# The big archive (snapshot, files, rss) is made once per run and shared. Needs redis-server,
# redis-cli, redis-benchmark 7+, GNU time (/usr/bin/time) and coreutils/procps/awk; latency
# also garage (scripts/install-deps.sh) and python3, day also curl. Every
# process it starts is stopped on exit (also on Ctrl-C), and its scratch directory is removed
# (BENCH_KEEP=1 keeps it). Everything listens on 127.0.0.1.
#
# Environment (defaults in brackets):
#   BENCH_ROUNDS            runs of each side of a comparison, alternating       [2]
#   BENCH_REPLAY_COMMANDS   commands written for replay                          [1000000]
#   BENCH_BIG_KEYS          DEBUG POPULATE keys of the big snapshot              [5000000]
#   BENCH_BIG_VALUE         DEBUG POPULATE value size in bytes                   [100]
#   BENCH_FILES_COMMANDS    SETs written after the big snapshot (files section)  [200000]
#   BENCH_LIST_ELEMENTS     elements of the huge list (rss)                      [4000000]
#   BENCH_STRING_MB         MiB of the huge string (rss)                         [300]
#   BENCH_SEGMENT_COMMANDS  SETs archived with --flush-interval 120s (rss)       [2000000]
#   BENCH_SKIP_CRITERION=1  rss: skip cargo bench --bench rdb_parse
#   BENCH_LATENCY_SEGMENTS  segments archived at least (latency)                 [1000]
#   BENCH_LATENCY_RTT_MS    round trip the proxy adds, ms (latency)              [20]
#   BENCH_DAY_SCALE         S: how many times shorter the simulated day is (day)  [240]
#   BENCH_DAY_KEYS          keys of the data set (day)                           [2000000]
#   BENCH_DAY_VALUE         value size in bytes (day)                            [120]
#   BENCH_DAY_RATE          SETs a second during the day (day)                   [1000]
#   BENCH_DAY_RTT_MS        round trip the proxy adds, ms (day)                  [20]
#   BENCH_DAY_ARCHIVE_VIA   the archiver writes "direct" to Garage or via "proxy" [direct]
#   BENCH_DAY_FLUSH_MS      --flush-interval in ms instead of 1s/S (day)
#   BENCH_DAY_MARGIN_MS     the load stops this long before the snapshot is due  [3000]
#   BENCH_KEEP=1            keep the scratch directory (logs, archives)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
exec </dev/null

ROUNDS="${BENCH_ROUNDS:-2}"
REPLAY_COMMANDS="${BENCH_REPLAY_COMMANDS:-1000000}"
BIG_KEYS="${BENCH_BIG_KEYS:-5000000}"
BIG_VALUE="${BENCH_BIG_VALUE:-100}"
FILES_COMMANDS="${BENCH_FILES_COMMANDS:-200000}"
LIST_ELEMENTS="${BENCH_LIST_ELEMENTS:-4000000}"
STRING_MB="${BENCH_STRING_MB:-300}"
SEGMENT_COMMANDS="${BENCH_SEGMENT_COMMANDS:-2000000}"
LATENCY_SEGMENTS="${BENCH_LATENCY_SEGMENTS:-1000}"
LATENCY_RTT_MS="${BENCH_LATENCY_RTT_MS:-20}"
DAY_SCALE="${BENCH_DAY_SCALE:-240}"
DAY_KEYS="${BENCH_DAY_KEYS:-2000000}"
DAY_VALUE="${BENCH_DAY_VALUE:-120}"
DAY_RATE="${BENCH_DAY_RATE:-1000}"
DAY_RTT_MS="${BENCH_DAY_RTT_MS:-20}"
DAY_ARCHIVE_VIA="${BENCH_DAY_ARCHIVE_VIA:-direct}"
DAY_MARGIN_MS="${BENCH_DAY_MARGIN_MS:-3000}"
case "$DAY_ARCHIVE_VIA" in direct | proxy) ;; *) die "BENCH_DAY_ARCHIVE_VIA: direct or proxy" ;; esac

select_sections "replay snapshot files rss latency day" "$@"
sections=("${SECTIONS[@]}")

WORK="$(mktemp -d "${TMPDIR:-/tmp}/pitr-bench-restore.XXXXXX")"
PIDS=()

# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

# Seconds since the epoch, with nanoseconds.
now() { date +%s.%N; }
# elapsed START [END]: seconds between two now() values, 3 decimals.
elapsed() { awk -v a="$1" -v b="${2:-$(now)}" 'BEGIN { printf "%.3f", b - a }'; }
# calc EXPR: awk arithmetic, printed with %.3f unless a format is given as $2.
calc() { awk "BEGIN { printf \"${2:-%.3f}\", $1 }"; }
# A number in thousands: 812345.6 -> 812k.
kilo() { awk -v n="$1" 'BEGIN { printf "%.0fk", n / 1000 }'; }
# The first numeric value of "FIELD": in a JSON text on stdin.
json_num() { grep -o "\"$1\": *-\?[0-9.eE+-]*" | head -n1 | sed 's/.*: *//'; }
json_str() { grep -o "\"$1\": *\"[^\"]*\"" | head -n1 | sed 's/^[^:]*: *"//; s/"$//'; }

TARGET_DIR=""
PITR=""
build() {
  banner "build"
  cargo build --release --bin pitr >&2
  TARGET_DIR="$(cargo metadata --no-deps --format-version 1 \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
  [ -x "$TARGET_DIR/release/pitr" ] || die "no $TARGET_DIR/release/pitr after the build"
  # A copy: the target directory is shared, and a concurrent build may replace the binary.
  PITR="$WORK/pitr"
  cp "$TARGET_DIR/release/pitr" "$PITR"
}

# --- redis-server -------------------------------------------------------------------------


# wait_loaded PORT PID: polls INFO persistence every 20 ms until loading:0.
wait_loaded() {
  local port="$1" pid="$2" info
  while :; do
    info="$(redis-cli -p "$port" info persistence 2>/dev/null || true)"
    # (not async_loading:0)
    printf '%s\n' "$info" | grep -q '^loading:0' && return 0
    kill -0 "$pid" 2>/dev/null || die "redis-server on port $port exited while loading"
    sleep 0.02
  done
}

stop_redis_pid() {
  stop_pid "$1" 60
  forget_pid "$1"
}

dbsize() {
  redis-cli -p "$1" dbsize | tr -d '\r'
}

replica_online() {
  redis-cli -p "$1" info replication | grep -q '^slave0:.*state=online'
}

# "DB loaded from disk: 3.141 seconds" (or the AOF's) from a server's log.
logged_load_seconds() {
  grep -o 'loaded from \(disk\|append only file\): [0-9.]* seconds' "$1" | tail -n1 \
    | grep -o '[0-9.]* seconds' | cut -d' ' -f1 || echo "?"
}

# --- the archiver ---------------------------------------------------------------------------

ARCH_PID=""
ARCH_LOG=""
# start_archiver NAME MASTER_PORT STORE [FLUSH_INTERVAL (1s) [ARGS...]]: RUST_LOG is
# $ARCH_RUST_LOG (default info).
ARCH_RUST_LOG="info"
start_archiver() {
  ARCH_LOG="$WORK/$1-archive.log"
  RUST_LOG="$ARCH_RUST_LOG" "$PITR" archive --source "redis://127.0.0.1:$2" --store "$3" \
    --flush-interval "${4:-1s}" "${@:5}" >"$ARCH_LOG" 2>&1 &
  ARCH_PID=$!
  PIDS+=("$ARCH_PID")
}

# wait_online MASTER_PORT: the archiver is an online replica and its snapshot is durable.
wait_online() {
  local t=$SECONDS
  until replica_online "$1" && grep -qs "snapshot durable" "$ARCH_LOG"; do
    kill -0 "$ARCH_PID" 2>/dev/null || die "the archiver exited: $(tail -n 20 "$ARCH_LOG")"
    [ $((SECONDS - t)) -lt 900 ] || die "the archiver is not online after 900 s"
    sleep 0.1
  done
}

# stop_archiver: SIGTERM (flush, upload, exit 0).
stop_archiver() {
  local rc=0
  kill -TERM "$ARCH_PID"
  wait "$ARCH_PID" || rc=$?
  forget_pid "$ARCH_PID"
  [ "$rc" -eq 0 ] || die "the archiver exited $rc after SIGTERM: $(tail -n 20 "$ARCH_LOG")"
  if grep -q " WARN \| ERROR " "$ARCH_LOG"; then
    log "archiver warnings:"
    grep " WARN \| ERROR " "$ARCH_LOG" | head -n 5 >&2
  fi
}

# wait_acked MASTER_PORT: everything written so far is in the store. WAIT only waits for the
# writes of its own connection, so this connection first writes to the replication stream
# itself: a PUBLISH (replicated, changes no key, and not replayed by a restore); the stream
# is ordered, so once it is acknowledged, so is every write before it.
wait_acked() {
  local out
  out="$(printf 'PUBLISH pitr-bench-restore marker\nWAIT 1 120000\n' | redis-cli -p "$1" | tr -d '\r')"
  [ "$(printf '%s\n' "$out" | tail -n1)" = "1" ] || die "PUBLISH + WAIT 1 120000 answered: $out"
}

# The snapshot offset of the only generation of an archive.
snapshot_offset() {
  "$PITR" ls --store "$1" --json \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["generations"][0]["snapshots"][0]["offset"])'
}

# timed_restore OUT ARGS...: runs `pitr restore ARGS --json` under GNU time; the report goes
# to OUT.json, stderr to OUT.err, and the figures to globals: T_WALL (s), T_RSS_KIB, T_CPU
# (user + system seconds).
T_WALL=""
T_RSS_KIB=""
T_CPU=""
timed_restore() {
  local out="$1" t0 rc=0
  shift
  t0="$(now)"
  /usr/bin/time -f '%U %S %M' -o "$out.rss" "$PITR" restore "$@" --json >"$out.json" 2>"$out.err" || rc=$?
  T_WALL="$(elapsed "$t0")"
  [ "$rc" -eq 0 ] || die "pitr restore $* failed ($rc): $(tail -n 5 "$out.err")"
  T_RSS_KIB="$(tail -n1 "$out.rss" | awk '{ print $3 }')"
  T_CPU="$(tail -n1 "$out.rss" | awk '{ printf "%.2f", $1 + $2 }')"
}

# server_secs PORT: the server's time per command (INFO commandstats), in seconds, for the
# commands that took at least 0.05 s: "restore 10.1 s, eval 10.9 s".
server_secs() {
  redis-cli -p "$1" info commandstats | tr -d '\r' | awk -F'[_:,=]' '/^cmdstat_/ {
    for (i = 1; i <= NF; i++) if ($i == "usec") { u = $(i + 1); break }
    if (u >= 50000) { printf "%s%s %.1f s", sep, $2, u / 1e6; sep = ", " }
  }'
}

# best A B...: the smallest number.
best_min() { printf '%s\n' "$@" | sort -g | head -n1; }
best_max() { printf '%s\n' "$@" | sort -g | tail -n1; }
# The median of numbers (the lower middle one for an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# --- replay ---------------------------------------------------------------------------------

section_replay() {
  banner "replay: $REPLAY_COMMANDS commands"
  local mport mpid store="$WORK/replay-archive" keys aof r tport tpid out secs cmds n
  local pitr_rates=() pitr_wall_rates=() pipe_rates=() pitr_runs="" pipe_runs="" pitr_rss=0 files_rss pitr_cpu=""
  start_redis replay-master "repl-diskless-sync yes" "repl-diskless-sync-delay 0"
  mport=$REDIS_PORT mpid=$REDIS_PID
  start_archiver replay "$mport" "$store"
  wait_online "$mport"
  log "redis-benchmark -t set -n $REPLAY_COMMANDS -r $REPLAY_COMMANDS -P 64"
  redis-benchmark -p "$mport" -t set -n "$REPLAY_COMMANDS" -r "$REPLAY_COMMANDS" -P 64 -q >&2
  wait_acked "$mport"
  keys="$(dbsize "$mport")"
  stop_archiver
  stop_redis_pid "$mpid"
  "$PITR" ls --store "$store" >&2

  # The same commands as a RESP file: the incremental AOF of --output-dir.
  timed_restore "$WORK/replay-files" --store "$store" --to latest --output-dir "$WORK/replay-files"
  files_rss="$T_RSS_KIB"
  aof="$WORK/replay-files/appendonlydir/appendonly.aof.1.incr.aof"
  [ -s "$aof" ] || die "no $aof"
  cmds="$(json_num commands <"$WORK/replay-files.json")"
  log "$aof: $(stat -c %s "$aof") bytes, $cmds commands (+1 SELECT); keys on the master: $keys"

  for ((r = 1; r <= ROUNDS; r++)); do
    # pitr restore --target
    start_redis "replay-pitr-$r"
    tport=$REDIS_PORT tpid=$REDIS_PID
    timed_restore "$WORK/replay-pitr-$r" --store "$store" --to latest --target "redis://127.0.0.1:$tport"
    secs="$(json_num seconds <"$WORK/replay-pitr-$r.json")"
    n="$(json_num commands <"$WORK/replay-pitr-$r.json")"
    [ "$(dbsize "$tport")" = "$keys" ] || die "pitr restore: $(dbsize "$tport") keys, the master had $keys"
    log "round $r: pitr restore --target: the target's time: $(server_secs "$tport")"
    stop_redis_pid "$tpid"
    pitr_rates+=("$(calc "$n / $secs" %.0f)")
    pitr_wall_rates+=("$(calc "$n / $T_WALL" %.0f)")
    pitr_runs+=" $(calc "$secs" %.2f)s"
    [ "$T_RSS_KIB" -gt "$pitr_rss" ] && pitr_rss="$T_RSS_KIB"
    log "round $r: pitr restore --target: $n commands in $secs s (report), $T_WALL s (wall), pitr CPU $T_CPU s"
    pitr_cpu+=" $T_CPU"

    # redis-cli --pipe
    start_redis "replay-pipe-$r"
    tport=$REDIS_PORT tpid=$REDIS_PID
    local t0
    t0="$(now)"
    out="$(redis-cli -p "$tport" --pipe <"$aof" 2>&1)"
    secs="$(elapsed "$t0")"
    n="$(printf '%s\n' "$out" | grep -o 'replies: [0-9]*' | grep -o '[0-9]*')"
    printf '%s\n' "$out" | grep -q 'errors: 0,' || die "redis-cli --pipe: $out"
    [ "$(dbsize "$tport")" = "$keys" ] || die "redis-cli --pipe: $(dbsize "$tport") keys, the master had $keys"
    log "round $r: redis-cli --pipe: the target's time: $(server_secs "$tport")"
    stop_redis_pid "$tpid"
    pipe_rates+=("$(calc "$n / $secs" %.0f)")
    pipe_runs+=" ${secs}s"
    log "round $r: redis-cli --pipe: $n replies in $secs s"
  done
  local p w c
  p="$(best_max "${pitr_rates[@]}")"
  w="$(best_max "${pitr_wall_rates[@]}")"
  c="$(best_max "${pipe_rates[@]}")"
  echo "replay: $cmds commands ($(stat -c %s "$aof") bytes of RESP), best of $ROUNDS alternating runs each"
  echo "replay: pitr $(kilo "$p") cmd/s, redis-cli --pipe $(kilo "$c") cmd/s, ratio $(calc "$p / $c" %.2f) (target >= 0.90: $(awk -v x="$p" -v y="$c" 'BEGIN { print (x / y >= 0.9 ? "met" : "NOT met") }'))"
  echo "replay: pitr by wall clock (process start to exit) $(kilo "$w") cmd/s, ratio $(calc "$w / $c" %.2f); runs: pitr${pitr_runs}, redis-cli --pipe${pipe_runs}"
  echo "replay: pitr CPU (user + system) per --target run:${pitr_cpu}"
  echo "replay: pitr restore --output-dir of the same archive (decode, cut, write the AOF; no server) $(json_num seconds <"$WORK/replay-files.json" | xargs printf '%.2f') s; peak RSS --target $(calc "$pitr_rss / 1024" %.1f) MiB, --output-dir $(calc "$files_rss / 1024" %.1f) MiB"
}

# --- the big archive (snapshot, files, rss) -------------------------------------------------

BIG_STORE=""
BIG_SNAP=""        # the snapshot's offset
BIG_NATIVE=""      # the master's SAVEd dump.rdb at the end (snapshot + commands)
BIG_RDB=""         # the snapshot's RDB, from --output-dir at the snapshot's offset
BIG_KEYS_END=""    # keys on the master at the end
make_big_archive() {
  [ -z "$BIG_STORE" ] || return 0
  banner "big archive: DEBUG POPULATE $BIG_KEYS key $BIG_VALUE, then $FILES_COMMANDS SETs"
  local mport mpid t line
  BIG_STORE="$WORK/big-archive"
  start_redis big-master "rdbcompression no" "repl-diskless-sync yes" "repl-diskless-sync-delay 0" \
    "dbfilename dump.rdb"
  mport=$REDIS_PORT mpid=$REDIS_PID
  t=$SECONDS
  redis-cli -p "$mport" debug populate "$BIG_KEYS" key "$BIG_VALUE" >/dev/null
  log "populated in $((SECONDS - t)) s; used_memory $(redis-cli -p "$mport" info memory | sed -n 's/^used_memory_human://p' | tr -d '\r')"
  start_archiver big "$mport" "$BIG_STORE"
  wait_online "$mport"
  line="$(grep "snapshot durable" "$ARCH_LOG" | tail -n1 | tr -d '"')"
  log "archived: $line"
  # Commands after the snapshot: new keys with values like the snapshot's.
  redis-benchmark -p "$mport" -t set -n "$FILES_COMMANDS" -r "$BIG_KEYS" -d "$BIG_VALUE" -P 64 -q >&2
  wait_acked "$mport"
  redis-cli -p "$mport" save >/dev/null
  BIG_KEYS_END="$(dbsize "$mport")"
  stop_archiver
  stop_redis_pid "$mpid"
  BIG_NATIVE="$WORK/big-master/dump.rdb"
  "$PITR" ls --store "$BIG_STORE" >&2
  BIG_SNAP="$(snapshot_offset "$BIG_STORE")"
  [ -n "$BIG_SNAP" ] || die "no snapshot offset in pitr ls --json"
  # The snapshot alone as a dump.rdb: --output-dir at the snapshot's offset.
  timed_restore "$WORK/big-snapdump" --store "$BIG_STORE" --to "offset:$BIG_SNAP" --output-dir "$WORK/big-snapdump"
  BIG_RDB="$WORK/big-snapdump/dump.rdb"
  [ -s "$BIG_RDB" ] || die "no dump.rdb from --output-dir at offset:$BIG_SNAP: $(cat "$WORK/big-snapdump.json")"
  log "snapshot RDB $(stat -c %s "$BIG_RDB") bytes (written by --output-dir in $T_WALL s); master's dump.rdb at the end $(stat -c %s "$BIG_NATIVE") bytes, $BIG_KEYS_END keys"
}

# native_load NAME RDB: a redis-server started on a copy of RDB (copied before the clock
# starts), timed from its start until loading:0. Sets NL_WALL and NL_LOGGED (its log's own
# "DB loaded from disk" seconds) and NL_KEYS.
NL_WALL=""
NL_LOGGED=""
NL_KEYS=""
native_load() {
  local name="$1" rdb="$2" t0
  rm -rf "${WORK:?}/$name"
  mkdir -p "$WORK/$name"
  cp "$rdb" "$WORK/$name/dump.rdb"
  sync
  t0="$(now)"
  start_redis "$name" "dbfilename dump.rdb"
  wait_loaded "$REDIS_PORT" "$REDIS_PID"
  NL_WALL="$(elapsed "$t0")"
  NL_LOGGED="$(logged_load_seconds "$REDIS_DIR/redis.log")"
  NL_KEYS="$(dbsize "$REDIS_PORT")"
  stop_redis_pid "$REDIS_PID"
  rm -rf "${WORK:?}/$name"
}

# --- snapshot -------------------------------------------------------------------------------

# snapshot_into_live NAME [ARGS...]: the big snapshot restored into a fresh empty server with
# pitr restore --target ARGS (timed_restore's figures; the target's own time per command in
# LIVE_SERVER_SECS); its key count is checked.
snapshot_into_live() {
  local name="$1" tport tpid
  shift
  start_redis "$name"
  tport=$REDIS_PORT tpid=$REDIS_PID
  timed_restore "$WORK/$name" --store "$BIG_STORE" --to "offset:$BIG_SNAP" --target "redis://127.0.0.1:$tport" "$@"
  [ "$(dbsize "$tport")" = "$BIG_KEYS" ] || die "$name: $(dbsize "$tport") keys after the restore, want $BIG_KEYS"
  LIVE_SERVER_SECS="$(server_secs "$tport")"
  stop_redis_pid "$tpid"
  rm -rf "${WORK:?}/$name"
}

section_snapshot() {
  make_big_archive
  banner "snapshot: live restore vs native load"
  local r secs native=() native_logged=() live=() live_wall=() cmdsp=() rdb_mb
  local live_rss=0 cmd_rss=0 live_server="" cmds_server="" live_cpu=() cmds_cpu=()
  rdb_mb="$(calc "$(stat -c %s "$BIG_RDB") / 1e6" %.0f)"
  for ((r = 1; r <= ROUNDS; r++)); do
    native_load "snap-native-$r" "$BIG_RDB"
    [ "$NL_KEYS" = "$BIG_KEYS" ] || die "native load: $NL_KEYS keys, want $BIG_KEYS"
    native+=("$NL_WALL")
    native_logged+=("$NL_LOGGED")
    log "round $r: native load $NL_WALL s (wall), $NL_LOGGED s (logged)"

    snapshot_into_live "snap-live-$r"
    live_server="$LIVE_SERVER_SECS"
    secs="$(json_num seconds <"$WORK/snap-live-$r.json")"
    live+=("$secs")
    live_wall+=("$T_WALL")
    live_cpu+=("$T_CPU")
    [ "$T_RSS_KIB" -gt "$live_rss" ] && live_rss="$T_RSS_KIB"
    log "round $r: pitr restore --target (RESTORE): $secs s (report), $T_WALL s (wall), pitr CPU $T_CPU s, keys_by_restore $(json_num keys_by_restore <"$WORK/snap-live-$r.json"); target's time: $live_server"

    snapshot_into_live "snap-cmds-$r" --max-restore-bytes 1
    cmds_server="$LIVE_SERVER_SECS"
    secs="$(json_num seconds <"$WORK/snap-cmds-$r.json")"
    cmdsp+=("$secs")
    cmds_cpu+=("$T_CPU")
    [ "$T_RSS_KIB" -gt "$cmd_rss" ] && cmd_rss="$T_RSS_KIB"
    log "round $r: pitr restore --target --max-restore-bytes 1 (commands): $secs s (report), $T_WALL s (wall), pitr CPU $T_CPU s, keys_by_commands $(json_num keys_by_commands <"$WORK/snap-cmds-$r.json"); target's time: $cmds_server"
  done
  local n l w c
  n="$(best_min "${native[@]}")"
  l="$(best_min "${live[@]}")"
  w="$(best_min "${live_wall[@]}")"
  c="$(best_min "${cmdsp[@]}")"
  echo "snapshot: RDB $rdb_mb MB, $BIG_KEYS keys of $BIG_VALUE bytes (rdbcompression no), best of $ROUNDS alternating runs each"
  echo "snapshot: native start-up load ${n} s (wall, start to loading:0; logged 'DB loaded from disk' $(best_min "${native_logged[@]}") s), $(calc "$rdb_mb / $n" %.0f) MB/s"
  echo "snapshot: pitr restore --target by RESTORE ${l} s (report; wall ${w} s), $(calc "$BIG_KEYS / $l / 1000" %.0f)k keys/s, ratio live/native $(calc "$l / $n" %.2f); peak RSS $(calc "$live_rss / 1024" %.1f) MiB"
  echo "snapshot: pitr restore --target --max-restore-bytes 1 (commands) ${c} s (report), ratio commands/native $(calc "$c / $n" %.2f), commands/RESTORE $(calc "$c / $l" %.2f); peak RSS $(calc "$cmd_rss / 1024" %.1f) MiB"
  echo "snapshot: runs: native ${native[*]}; RESTORE ${live[*]} (pitr CPU ${live_cpu[*]}); commands ${cmdsp[*]} (pitr CPU ${cmds_cpu[*]})"
  echo "snapshot: the target's own time (INFO commandstats, last run): RESTORE path: $live_server; commands path: $cmds_server"
}

# --- files ----------------------------------------------------------------------------------

section_files() {
  make_big_archive
  banner "files: --output-dir + start vs native load"
  local r dir t0 rsecs total cl args native=() totals=() restores=() loads=() layout keys
  local rss=0
  for ((r = 1; r <= ROUNDS; r++)); do
    native_load "files-native-$r" "$BIG_NATIVE"
    [ "$NL_KEYS" = "$BIG_KEYS_END" ] || die "native load: $NL_KEYS keys, want $BIG_KEYS_END"
    native+=("$NL_WALL")
    log "round $r: native load of the master's dump.rdb $NL_WALL s (wall), $NL_LOGGED s (logged)"

    dir="$WORK/files-out-$r"
    rm -rf "$dir"
    sync
    t0="$(now)"
    timed_restore "$WORK/files-out-$r" --store "$BIG_STORE" --to latest --output-dir "$dir"
    rsecs="$T_WALL"
    [ "$T_RSS_KIB" -gt "$rss" ] && rss="$T_RSS_KIB"
    layout="$(json_str layout <"$WORK/files-out-$r.json")"
    cl="$(json_str command_line <"$WORK/files-out-$r.json")"
    [ "$layout" = "aof-multipart" ] || die "layout $layout, want aof-multipart (commands after the snapshot)"
    # The printed command line, plus this script's port, log and no saving.
    read -r -a args <<<"$cl"
    [ "${args[0]}" = "redis-server" ] || die "unexpected command line: $cl"
    REDIS_PORT="$(free_port)"
    "${args[@]}" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --logfile "$dir/redis.log" \
      >"$dir/stdout.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    wait_loaded "$REDIS_PORT" "$REDIS_PID"
    total="$(elapsed "$t0")"
    keys="$(dbsize "$REDIS_PORT")"
    stop_redis_pid "$REDIS_PID"
    [ "$keys" = "$BIG_KEYS_END" ] || die "server on --output-dir: $keys keys, want $BIG_KEYS_END"
    totals+=("$total")
    restores+=("$rsecs")
    loads+=("$(calc "$total - $rsecs")")
    log "round $r: pitr restore --output-dir $rsecs s + start until loaded = $total s ($(logged_load_seconds "$dir/redis.log") s logged load); $(json_num commands <"$WORK/files-out-$r.json") commands in the AOF"
    rm -rf "$dir"
  done
  local n t i ratios=() paired
  n="$(best_min "${native[@]}")"
  t="$(best_min "${totals[@]}")"
  # Each round runs both sides back to back: the ratio within a round is the least disturbed
  # by the load of a shared machine, which moves whole rounds up and down.
  for ((i = 0; i < ROUNDS; i++)); do
    ratios+=("$(calc "${totals[$i]} / ${native[$i]}" %.3f)")
  done
  paired="$(median "${ratios[@]}")"
  echo "files: snapshot $(calc "$(stat -c %s "$BIG_RDB") / 1e6" %.0f) MB + $FILES_COMMANDS SETs after it; $BIG_KEYS_END keys; $ROUNDS rounds, each native load then restore + load"
  echo "files: median of the rounds' ratios $(calc "$paired" %.2f) (target <= 1.20: $(awk -v x="$paired" 'BEGIN { print (x <= 1.2 ? "met" : "NOT met") }')); best of each side: pitr restore --output-dir + redis-server until loaded ${t} s (restore $(best_min "${restores[@]}") s, start+load $(best_min "${loads[@]}") s), native load of the master's dump.rdb ${n} s, ratio $(calc "$t / $n" %.2f); peak RSS $(calc "$rss / 1024" %.1f) MiB"
  echo "files: runs: native ${native[*]}; restore+load ${totals[*]} (restore ${restores[*]}); ratios ${ratios[*]}"
}

# --- rss ------------------------------------------------------------------------------------

# A criterion result: median ns per iteration and bytes per iteration -> MB/s.
criterion_mb_s() {
  local dir="$TARGET_DIR/criterion/$1/new" ns bytes
  [ "$dir/estimates.json" -nt "$WORK/criterion.start" ] || die "no fresh criterion results in $dir"
  ns="$(sed -n 's/.*"median":{"confidence_interval":{[^}]*},"point_estimate":\([0-9.eE+-]*\).*/\1/p' "$dir/estimates.json")"
  bytes="$(grep -o '"Bytes":[0-9]*' "$dir/benchmark.json" | head -n1 | cut -d: -f2)"
  if [ -z "$ns" ] || [ -z "$bytes" ]; then
    die "cannot read $dir"
  fi
  calc "$bytes / $ns * 1000" %.0f
}

# rss_dataset NAME MAKER: a master filled by the function MAKER PORT, archived; then
# pitr restore --to latest both ways, with their peak RSS.
rss_dataset() {
  local name="$1" maker="$2" mport mpid store="$WORK/$1-archive" tport tpid raw keys
  start_redis "$name-master" "repl-diskless-sync yes" "repl-diskless-sync-delay 0" "proto-max-bulk-len 1gb"
  mport=$REDIS_PORT mpid=$REDIS_PID
  "$maker" "$mport"
  keys="$(dbsize "$mport")"
  start_archiver "$name" "$mport" "$store"
  wait_online "$mport"
  raw="$(grep "snapshot durable" "$ARCH_LOG" | tail -n1 | grep -o 'bytes=[0-9]*' | cut -d= -f2)"
  stop_archiver
  stop_redis_pid "$mpid"
  rm -rf "${WORK:?}/$name-master"
  rss_restores "$name" "$store" latest "RDB $(calc "$raw / 1e6" %.0f) MB" "$keys"
}

# rss_restores NAME STORE TO WHAT KEYS: peak RSS of pitr restore --target and --output-dir.
rss_restores() {
  local name="$1" store="$2" to="$3" what="$4" keys="$5" tport tpid live live_t files files_t verify
  start_redis "$name-target"
  tport=$REDIS_PORT tpid=$REDIS_PID
  timed_restore "$WORK/$name-rss-live" --store "$store" --to "$to" --target "redis://127.0.0.1:$tport"
  [ "$(dbsize "$tport")" = "$keys" ] || die "$name: $(dbsize "$tport") keys after the restore, want $keys"
  stop_redis_pid "$tpid"
  rm -rf "${WORK:?}/$name-target"
  live="$T_RSS_KIB" live_t="$T_WALL"
  timed_restore "$WORK/$name-rss-files" --store "$store" --to "$to" --output-dir "$WORK/$name-rss-files"
  rm -rf "${WORK:?}/$name-rss-files"
  files="$T_RSS_KIB" files_t="$T_WALL"
  # pitr verify reads every value (LZF strings decompressed) and checks everything.
  /usr/bin/time -f '%M' -o "$WORK/$name-verify.rss" "$PITR" verify --store "$store" \
    >"$WORK/$name-verify.out" 2>&1 || die "pitr verify of $name failed: $(tail -n 3 "$WORK/$name-verify.out")"
  verify="$(tail -n1 "$WORK/$name-verify.rss")"
  awk -v n="$1" -v w="$what" -v l="$live" -v f="$files" -v lt="$live_t" -v ft="$files_t" -v v="$verify" 'BEGIN {
    m = (l > f ? l : f)
    printf "rss: %s (%s): pitr restore --target %.1f MiB (%s s), --output-dir %.1f MiB (%s s); target <= 256 MiB: %s; pitr verify %.1f MiB\n",
      n, w, l / 1024, lt, f / 1024, ft, (m <= 262144 ? "met" : "NOT met"), v / 1024
  }'
}

make_list() {
  log "a list of $LIST_ELEMENTS elements"
  redis-cli -p "$1" eval "for i = 1, tonumber(ARGV[1]) do redis.call('RPUSH', KEYS[1], 'element:' .. i) end return redis.call('LLEN', KEYS[1])" \
    1 biglist "$LIST_ELEMENTS" >&2
}

make_string() {
  log "a string of $STRING_MB MiB (random bytes, incompressible)"
  head -c "$((STRING_MB << 20))" /dev/urandom >"$WORK/bigstring.bin"
  redis-cli -p "$1" -x set bigstring <"$WORK/bigstring.bin" >&2
  rm -f "$WORK/bigstring.bin"
  redis-cli -p "$1" strlen bigstring >&2
}

make_zeros() {
  log "a string of $STRING_MB MiB of zeros (SETRANGE; LZF-compressed in the RDB)"
  redis-cli -p "$1" setrange bigzeros "$(((STRING_MB << 20) - 1))" x >&2
}

section_rss() {
  local t0 secs raw
  if [ "${BENCH_SKIP_CRITERION:-0}" != "1" ]; then
    banner "rss: cargo bench --bench rdb_parse"
    touch "$WORK/criterion.start"
    cargo bench --bench rdb_parse 2>&1 | tee "$WORK/criterion.log" >&2
    echo "rss: parse (criterion, 64 MiB synthetic RDBs, median): mixed types $(criterion_mb_s rdb_parse/mixed_types) MB/s (no raw capture $(criterion_mb_s rdb_parse/mixed_types_no_raw), rdb::check $(criterion_mb_s rdb_parse/mixed_types_check)), plain strings $(criterion_mb_s rdb_parse/plain_strings) MB/s (no raw capture $(criterion_mb_s rdb_parse/plain_strings_no_raw))"
  fi
  make_big_archive
  banner "rss: pitr verify, big dataset"
  raw="$(stat -c %s "$BIG_RDB")"
  t0="$(now)"
  /usr/bin/time -f '%M' -o "$WORK/verify.rss" "$PITR" verify --store "$BIG_STORE" >"$WORK/verify.out" 2>&1 \
    || die "pitr verify failed: $(tail -n 5 "$WORK/verify.out")"
  secs="$(elapsed "$t0")"
  echo "rss: pitr verify of the big archive (RDB $(calc "$raw / 1e6" %.0f) MB + segments): $secs s, $(calc "$raw / 1e6 / $secs" %.0f) MB/s of RDB; peak RSS $(calc "$(tail -n1 "$WORK/verify.rss") / 1024" %.1f) MiB"
  banner "rss: big dataset"
  rss_restores big "$BIG_STORE" "offset:$BIG_SNAP" "RDB $(calc "$raw / 1e6" %.0f) MB, $BIG_KEYS keys" "$BIG_KEYS"
  banner "rss: huge list"
  rss_dataset list make_list
  banner "rss: huge string"
  rss_dataset string make_string
  banner "rss: huge compressible string"
  rss_dataset zeros make_zeros
  banner "rss: full segments of small commands"
  rss_segments
}

# Replay memory: $SEGMENT_COMMANDS SETs archived with a long flush interval, so that segments
# are cut at --segment-max-bytes (64 MiB) rather than every second.
rss_segments() {
  local mport mpid store="$WORK/segments-archive" keys raw
  start_redis segments-master "repl-diskless-sync yes" "repl-diskless-sync-delay 0"
  mport=$REDIS_PORT mpid=$REDIS_PID
  start_archiver segments "$mport" "$store" 120s
  wait_online "$mport"
  log "redis-benchmark -t set -n $SEGMENT_COMMANDS -r 1000000 -P 64"
  redis-benchmark -p "$mport" -t set -n "$SEGMENT_COMMANDS" -r 1000000 -P 64 -q >&2
  wait_acked "$mport"
  keys="$(dbsize "$mport")"
  stop_archiver
  stop_redis_pid "$mpid"
  rm -rf "${WORK:?}/segments-master"
  "$PITR" ls --store "$store" >&2
  log "segments: $(find "$store" -name "*.segment" -printf "%s ")stored bytes"
  raw="$("$PITR" ls --store "$store" --json | tr -d ' \n' | grep -o '"last_offset":[0-9]*' | head -n1 | cut -d: -f2)"
  rss_restores segments "$store" latest "$SEGMENT_COMMANDS SETs, $(calc "$raw / 1e6" %.0f) MB of stream in $(find "$store" -name '*.segment' | wc -l) segments" "$keys"
}

# --- latency --------------------------------------------------------------------------------

# segment_count PITR STORE: the segments of all generations, from pitr ls --json.
segment_count() {
  "$1" ls --store "$2" --json | tr -d ' \n' | grep -o '"segments":[0-9]*' | cut -d: -f2 \
    | awk '{ n += $1 } END { print n + 0 }'
}

# with_env FILE ASSIGNMENTS...: a script FILE that runs pitr with those environment variables
# (so that timed_restore and GNU time measure pitr itself, which it execs).
with_env() {
  local file="$1"
  shift
  {
    echo '#!/bin/sh'
    printf 'exec env'
    printf " '%s'" "$@"
    printf ' "%s" "$@"\n' "$PITR"
  } >"$file"
  chmod +x "$file"
}

# timed_verify OUT PITR ARGS...: `pitr verify ARGS --json` under GNU time; T_WALL, T_RSS_KIB.
timed_verify() {
  local out="$1" pitr="$2" t0 rc=0
  shift 2
  t0="$(now)"
  /usr/bin/time -f '%U %S %M' -o "$out.rss" "$pitr" verify "$@" --json >"$out.json" 2>"$out.err" || rc=$?
  T_WALL="$(elapsed "$t0")"
  [ "$rc" -eq 0 ] || die "pitr verify $* failed ($rc): $(tail -n 5 "$out.err")"
  grep -q '"ok": *true' "$out.json" || die "pitr verify $*: not sound: $(head -c 2000 "$out.json")"
  T_RSS_KIB="$(tail -n1 "$out.rss" | awk '{ print $3 }')"
}

section_latency() {
  banner "latency: >= $LATENCY_SEGMENTS segments on Garage, ${LATENCY_RTT_MS} ms round trip"
  have garage || die "garage not found (scripts/install-deps.sh installs it)"
  have python3 || die "python3 not found"
  local store="s3://pitr/latency" mport mpid load_pid n t0 pport proxy_pid direct proxied
  local env=() penv=() r p dir saved="$PITR" rtt="$LATENCY_RTT_MS" stored last
  local -A rest=() ver=() rss=() vrss=()
  start_garage
  mapfile -t env < <(garage_env)
  direct="$WORK/pitr-garage"
  with_env "$direct" "${env[@]}"

  start_redis latency-master "repl-diskless-sync yes" "repl-diskless-sync-delay 0"
  mport=$REDIS_PORT mpid=$REDIS_PID
  PITR="$direct"
  start_archiver latency "$mport" "$store" 10ms
  wait_online "$mport"
  # A steady load: one connection, one SET at a time, so that every 10 ms has writes.
  t0="$(now)"
  redis-benchmark -p "$mport" -t set -n 1000000000 -r 100000 -d 100 -c 1 -P 1 -q >/dev/null 2>&1 &
  load_pid=$!
  PIDS+=("$load_pid")
  while :; do
    sleep 2
    n="$(segment_count "$PITR" "$store")"
    log "$n segments after $(elapsed "$t0") s"
    [ "$n" -lt "$LATENCY_SEGMENTS" ] || break
    kill -0 "$ARCH_PID" 2>/dev/null || die "the archiver exited: $(tail -n 20 "$ARCH_LOG")"
    [ "$(calc "$(elapsed "$t0") < 600" %d)" = 1 ] || die "fewer than $LATENCY_SEGMENTS segments after 600 s"
  done
  stop_pid "$load_pid" 5
  forget_pid "$load_pid"
  wait_acked "$mport"
  stop_archiver
  stop_redis_pid "$mpid"
  PITR="$saved"
  n="$(segment_count "$direct" "$store")"
  "$direct" ls --store "$store" >&2
  "$direct" restore --store "$store" --to latest --dry-run --json >"$WORK/latency-plan.json"
  # The plan's own "bytes" (stored bytes to read) comes last.
  stored="$(grep -o '"bytes": *[0-9]*' "$WORK/latency-plan.json" | tail -n1 | grep -o '[0-9]*$')"
  last="$("$direct" ls --store "$store" --json | tr -d ' \n' | grep -o '"last_offset":[0-9]*' | head -n1 | cut -d: -f2)"

  pport="$(free_port)"
  python3 "$REPO_ROOT/scripts/latency-proxy.py" --quiet --rtt-ms "$rtt" "$pport" "127.0.0.1:$GARAGE_S3_PORT" \
    >"$WORK/proxy.out" 2>"$WORK/proxy.err" &
  proxy_pid=$!
  PIDS+=("$proxy_pid")
  wait_for 10 grep -q listening "$WORK/proxy.out" || die "the proxy did not start: $(cat "$WORK/proxy.err")"
  mapfile -t penv < <(garage_env | sed "s/:$GARAGE_S3_PORT\$/:$pport/")
  proxied="$WORK/pitr-proxied"
  with_env "$proxied" "${penv[@]}"

  PITR="$proxied"
  for ((r = 1; r <= ROUNDS; r++)); do
    for p in 1 8; do
      dir="$WORK/latency-out-$p"
      rm -rf "$dir"
      timed_restore "$WORK/latency-restore-$p-$r" --store "$store" --to latest --output-dir "$dir" --parallel "$p"
      rest[$p]+="$T_WALL "
      [ "${rss[$p]:-0}" -gt "$T_RSS_KIB" ] || rss[$p]="$T_RSS_KIB"
      log "round $r: restore --parallel $p through the proxy: $T_WALL s, peak RSS $T_RSS_KIB KiB"
      timed_verify "$WORK/latency-verify-$p-$r" "$proxied" --store "$store" --parallel "$p"
      ver[$p]+="$T_WALL "
      [ "${vrss[$p]:-0}" -gt "$T_RSS_KIB" ] || vrss[$p]="$T_RSS_KIB"
      log "round $r: verify --parallel $p through the proxy: $T_WALL s"
    done
    # Both restores wrote the same files.
    diff -r "$WORK/latency-out-1" "$WORK/latency-out-8" >/dev/null \
      || die "--parallel 1 and 8 restored different files"
  done
  PITR="$direct"
  timed_restore "$WORK/latency-restore-direct" --store "$store" --to latest --output-dir "$WORK/latency-out-direct"
  local dr="$T_WALL"
  timed_verify "$WORK/latency-verify-direct" "$direct" --store "$store"
  local dv="$T_WALL"
  PITR="$saved"
  stop_pid "$proxy_pid" 5
  forget_pid "$proxy_pid"

  local r1 r8 v1 v8
  # shellcheck disable=SC2086
  r1="$(best_min ${rest[1]})" r8="$(best_min ${rest[8]})" v1="$(best_min ${ver[1]})" v8="$(best_min ${ver[8]})"
  echo "latency: $n segments, $(calc "$stored / 1e6" %.1f) MB stored, $(calc "$last / 1e6" %.1f) MB of stream, on Garage through scripts/latency-proxy.py --rtt-ms $rtt; best of $ROUNDS alternating runs"
  echo "latency: pitr restore --to latest --output-dir: --parallel 1 ${r1} s, --parallel 8 (default) ${r8} s, ratio $(calc "$r1 / $r8" %.1f)x; peak RSS $(calc "${rss[1]} / 1024" %.1f) / $(calc "${rss[8]} / 1024" %.1f) MiB"
  echo "latency: pitr verify: --parallel 1 ${v1} s, --parallel 8 (default) ${v8} s, ratio $(calc "$v1 / $v8" %.1f)x; peak RSS $(calc "${vrss[1]} / 1024" %.1f) / $(calc "${vrss[8]} / 1024" %.1f) MiB"
  echo "latency: straight to Garage (no added round trip), default --parallel: restore ${dr} s, verify ${dv} s"
  echo "latency: runs: restore --parallel 1: ${rest[1]}; --parallel 8: ${rest[8]}; verify --parallel 1: ${ver[1]}; --parallel 8: ${ver[8]}"
}

# --- day ------------------------------------------------------------------------------------

# The data set of section day: BENCH_DAY_KEYS keys "key:<i>" with distinct random values of
# BENCH_DAY_VALUE bytes (base64 of random bytes: zstd and LZF cannot shrink them much), as
# RESP SETs on stdout for redis-cli --pipe.
DAY_DATA_PY='
import base64, os, sys
n, size = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout.buffer
raw = (size * 3 + 3) // 4
for start in range(0, n, 10000):
    m = min(10000, n - start)
    blob = base64.b64encode(os.urandom(raw * m))
    parts = []
    for i in range(m):
        k = b"key:%d" % (start + i)
        parts.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, size, blob[i * size:(i + 1) * size]))
    out.write(b"".join(parts))
'

# The steady write load of section day: PORT RATE KEYS SIZE COUNT_FILE. One connection, SETs
# of a random existing key to a new random value, RATE a second on average (the commands due
# are sent every 2 ms, pipelined, and their replies read); on SIGTERM it writes
# "<commands> <seconds>" to COUNT_FILE.
DAY_LOAD_PY='
import base64, os, random, signal, socket, sys, time
port, rate, keys, size, count_file = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
sent = 0
t0 = time.monotonic()
def stop(*_):
    with open(count_file, "w") as f:
        f.write("%d %.3f\n" % (sent, time.monotonic() - t0))
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
raw = (size * 3 + 3) // 4
while True:
    n = int((time.monotonic() - t0) * rate) - sent
    if n > 0:
        blob = base64.b64encode(os.urandom(raw * n))
        cmds = []
        for i in range(n):
            k = b"key:%d" % random.randrange(keys)
            cmds.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, size, blob[i * size:(i + 1) * size]))
        s.sendall(b"".join(cmds))
        want, got = 5 * n, 0
        while got < want:
            r = s.recv(65536)
            if not r:
                sys.exit("connection closed")
            if b"-" in r:
                sys.exit("error reply: %r" % r[:200])
            got += len(r)
        sent += n
    time.sleep(0.002)
'

# The settings of section day for scale S, as "FLUSH_MS SNAPSHOT_MS L1 L2 L3" (levels in whole
# seconds): flush 1s/S (at least 1 ms; BENCH_DAY_FLUSH_MS overrides), snapshot interval 24h/S,
# levels 1m/S, 1h/S, 24h/S rounded to whole seconds, at least 1 s, each a multiple of the one
# before (and at least twice it), as --compaction-levels requires.
day_settings() {
  awk -v s="$1" -v f="${BENCH_DAY_FLUSH_MS:-}" 'function r(x) { return int(x + 0.5) } BEGIN {
    if (s <= 0) exit 1
    flush = (f != "" ? f : r(1000 / s)); if (flush < 1) flush = 1
    snap = r(86400000 / s)
    l1 = r(60 / s); if (l1 < 1) l1 = 1
    l2 = r(3600 / s / l1) * l1; if (l2 < 2 * l1) l2 = 2 * l1
    l3 = r(86400 / s / l2) * l2; if (l3 < 2 * l2) l3 = 2 * l2
    print flush, snap, l1, l2, l3
  }'
}

# py_json CODE: runs python CODE with the JSON on stdin as `j`; CODE prints.
py_json() { python3 -c "import json, sys; j = json.load(sys.stdin); $1"; }

# day_objects PITR STORE: "<total> <snapshots> <L0> <L1> ..." of pitr ls --json (all
# generations; segments of every level).
day_objects() {
  "$1" ls --store "$2" --json | py_json '
lv = []
snaps = 0
for g in j["generations"]:
    snaps += len(g["snapshots"])
    for i, n in enumerate(g["segments_by_level"]):
        lv += [0] * (i + 1 - len(lv))
        lv[i] += n
print(snaps + sum(lv), snaps, *lv)'
}

# levels_text "<total> <snapshots> <L0> <L1> ...": "12 objects: 1 snapshot, level 0: 5, ...".
levels_text() {
  awk '{ printf "%d objects: %d snapshot%s", $1, $2, ($2 == 1 ? "" : "s"); for (i = 3; i <= NF; i++) printf ", level %d: %d", i - 3, $i }'
}

# lag_sample PORT: the master's replication offset minus the offset its replica (the
# archiver) last acknowledged, in bytes.
lag_sample() {
  redis-cli -p "$1" info replication | tr -d '\r' | awk -F'[:,=]' '
    /^master_repl_offset:/ { m = $2 }
    /^slave0:/ { for (i = 1; i <= NF; i++) if ($i == "offset") o = $(i + 1) }
    END { if (m != "" && o != "") print m - o }'
}

section_day() {
  have garage || die "garage not found (scripts/install-deps.sh installs it)"
  have python3 || die "python3 not found"
  have curl || die "curl not found (reads Garage's metrics)"
  local scale="$DAY_SCALE" settings flush_ms snap_ms l1 l2 l3 levels via="$DAY_ARCHIVE_VIA"
  settings="$(day_settings "$scale")" || die "BENCH_DAY_SCALE must be a positive number"
  read -r flush_ms snap_ms l1 l2 l3 <<<"$settings"
  [ "$snap_ms" -ge 100 ] || die "BENCH_DAY_SCALE $scale: a day of ${snap_ms} ms; --snapshot-interval needs at least 100 ms"
  levels="${l1}s,${l2}s,${l3}s"
  banner "day: a simulated day of $(calc "$snap_ms / 1000" %.1f) s (scale $scale), archiver $via, restore through ${DAY_RTT_MS} ms"
  echo "day: scale $scale: --flush-interval ${flush_ms}ms (1s/S = $(calc "1000 / $scale" %.2f) ms), --snapshot-interval ${snap_ms}ms (24h/S), --compaction-levels $levels (1m/S, 1h/S, 24h/S = $(calc "60 / $scale" %.2f), $(calc "3600 / $scale" %.2f), $(calc "86400 / $scale" %.2f) s, rounded to whole seconds: level 0 objects per level 1 window $(calc "$l1 * 1000 / $flush_ms" %.0f) (60 at the defaults), level 1 per level 2 $((l2 / l1)) (60), level 2 per level 3 $((l3 / l2)) (24))"

  local store="s3://pitr/day" env=() penv=() direct proxied pport proxy_pid saved="$PITR"
  start_garage
  mapfile -t env < <(garage_env)
  direct="$WORK/pitr-garage"
  with_env "$direct" "${env[@]}"
  pport="$(free_port)"
  python3 "$REPO_ROOT/scripts/latency-proxy.py" --quiet --rtt-ms "$DAY_RTT_MS" "$pport" "127.0.0.1:$GARAGE_S3_PORT" \
    >"$WORK/day-proxy.out" 2>"$WORK/day-proxy.err" &
  proxy_pid=$!
  PIDS+=("$proxy_pid")
  wait_for 10 grep -q listening "$WORK/day-proxy.out" || die "the proxy did not start: $(cat "$WORK/day-proxy.err")"
  mapfile -t penv < <(garage_env | sed "s/:$GARAGE_S3_PORT\$/:$pport/")
  proxied="$WORK/pitr-proxied"
  with_env "$proxied" "${penv[@]}"

  # The data set.
  local mport mpid t0 keys used
  start_redis day-master "repl-diskless-sync yes" "repl-diskless-sync-delay 0" "dbfilename dump.rdb" \
    "client-output-buffer-limit replica 1gb 1gb 0"
  mport=$REDIS_PORT mpid=$REDIS_PID
  t0="$(now)"
  python3 -c "$DAY_DATA_PY" "$DAY_KEYS" "$DAY_VALUE" | redis-cli -p "$mport" --pipe >"$WORK/day-pipe.out" 2>&1 \
    || die "loading the data set: $(tail -n 3 "$WORK/day-pipe.out")"
  grep -q 'errors: 0,' "$WORK/day-pipe.out" || die "loading the data set: $(cat "$WORK/day-pipe.out")"
  keys="$(dbsize "$mport")"
  [ "$keys" = "$DAY_KEYS" ] || die "$keys keys after loading, want $DAY_KEYS"
  used="$(redis-cli -p "$mport" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p')"
  echo "day: data set: $keys keys with distinct random $DAY_VALUE-byte values, used_memory $(calc "$used / 1e6" %.0f) MB, loaded in $(elapsed "$t0") s"

  # The load runs from before the archiver's full sync (its writes during the sync are in the
  # stream after the snapshot) until just before the scheduled snapshot falls due.
  local load_pid count_file="$WORK/day-load.count"
  python3 -c "$DAY_LOAD_PY" "$mport" "$DAY_RATE" "$DAY_KEYS" "$DAY_VALUE" "$count_file" 2>"$WORK/day-load.err" &
  load_pid=$!
  PIDS+=("$load_pid")
  if [ "$via" = proxy ]; then PITR="$proxied"; else PITR="$direct"; fi
  ARCH_RUST_LOG="info,redis_pitr::ingest::segment=debug"
  t0="$(now)"
  # --compaction-grace 5m/S: replaced objects stay as long, in simulated time, as they do at
  # the defaults.
  local grace_ms=$(( (300000 + scale - 1) / scale ))
  echo "day: --compaction-grace ${grace_ms}ms (5m/S)"
  start_archiver day "$mport" "$store" "${flush_ms}ms" --snapshot-interval "${snap_ms}ms" --compaction-levels "$levels" --compaction-grace "${grace_ms}ms"
  ARCH_RUST_LOG="info"
  wait_online "$mport"
  local base_ms due_ms stop_ms now_ms lag max_lag=0 lags=0 lag_sum=0 next_log=0
  base_ms="$("$direct" ls --store "$store" --json | py_json 'print(j["generations"][0]["snapshots"][0]["time_ms"])')"
  due_ms=$((base_ms + snap_ms))
  stop_ms=$((due_ms - DAY_MARGIN_MS))
  now_ms="$(date +%s%3N)"
  log "base snapshot durable $(elapsed "$t0") s after the archiver started ($(grep "snapshot durable" "$ARCH_LOG" | tail -n1 | grep -o 'bytes=[0-9]*')); the scheduled snapshot falls due in $(((due_ms - now_ms) / 1000)) s; the load stops $((DAY_MARGIN_MS / 1000)) s before"
  [ "$now_ms" -lt "$stop_ms" ] || die "the base snapshot took longer than the simulated day: a smaller BENCH_DAY_SCALE or fewer BENCH_DAY_KEYS"
  while :; do
    now_ms="$(date +%s%3N)"
    [ "$now_ms" -lt "$stop_ms" ] || break
    kill -0 "$ARCH_PID" 2>/dev/null || die "the archiver exited: $(tail -n 20 "$ARCH_LOG")"
    kill -0 "$load_pid" 2>/dev/null || die "the load exited: $(tail -n 5 "$WORK/day-load.err")"
    lag="$(lag_sample "$mport")"
    if [ -n "$lag" ]; then
      lags=$((lags + 1)) lag_sum=$((lag_sum + lag))
      [ "$lag" -le "$max_lag" ] || max_lag="$lag"
    fi
    if [ "$now_ms" -ge "$next_log" ]; then
      log "$(((stop_ms - now_ms) / 1000)) s of load left; archiver behind by ${lag:-?} bytes; $(grep -c 'segment durable' "$ARCH_LOG") segments so far"
      next_log=$((now_ms + 30000))
    fi
    sleep 0.5
  done
  stop_pid "$load_pid" 5
  forget_pid "$load_pid"
  local sent load_secs acked_t
  read -r sent load_secs <"$count_file" || die "no count from the load: $(tail -n 5 "$WORK/day-load.err")"
  t0="$(now)"
  wait_acked "$mport"
  acked_t="$(elapsed "$t0")"
  stop_archiver
  now_ms="$(date +%s%3N)"
  [ "$now_ms" -lt "$due_ms" ] || log "the archiver stopped $((now_ms - due_ms)) ms after the scheduled snapshot fell due"

  # The master's own RDB of the same data (nothing was written after the last acknowledged
  # write): the native side of the comparison, and its digest, which the restores must match.
  local digest native_rdb="$WORK/day-native.rdb"
  digest="$(redis-cli -p "$mport" debug digest | tr -d '\r')"
  keys="$(dbsize "$mport")"
  redis-cli -p "$mport" save >/dev/null
  mv "$WORK/day-master/dump.rdb" "$native_rdb"
  stop_redis_pid "$mpid"
  rm -rf "${WORK:?}/day-master"

  # What the archiver wrote.
  local segs seg_raw objs_stop gen first_ms last_ms days snaps
  segs="$(grep -c 'segment durable' "$ARCH_LOG" || true)"
  seg_raw="$(grep 'segment durable' "$ARCH_LOG" | grep -o 'raw=[0-9]*' | cut -d= -f2 | awk '{ n += $1 } END { print n + 0 }')"
  objs_stop="$(day_objects "$direct" "$store")"
  read -r first_ms last_ms snaps gen < <("$direct" ls --store "$store" --json | py_json '
g = j["generations"]
print(g[0]["first_time_ms"], g[-1]["last_time_ms"], sum(len(x["snapshots"]) for x in g), len(g))')
  [ "$gen" = 1 ] || die "$gen generations in the archive, want 1"
  [ "$snaps" = 1 ] || die "$snaps snapshots in the archive: the scheduled one was taken (the load stops too late: raise BENCH_DAY_MARGIN_MS)"
  days="$(calc "($last_ms - $first_ms) / $snap_ms" %.4f)"
  "$direct" ls --store "$store" >&2
  grep ' WARN \| ERROR ' "$ARCH_LOG" | head -n 5 >&2 || true
  echo "day: load: $sent SETs in $load_secs s ($(calc "$sent / $load_secs" %.0f)/s, target $DAY_RATE/s); the archive spans $(calc "($last_ms - $first_ms) / 1000" %.1f) s = $(calc "$days * 24" %.2f) simulated hours, from the base snapshot to $((DAY_MARGIN_MS / 1000)) s (real) before the scheduled snapshot would fall due"
  echo "day: archiver ($via to Garage): $segs level 0 segments ($(calc "$seg_raw / 1e6" %.1f) MB of stream, $(calc "$seg_raw / ($segs > 0 ? $segs : 1)" %.0f) bytes each); one per flush interval would be $(calc "($last_ms - $first_ms) / $flush_ms" %.0f): $(calc "100 * $segs * $flush_ms / ($last_ms - $first_ms)" %.0f)%; behind the master by $(calc "$lag_sum / ($lags > 0 ? $lags : 1)" %.0f) bytes on average, $max_lag at most ($lags samples, every 0.5 s); the last write durable $acked_t s after the load stopped"
  echo "day: objects when the archiver stopped: $(levels_text <<<"$objs_stop")"

  # The archiver compacts every 10 s, a period that does not scale: the last 10 s of level 0
  # segments stand for 10 × S s of simulated time. One `pitr compact` (what the archiver's next
  # pass would have done) leaves the archive as at the defaults.
  local objs total
  "$direct" compact --store "$store" --levels "$levels" --json >"$WORK/day-compact.json" 2>"$WORK/day-compact.err" \
    || die "pitr compact failed: $(tail -n 5 "$WORK/day-compact.err")"
  objs="$(day_objects "$direct" "$store")"
  total="${objs%% *}"
  echo "day: objects after one more compaction pass (pitr compact --levels $levels): $(levels_text <<<"$objs"); $(calc "$total / $days" %.0f) per simulated day (goal <= 500 at the defaults: $(awk -v x="$total" -v d="$days" 'BEGIN { print (x / d <= 500 ? "met" : "NOT met") }'))"
  echo "day: Garage: $(garage_cli bucket info pitr | grep -i 'objects' | tr -s ' ' | paste -sd ';' -)"

  # What a restore to the latest moment reads.
  local plan
  "$direct" restore --store "$store" --to latest --dry-run --json >"$WORK/day-plan.json"
  plan="$(py_json '
import re
lv = {}
for s in j["segments"]:
    k = int(re.search(r"/L(\d)/", s["name"]).group(1))
    lv[k] = lv.get(k, 0) + 1
print("1 snapshot (%.1f MB) + %d objects (%s), %.1f MB stored" % (j["snapshot"]["bytes"] / 1e6, len(j["segments"]),
      ", ".join("level %d: %d" % (k, lv[k]) for k in sorted(lv)), j["bytes"] / 1e6))' <"$WORK/day-plan.json")"
  echo "day: pitr restore --to latest reads $plan"

  # Alternating rounds: the master's dump.rdb loaded natively; pitr restore --output-dir
  # through the proxy then redis-server on the printed command line until loaded.
  local r dir rsecs total_t cl args lkeys ldigest native=() totals=() restores=() loads=() ratios=()
  local verifies=() directs=() rreq="" vreq="" rss=0 cmds=""
  PITR="$proxied"
  for ((r = 1; r <= ROUNDS; r++)); do
    native_load "day-native-$r" "$native_rdb"
    [ "$NL_KEYS" = "$keys" ] || die "native load: $NL_KEYS keys, want $keys"
    native+=("$NL_WALL")
    log "round $r: native load of the master's dump.rdb $NL_WALL s (wall), $NL_LOGGED s (logged)"

    dir="$WORK/day-out-$r"
    rm -rf "$dir"
    sync
    garage_requests >"$WORK/day-req-before"
    t0="$(now)"
    timed_restore "$WORK/day-restore-$r" --store "$store" --to latest --output-dir "$dir"
    rsecs="$T_WALL"
    garage_requests >"$WORK/day-req-after"
    [ "$T_RSS_KIB" -gt "$rss" ] && rss="$T_RSS_KIB"
    rreq="$(requests_delta "$WORK/day-req-before" "$WORK/day-req-after")"
    cmds="$(json_num commands <"$WORK/day-restore-$r.json")"
    cl="$(json_str command_line <"$WORK/day-restore-$r.json")"
    read -r -a args <<<"$cl"
    [ "${args[0]}" = "redis-server" ] || die "unexpected command line: $cl"
    REDIS_PORT="$(free_port)"
    "${args[@]}" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --logfile "$dir/redis.log" \
      --enable-debug-command local >"$dir/stdout.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    wait_loaded "$REDIS_PORT" "$REDIS_PID"
    total_t="$(elapsed "$t0")"
    lkeys="$(dbsize "$REDIS_PORT")"
    ldigest="$(redis-cli -p "$REDIS_PORT" debug digest | tr -d '\r')"
    stop_redis_pid "$REDIS_PID"
    [ "$lkeys" = "$keys" ] || die "server on --output-dir: $lkeys keys, want $keys"
    [ "$ldigest" = "$digest" ] || die "server on --output-dir: digest $ldigest, the master's $digest"
    totals+=("$total_t")
    restores+=("$rsecs")
    loads+=("$(calc "$total_t - $rsecs")")
    ratios+=("$(calc "$total_t / ${native[$((r - 1))]}" %.3f)")
    log "round $r: pitr restore --output-dir through the proxy $rsecs s + start until loaded = $total_t s ($(logged_load_seconds "$dir/redis.log") s logged load), $cmds commands; requests: $rreq"
    rm -rf "$dir"

    garage_requests >"$WORK/day-req-before"
    timed_verify "$WORK/day-verify-$r" "$proxied" --store "$store"
    garage_requests >"$WORK/day-req-after"
    verifies+=("$T_WALL")
    vreq="$(requests_delta "$WORK/day-req-before" "$WORK/day-req-after")"
    log "round $r: pitr verify through the proxy $T_WALL s; requests: $vreq"

    # The same restore step straight to Garage: what the proxy's round trips (and its
    # Python copy loop, on the same cores) add.
    PITR="$direct"
    timed_restore "$WORK/day-direct-$r" --store "$store" --to latest --output-dir "$dir"
    directs+=("$T_WALL")
    PITR="$proxied"
    rm -rf "$dir"
    log "round $r: pitr restore --output-dir straight to Garage (no proxy) $T_WALL s"
  done
  PITR="$saved"
  stop_pid "$proxy_pid" 5
  forget_pid "$proxy_pid"

  local paired
  paired="$(median "${ratios[@]}")"
  echo "day: native: redis-server loading the master's dump.rdb ($(calc "$(stat -c %s "$native_rdb") / 1e6" %.0f) MB, SAVEd after the last write; restores must match its DEBUG DIGEST, and did) until loaded: ${native[*]} s"
  echo "day: pitr restore --to latest --output-dir through ${DAY_RTT_MS} ms + redis-server until loaded: ${totals[*]} s (restore ${restores[*]} s, start+load ${loads[*]} s); $cmds commands after the snapshot; peak RSS $(calc "$rss / 1024" %.1f) MiB"
  echo "day: median of the rounds' ratios (restore + load) / native load $(calc "$paired" %.2f) (target <= 1.5: $(awk -v x="$paired" 'BEGIN { print (x <= 1.5 ? "met" : "NOT met") }')); ratios ${ratios[*]}"
  echo "day: requests of one restore (Garage's api_s3_request_counter; GetObject includes range GETs): $rreq"
  echo "day: pitr verify through ${DAY_RTT_MS} ms: ${verifies[*]} s; requests of one verify: $vreq"
  echo "day: the restore step straight to Garage (no proxy, not part of the ratio): ${directs[*]} s"
}

# --- main -----------------------------------------------------------------------------------

for c in redis-server redis-cli redis-benchmark; do
  have "$c" || die "$c not found (scripts/install-deps.sh installs redis)"
done
[ -x /usr/bin/time ] || die "/usr/bin/time (GNU time) not found: apt-get install time"
build
echo "commit: $(git rev-parse --short HEAD)$(git status --porcelain -- src Cargo.toml Cargo.lock | grep -q . && echo ' (src/ has uncommitted changes)')"
echo "machine: $(nproc) cores, $(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), $(rustc --version), redis-server $(redis-server --version | awk '{ print $3 }' | cut -d= -f2)"
for s in "${sections[@]}"; do
  echo "load before $s: $(cut -d' ' -f1-3 /proc/loadavg)"
  "section_$s"
done
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
