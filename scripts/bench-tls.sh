#!/usr/bin/env bash
# TLS against plain TCP, same servers, same run: prints each figure for both and the ratio
# (TLS time / plain time; the target is at most 1.15). docs/benchmarks.md ("TLS") records a
# run.
#
#   scripts/bench-tls.sh
#
# One master listens on `port` and `tls-port` (certificates made here with openssl: a CA and
# a server certificate for 127.0.0.1). Per round, alternating which goes first:
#   full sync  `pitr archive` of the master (DEBUG POPULATE, BENCH_TLS_KEYS keys of
#              BENCH_TLS_VALUE bytes) into a new store, from start to "snapshot durable".
#   stream     both archivers stopped, BENCH_TLS_COMMANDS SETs written (redis-benchmark), then
#              each archiver started again: from start until it has received every byte
#              written before (its pitr_received_offset; its partial resync reads the backlog
#              as fast as it can), then checked durable with PUBLISH + WAIT 1. The CPU
#              seconds the archiver and the master spent until then are printed too.
#   target     `pitr restore --to latest --via commands --target` of the plain archive into
#              one empty server, through its `port` and its `tls-port` (the report's seconds).
#   drain      the transport's own figure for the stream: examples/drain.rs connects as
#              `pitr` does (same TCP and TLS code), asks with PSYNC for the same backlog and
#              only reads and discards it (no parsing, compression or store); timed from its
#              start until it has read every byte, with the CPU seconds of each side.
#   replica    the server's own figure for the stream: two Redis replicas of the master, one
#              through `port`, one through `tls-port` (`tls-replication yes`), are stopped
#              (SIGSTOP) while the SETs are written and their links then closed by the
#              master (CLIENT KILL TYPE replica); each is let go (SIGCONT) and timed from its "Trying
#              a partial resynchronization" (its log) until its offset reaches the master's:
#              the same backlog, read and applied by the server itself.
# Per figure: the median of the BENCH_TLS_ROUNDS rounds' ratios (the data set grows every
# round, so only the two sides of one round compare), and each side's median.
#
# Environment (defaults in brackets):
#   BENCH_TLS_ROUNDS    rounds                              [3]
#   BENCH_TLS_KEYS      keys of the snapshot                [1000000]
#   BENCH_TLS_VALUE     value size in bytes                 [100]
#   BENCH_TLS_COMMANDS  SETs of the stream                  [1000000]
#   BENCH_KEEP=1        keep the scratch directory
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
exec </dev/null

ROUNDS="${BENCH_TLS_ROUNDS:-3}"
KEYS="${BENCH_TLS_KEYS:-1000000}"
VALUE="${BENCH_TLS_VALUE:-100}"
COMMANDS="${BENCH_TLS_COMMANDS:-1000000}"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/pitr-bench-tls.XXXXXX")"
PIDS=()
# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

