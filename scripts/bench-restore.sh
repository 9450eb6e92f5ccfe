#!/usr/bin/env bash
# Benchmarks of `pitr restore`; prints the figures as plain lines on stdout (progress and
# logs go to stderr). docs/benchmarks.md ("Restore") records a run and the commands.
#
#   scripts/bench-restore.sh [replay|snapshot|files|rss|latency|all]...      (default: all)
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
#
# The big archive (snapshot, files, rss) is made once per run and shared. Needs redis-server,
# redis-cli, redis-benchmark 7+, GNU time (/usr/bin/time) and coreutils/procps/awk; latency
# also garage (scripts/install-deps.sh) and python3. Every
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

select_sections "replay snapshot files rss latency" "$@"
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
# start_archiver NAME MASTER_PORT STORE [FLUSH_INTERVAL (1s)]
start_archiver() {
  ARCH_LOG="$WORK/$1-archive.log"
  RUST_LOG=info "$PITR" archive --source "redis://127.0.0.1:$2" --store "$3" \
    --flush-interval "${4:-1s}" >"$ARCH_LOG" 2>&1 &
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
  "$PITR" ls --store "$1" --json | tr -d ' \n' | grep -o '"snapshots":\[{"offset":[0-9]*' \
    | head -n1 | grep -o '[0-9]*$'
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