now() { date +%s.%N; }
TCK="$(getconf CLK_TCK)"
# User + system CPU ticks of a process so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
elapsed() { awk -v a="$1" -v b="${2:-$(now)}" 'BEGIN { printf "%.3f", b - a }'; }
calc() { awk "BEGIN { printf \"${2:-%.3f}\", $1 }"; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
json_num() { grep -o "\"$1\": *-\?[0-9.eE+-]*" | head -n1 | sed 's/.*: *//'; }

for tool in redis-server redis-cli redis-benchmark openssl; do
  have "$tool" || die "$tool is needed"
done

banner "build"
cargo build --release --bin pitr --example drain >&2
TARGET_DIR="$(cargo metadata --no-deps --format-version 1 \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
PITR="$WORK/pitr"
cp "$TARGET_DIR/release/pitr" "$PITR"
DRAIN="$WORK/drain"
cp "$TARGET_DIR/release/examples/drain" "$DRAIN"

banner "certificates"
C="$WORK/certs"
mkdir -p "$C"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=pitr-bench-ca -keyout "$C/ca.key" -out "$C/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1 \
  -keyout "$C/server.key" -out "$C/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$C/san.ext"
openssl x509 -req -in "$C/server.csr" -CA "$C/ca.pem" -CAkey "$C/ca.key" -CAcreateserial \
  -days 2 -extfile "$C/san.ext" -out "$C/server.pem" 2>/dev/null

# tls_server NAME [config...]: a server on a plain port ($REDIS_PORT) and a tls-port ($TLS_PORT).
TLS_PORT=""
tls_server() {
  local name="$1"
  shift
  TLS_PORT="$(free_port)"
  start_redis "$name" "tls-port $TLS_PORT" "tls-cert-file $C/server.pem" \
    "tls-key-file $C/server.key" "tls-ca-cert-file $C/ca.pem" "tls-auth-clients no" "$@"
}

tls_server master "repl-diskless-sync yes" "repl-diskless-sync-delay 0" \
  "repl-backlog-size 2gb" "repl-timeout 600"
MPORT="$REDIS_PORT"
MTLS="$TLS_PORT"
MPID="$REDIS_PID"
tls_server target
TPORT="$REDIS_PORT"
TTLS="$TLS_PORT"
banner "master: DEBUG POPULATE $KEYS keys of $VALUE bytes"
redis-cli -p "$MPORT" debug populate "$KEYS" key "$VALUE" >/dev/null

# Two Redis replicas of the master, through its port and its tls-port.
declare -A RPID RPORT RDIR
start_redis replica-plain "replicaof 127.0.0.1 $MPORT" "repl-timeout 600"
RPID[plain]="$REDIS_PID" RPORT[plain]="$REDIS_PORT" RDIR[plain]="$REDIS_DIR"
tls_server replica-tls "tls-replication yes" "replicaof 127.0.0.1 $MTLS" "repl-timeout 600"
RPID[tls]="$REDIS_PID" RPORT[tls]="$REDIS_PORT" RDIR[tls]="$REDIS_DIR"
info_field() { redis-cli -p "$1" info replication | tr -d '\r' | sed -n "s/^$2://p"; }
link_up() { [ "$(info_field "$1" master_link_status)" = up ]; }
for m in plain tls; do
  wait_for 300 link_up "${RPORT[$m]}" \
    || die "the $m replica did not come up: $(tail -n 3 "${RDIR[$m]}/redis.log")"
done
# replica MODE: seconds from the replica's (SIGSTOPped, dropped by the master) partial
# resync request until its offset reaches the master's.
replica() {
  local goal log="${RDIR[$1]}/redis.log" n t0 t1 line
  goal="$(info_field "$MPORT" master_repl_offset)"
  n="$(grep -c "Trying a partial resynchronization" "$log" || true)"
  kill -CONT "${RPID[$1]}"
  until link_up "${RPORT[$1]}" \
    && [ "$(info_field "${RPORT[$1]}" master_repl_offset)" -ge "$goal" ]; do
    sleep 0.01
  done
  t1="$(now)"
  [ "$(grep -c "Trying a partial resynchronization" "$log")" -gt "$n" ] \
    || die "the $1 replica did not resync: $(tail -n 5 "$log")"
  grep -q "Successful partial resynchronization" "$log" \
    || die "the $1 replica made a full sync: $(tail -n 5 "$log")"
  line="$(grep "Trying a partial resynchronization" "$log" | tail -n1)"
  # "<pid>:S 07 Dec 2026 03:37:20.747 * Trying ..."
  t0="$(date -d "$(echo "$line" | awk '{ print $2, $3, $4, $5 }')" +%s.%N)"
  elapsed "$t0" "$t1"
}

# url MODE PORTS...: the master's URL for plain or tls.
url() { if [ "$1" = tls ]; then echo "rediss://127.0.0.1:$MTLS"; else echo "redis://127.0.0.1:$MPORT"; fi; }
tls_args() { if [ "$1" = tls ]; then echo "--tls-ca $C/ca.pem"; fi; }

ARCH_PID=""
# start_archiver MODE STORE LOG [METRICS_ADDR]
start_archiver() {
  local metrics="${4:-off}"
  # shellcheck disable=SC2046
  RUST_LOG=info "$PITR" archive --source "$(url "$1")" $(tls_args "$1") --store "$2" \
    --metrics-addr "$metrics" --snapshot-interval 0 --compaction-levels off --flush-interval 1s \
    >>"$3" 2>&1 &
  ARCH_PID=$!
  PIDS+=("$ARCH_PID")
}
stop_archiver() {
  kill -TERM "$ARCH_PID"
  wait "$ARCH_PID" || die "the archiver exited $? after SIGTERM"
  forget_pid "$ARCH_PID"
}
# full_sync MODE STORE: seconds from the start to "snapshot durable".
full_sync() {
  local log="$2.log" t0
  t0="$(now)"
  start_archiver "$1" "$2" "$log"
  until grep -qs "snapshot durable" "$log"; do
    kill -0 "$ARCH_PID" 2>/dev/null || die "the archiver exited: $(tail -n 5 "$log")"
    sleep 0.02
  done
  elapsed "$t0"
  stop_archiver
}
# received_offset PORT: the archiver's pitr_received_offset from its /metrics on PORT (0 while
# it does not answer), read with bash's /dev/tcp: a poll every 20 ms that started a process
# (an interpreter, curl) would take CPU from the two sides it times.
received_offset() {
  local line v=0
  if exec 9<>"/dev/tcp/127.0.0.1/$1"; then
    printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&9
    while IFS= read -r -t 2 line <&9; do
      case "$line" in
        "pitr_received_offset "*)
          v="${line#* }"
          v="${v%%[.$'\r']*}"
          break
          ;;
      esac
    done
    exec 9<&-
  fi 2>/dev/null
  echo "$v"
}
# stream MODE STORE: seconds from the start until the archiver has received every byte the
# master wrote before (its pitr_received_offset reaches the master's offset: the link's own
# throughput; the ACK of a durable offset waits for the next flush, up to --flush-interval
# later, which would blur the figure). A PUBLISH + WAIT 1 then checks that it is all durable.
# The CPU seconds of each side until then (user + system: the archiver's from its start, the
# master's since) go to $WORK/cpu-MODE.
stream() {
  local log="$2.log" t0 out goal mport got=0 took m0
  goal="$(redis-cli -p "$MPORT" info replication | tr -d '\r' | sed -n 's/^master_repl_offset://p')"
  mport="$(free_port)"
  m0="$(cpu_ticks "$MPID")"
  t0="$(now)"
  start_archiver "$1" "$2" "$log" "127.0.0.1:$mport"
  while :; do
    got="$(received_offset "$mport")"
    [ "$got" -ge "$goal" ] && break
    kill -0 "$ARCH_PID" 2>/dev/null || die "the archiver exited: $(tail -n 5 "$log")"
    sleep 0.02
  done
  took="$(elapsed "$t0")"
  echo "$(calc "$(cpu_ticks "$ARCH_PID") / $TCK" %.2f) $(calc "($(cpu_ticks "$MPID") - $m0) / $TCK" %.2f)" >>"$WORK/cpu-$1"
  out="$(printf 'PUBLISH pitr-bench-tls marker\nWAIT 1 600000\n' | redis-cli -p "$MPORT" | tr -d '\r' | tail -n1)"
  [ "$out" = 1 ] || die "WAIT answered $out"
  grep -q "partial resync: continuing" "$log" || die "$1: no partial resync: $(tail -n 5 "$log")"
  stop_archiver
  echo "$took"
}
# drain MODE FROM TO: seconds from the start of examples/drain.rs until it has read the
# backlog's bytes FROM+1..=TO; the CPU seconds of each side go to $WORK/cpu-drain-MODE.
drain() {
  local t0 took m0 out replid ca=()
  replid="$(info_field "$MPORT" master_replid)"
  [ "$1" = tls ] && ca=("$C/ca.pem")
  m0="$(cpu_ticks "$MPID")"
  t0="$(now)"
  out="$("$DRAIN" "$(url "$1")" "$replid" "$(($2 + 1))" "$(($3 - $2))" "${ca[@]}")" \
    || die "drain $1 failed"
  took="$(elapsed "$t0")"
  echo "$(calc "$(echo "$out" | sed 's/.*cpu_ticks=//') / $TCK" %.2f) $(calc "($(cpu_ticks "$MPID") - $m0) / $TCK" %.2f)" >>"$WORK/cpu-drain-$1"
  echo "$took"
}
# target MODE STORE: the restore report's seconds into the empty target.
target() {
  local u out="$WORK/restore-$1.json"
  redis-cli -p "$TPORT" flushall >/dev/null
  if [ "$1" = tls ]; then u="rediss://127.0.0.1:$TTLS"; else u="redis://127.0.0.1:$TPORT"; fi
  # shellcheck disable=SC2046
  "$PITR" restore --store "$2" --to latest --via commands --target "$u" $(tls_args "$1") --json >"$out" 2>"$out.err" \
    || die "restore $1 failed: $(tail -n 3 "$out.err")"
  json_num seconds <"$out"
}

declare -A FULL STREAM DRAIN TARGET REPLICA
for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then order="plain tls"; else order="tls plain"; fi
  banner "round $r ($order)"
  for m in $order; do
    rm -rf "$WORK/store-$m" "$WORK/store-$m.log"
    FULL[$m]+=" $(full_sync "$m" "$WORK/store-$m")"
  done
  kill -STOP "${RPID[plain]}" "${RPID[tls]}"
  from="$(info_field "$MPORT" master_repl_offset)"
  redis-benchmark -p "$MPORT" -t set -n "$COMMANDS" -r 10000000 -d "$VALUE" -P 32 -q >/dev/null
  # The stopped replicas' links (no archiver is connected now): they resync from the backlog.
  redis-cli -p "$MPORT" client kill type replica >/dev/null
  to="$(info_field "$MPORT" master_repl_offset)"
  for m in $order; do
    STREAM[$m]+=" $(stream "$m" "$WORK/store-$m")"
  done
  for m in $order; do
    DRAIN[$m]+=" $(drain "$m" "$from" "$to")"
  done
  for m in $order; do
    REPLICA[$m]+=" $(replica "$m")"
  done
  for m in $order; do
    TARGET[$m]+=" $(target "$m" "$WORK/store-plain")"
  done
  log "round $r: full sync plain${FULL[plain]} tls${FULL[tls]}; stream plain${STREAM[plain]} tls${STREAM[tls]}; drain plain${DRAIN[plain]} tls${DRAIN[tls]}; replica plain${REPLICA[plain]} tls${REPLICA[tls]}; target plain${TARGET[plain]} tls${TARGET[tls]}"
done

rdb_mb="$(calc "$(du -sb "$WORK/store-plain" | cut -f1) / 1048576" %.0f)"
# ratios A B: each round's A/B (A and B: one figure per round, space-separated).
# shellcheck disable=SC2206
ratios() { local a b i; a=($1) b=($2); for ((i = 0; i < ${#a[@]}; i++)); do printf '%s ' "$(calc "${a[i]} / ${b[i]}" %.2f)"; done; }
# ratio_of A B: the median of the rounds' A/B (and each).
# shellcheck disable=SC2046
ratio_of() { local r; r="$(ratios "$1" "$2")"; echo "$(median $r) (rounds: ${r% })"; }
# The data set grows by the stream's keys every round: the two sides of one round compare, so
# the figure is the median of the rounds' ratios (the sides' medians are shown too).
report() {
  local what="$1" p t r m
  r="$(ratios "$3" "$2")"
  # shellcheck disable=SC2086
  m="$(median $r)"
  # shellcheck disable=SC2086
  p="$(median $2)"
  # shellcheck disable=SC2086
  t="$(median $3)"
  echo "$what: ratio $m, median of the rounds' (${r% }) (target <= 1.15: $(awk -v x="$m" 'BEGIN { print (x <= 1.15 ? "met" : "NOT met") }')); medians plain $(calc "$p" %.2f) s, TLS $(calc "$t" %.2f) s; runs plain:$2, TLS:$3"
}
echo "tls: $ROUNDS rounds; $KEYS keys of $VALUE bytes, $COMMANDS SETs; archive ${rdb_mb} MiB stored"
report "full sync ($KEYS keys)" "${FULL[plain]}" "${FULL[tls]}"
report "stream ($COMMANDS SETs from the backlog, until received)" "${STREAM[plain]}" "${STREAM[tls]}"
cpu() { local m; m="$(cut -d' ' -f"$2" "$WORK/cpu-$1" | tr '\n' ' ')"; echo "$(median $m) s (runs: $m)"; }
echo "  CPU until received, medians: pitr plain $(cpu plain 1), TLS $(cpu tls 1); the master plain $(cpu plain 2), TLS $(cpu tls 2)"
# Both sides' CPU seconds per round (pitr + master), their ratio TLS/plain, and the cores they
# kept busy: when the two fill the machine's cores, the time follows the CPU they need.
cpu_sums() { awk '{ print $1 + $2 }' "$WORK/cpu-$1" | tr '\n' ' '; }
busy() { local r; r="$(ratios "$(cpu_sums "$1")" "$2")"; echo "${r% }"; }
# The master's extra CPU under TLS as a share of both sides' plain CPU, per round: the least
# TLS can cost on a machine the two share, with pitr's own TLS cost at zero.
master_share() { paste -d' ' "$WORK/cpu-plain" "$WORK/cpu-tls" | awk '{ printf "%.2f ", ($4 - $2) / ($1 + $2) }'; }
echo "  the master's extra CPU under TLS over both sides' plain CPU, per round: $(master_share)"
echo "  pitr + master CPU, TLS over plain, median of the rounds: $(ratio_of "$(cpu_sums tls)" "$(cpu_sums plain)"); cores busy per round: plain $(busy plain "${STREAM[plain]}"), TLS $(busy tls "${STREAM[tls]}") of $(nproc)"
report "  the transport's own: examples/drain.rs reads the same backlog and discards it" "${DRAIN[plain]}" "${DRAIN[tls]}"
echo "  CPU until read, medians: the reader plain $(cpu drain-plain 1), TLS $(cpu drain-tls 1); the master plain $(cpu drain-plain 2), TLS $(cpu drain-tls 2)"
echo "  pitr's stream time over the reader's, medians of the rounds: plain $(ratio_of "${STREAM[plain]}" "${DRAIN[plain]}"), TLS $(ratio_of "${STREAM[tls]}" "${DRAIN[tls]}")"
report "  the server's own: a Redis replica's partial resync of the same backlog" "${REPLICA[plain]}" "${REPLICA[tls]}"
report "live target (restore --target)" "${TARGET[plain]}" "${TARGET[tls]}"
