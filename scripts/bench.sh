#!/usr/bin/env bash
# Benchmarks of `pitr archive`; prints the figures as plain lines on stdout (progress and
# logs go to stderr). docs/benchmarks.md records a run and the commands.
#
#   scripts/bench.sh [ingest|rss|rpo|all]...      (default: all)
#
#   ingest  cargo bench --bench ingest (criterion): the archiver's stream path (frame, stamp,
#           compress, checksum, write to file:// with fsync) next to plain zstd of the same
#           bytes at the same level; prints MB/s and the ratio (target >= 0.8).
#   rss     peak RSS (VmHWM) of `pitr archive` while it takes a full sync of a master whose
#           RDB is over 1 GB, and of one with a ~100 MB RDB (target <= 64 MiB, whatever the
#           RDB's size).
#   rpo     writes at a steady rate against a master that `pitr archive` replicates, on
#           file:// and on Garage (S3 on 127.0.0.1), at flush intervals 1s and 100ms:
#           `wait` = SET then WAIT 1 on the same connection, time until WAIT returns
#           (target p99 <= flush interval + 100 ms); `poll` = SET only, time until the
#           archiver ACKs the write's offset (what an unwaited write risks).
#
# Needs only what scripts/install-deps.sh installs (redis-server, redis-cli, garage) plus
# coreutils/procps/awk. Every process it starts is stopped on exit (also on Ctrl-C), and its
# scratch directory is removed (BENCH_KEEP=1 keeps it). Everything listens on 127.0.0.1.
#
# Environment (defaults in brackets):
#   BENCH_RSS_KEYS        key counts of the rss runs              ["10000000 1000000"]
#   BENCH_RSS_VALUE       DEBUG POPULATE value size in bytes      [100]
#   BENCH_RPO_RATE        writes per second                       [200]
#   BENCH_RPO_SECONDS     seconds per rpo run                     [20]
#   BENCH_RPO_FLUSH       flush intervals                         ["1s 100ms"]
#   BENCH_RPO_STORES      stores                                  ["file garage"]
#   BENCH_RPO_MODES       rpo modes                               ["wait poll"]
#   BENCH_RPO_WAIT_MS     WAIT timeout (and poll deadline), ms    [5000]
#   BENCH_KEEP=1          keep the scratch directory (logs, archives)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
exec </dev/null

RSS_KEYS="${BENCH_RSS_KEYS:-10000000 1000000}"
RSS_VALUE="${BENCH_RSS_VALUE:-100}"
RPO_RATE="${BENCH_RPO_RATE:-200}"
RPO_SECONDS="${BENCH_RPO_SECONDS:-20}"
RPO_FLUSH="${BENCH_RPO_FLUSH:-1s 100ms}"
RPO_STORES="${BENCH_RPO_STORES:-file garage}"
RPO_MODES="${BENCH_RPO_MODES:-wait poll}"
RPO_WAIT_MS="${BENCH_RPO_WAIT_MS:-5000}"

select_sections "ingest rss rpo" "$@"
sections=("${SECTIONS[@]}")

WORK="$(mktemp -d "${TMPDIR:-/tmp}/pitr-bench.XXXXXX")"
PIDS=()

# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

TARGET_DIR=""
build() {
  banner "build"
  cargo build --release --bin pitr --examples >&2
  TARGET_DIR="$(cargo metadata --no-deps --format-version 1 \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
  [ -x "$TARGET_DIR/release/pitr" ] || die "no $TARGET_DIR/release/pitr after the build"
  [ -x "$TARGET_DIR/release/examples/rpo" ] || die "no $TARGET_DIR/release/examples/rpo after the build"
}

# --- redis-server -------------------------------------------------------------------------

# start_redis comes from scripts/bench-lib.sh.

rcli() {
  redis-cli -p "$REDIS_PORT" "$@"
}

replica_online() {
  rcli info replication | grep -q '^slave0:.*state=online'
}

stop_redis() {
  stop_pid "$REDIS_PID" 30
  forget_pid "$REDIS_PID"
  REDIS_PID=""
}

# --- the archiver ---------------------------------------------------------------------------

PITR_PID=""
PITR_LOG=""
# start_archiver LOGNAME STORE FLUSH [env assignments...]
start_archiver() {
  local name="$1" store="$2" flush="$3"
  shift 3
  PITR_LOG="$WORK/$name.log"
  env RUST_LOG=info "$@" "$TARGET_DIR/release/pitr" archive \
    --source "redis://127.0.0.1:$REDIS_PORT" --store "$store" --flush-interval "$flush" \
    >"$PITR_LOG" 2>&1 &
  PITR_PID=$!
  PIDS+=("$PITR_PID")
}

stop_archiver() {
  stop_pid "$PITR_PID" 60
  forget_pid "$PITR_PID"
  PITR_PID=""
}

# start_garage, garage_cli and garage_env come from scripts/bench-lib.sh.

# --- sections -------------------------------------------------------------------------------

# The median time per iteration of a criterion benchmark, in ns, and its bytes per iteration.
criterion_figures() {
  local dir="$TARGET_DIR/criterion/$1/new" ns bytes
  if ! [ "$dir/estimates.json" -nt "$WORK/ingest.start" ]; then
    die "no fresh criterion results in $dir"
  fi
  ns="$(sed -n 's/.*"median":{"confidence_interval":{[^}]*},"point_estimate":\([0-9.eE+-]*\).*/\1/p' "$dir/estimates.json")"
  bytes="$(grep -o '"Bytes":[0-9]*' "$dir/benchmark.json" | head -n1 | cut -d: -f2)"
  if [ -z "$ns" ] || [ -z "$bytes" ]; then
    die "cannot read $dir/estimates.json"
  fi
  echo "$ns $bytes"
}

mb_per_s() {
  local f
  f="$(criterion_figures "$1")"
  awk -v f="$f" 'BEGIN { split(f, a, " "); printf "%.1f", a[2] / a[1] * 1000 }'
}

section_ingest() {
  banner "ingest"
  touch "$WORK/ingest.start"
  log "cargo bench --bench ingest (a few minutes)"
  cargo bench --bench ingest 2>&1 | tee "$WORK/ingest.log" >&2
  local id figures="" times=""
  for id in zstd_alone_64MiB_pieces zstd_alone_1MiB_pieces scan_only encode_segment \
    segment_append file_put_new archiver_memory archiver_file archiver_file_8MiB_segments; do
    figures+="$id=$(mb_per_s "ingest/$id") "
    times+="$id=$(criterion_figures "ingest/$id" | awk '{ printf "%.1f", $1 / 1e6 }') "
  done
  awk -v f="$figures" -v ms="$times" 'BEGIN {
    n = split(f, kv, " ")
    for (i = 1; i <= n; i++) { split(kv[i], p, "="); v[p[1]] = p[2] }
    n = split(ms, kv, " ")
    for (i = 1; i <= n; i++) { split(kv[i], p, "="); t[p[1]] = p[2] }
    z = v["zstd_alone_64MiB_pieces"]
    a = v["archiver_file"]
    printf "ingest: archiver %.1f MB/s, zstd alone %.1f MB/s, ratio %.2f (target >= 0.80: %s)\n",
      a, z, a / z, (a / z >= 0.8 ? "met" : "NOT met")
    printf "ingest: archiver to memory:// %.1f MB/s (ratio %.2f); with 8 MiB segments %.1f MB/s (ratio %.2f)\n",
      v["archiver_memory"], v["archiver_memory"] / z, v["archiver_file_8MiB_segments"], v["archiver_file_8MiB_segments"] / z
    printf "ingest: zstd alone in 1 MiB pieces %.1f MB/s\n", v["zstd_alone_1MiB_pieces"]
    printf "ingest: ms per run over the same bytes (medians): zstd alone %s, archiver file:// %s, archiver memory:// %s; parts: scan %s, segment append %s, encode_segment %s, file put_new of the encoded segment %s\n",
      t["zstd_alone_64MiB_pieces"], t["archiver_file"], t["archiver_memory"], t["scan_only"], t["segment_append"], t["encode_segment"], t["file_put_new"]
  }'
  sed -n 's/^ingest\/paired: /ingest: paired: /p' "$WORK/ingest.log"
}

# rss_run KEYS: peak RSS of the archiver during the full sync of KEYS keys.
rss_run() {
  local keys="$1" name="rss-$1" store hwm=0 rss=0 peak_sampled=0 line bytes secs mbps stored t cpu base quarters
  banner "rss: $keys keys of $RSS_VALUE bytes"
  start_redis "$name" "rdbcompression no" "repl-diskless-sync yes" "repl-diskless-sync-delay 0"
  log "DEBUG POPULATE $keys key $RSS_VALUE"
  t=$SECONDS
  rcli DEBUG POPULATE "$keys" key "$RSS_VALUE" >/dev/null
  log "populated in $((SECONDS - t)) s; used_memory $(rcli info memory | sed -n 's/^used_memory_human://p' | tr -d '\r')"
  # Baseline: how fast the master produces and sends this RDB to a replica that only
  # throws it away (redis-cli --rdb - >/dev/null: no compression, no store).
  t="$(date +%s.%N)"
  rcli --rdb - 2>"$WORK/$name-rdb.err" >/dev/null || true
  grep -q "Transfer finished with success" "$WORK/$name-rdb.err" \
    || die "redis-cli --rdb failed: $(cat "$WORK/$name-rdb.err")"
  base="$(awk -v t="$t" -v n="$(date +%s.%N)" 'BEGIN { printf "%.2f", n - t }')"
  store="$WORK/$name-archive"
  start_archiver "$name" "$store" 1s
  t=$SECONDS
  while ! grep -qs "snapshot durable" "$PITR_LOG"; do
    if ! kill -0 "$PITR_PID" 2>/dev/null; then
      die "the archiver exited during the full sync: $(tail -n 20 "$PITR_LOG")"
    fi
    if [ $((SECONDS - t)) -gt 900 ]; then
      die "no 'snapshot durable' after 900 s: $(tail -n 20 "$PITR_LOG")"
    fi
    rss="$(awk '/^VmRSS:/ { print $2 }' "/proc/$PITR_PID/status" 2>/dev/null || echo 0)"
    [ "${rss:-0}" -gt "$peak_sampled" ] && peak_sampled="$rss"
    echo "$(date +%s%N) ${rss:-0}" >>"$WORK/$name.rss"
    sleep 0.05
  done
  hwm="$(awk '/^VmHWM:/ { print $2 }' "/proc/$PITR_PID/status")"
  # utime + stime of the archiver so far (the full sync is nearly all of it), in seconds.
  cpu="$(awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$PITR_PID/stat")"
  line="$(grep "snapshot durable" "$PITR_LOG" | tail -n1 | tr -d '"')"
  bytes="$(printf '%s\n' "$line" | grep -o 'bytes=[0-9]*' | cut -d= -f2)"
  stored="$(printf '%s\n' "$line" | grep -o 'stored=[0-9]*' | cut -d= -f2)"
  secs="$(printf '%s\n' "$line" | grep -o 'seconds=[0-9.]*' | cut -d= -f2)"
  mbps="$(printf '%s\n' "$line" | grep -o 'mb_per_s=[0-9.]*' | cut -d= -f2)"
  stop_archiver
  stop_redis
  # The largest VmRSS sample in each quarter of the time from the archiver's start to
  # "snapshot durable": flat quarters mean memory does not grow with the bytes received.
  quarters="$(awk '{ t[NR] = $1; r[NR] = $2 } END {
      span = t[NR] - t[1]; if (span <= 0) span = 1
      for (i = 1; i <= NR; i++) { q = int(4 * (t[i] - t[1]) / span); if (q > 3) q = 3; if (r[i] > m[q]) m[q] = r[i] }
      printf "%.1f / %.1f / %.1f / %.1f", m[0] / 1024, m[1] / 1024, m[2] / 1024, m[3] / 1024 }' "$WORK/$name.rss")"
  echo "rss: RDB $(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1e6 }') MB: sampled VmRSS max per quarter of the sync (MiB): $quarters"
  awk -v k="$keys" -v b="$bytes" -v s="$stored" -v h="$hwm" -v p="$peak_sampled" -v t="$secs" \
    -v m="$mbps" -v c="$cpu" -v base="$base" 'BEGIN {
    printf "rss: RDB %.1f MB (%d keys): peak RSS %.1f MiB (VmHWM; sampled VmRSS max %.1f MiB); target <= 64 MiB: %s\n",
      b / 1e6, k, h / 1024, p / 1024, (h <= 65536 ? "met" : "NOT met")
    printf "rss: RDB %.1f MB: snapshot durable in %s s (%s MB/s), stored %.1f MB (ratio %.1f), archiver CPU %.2f s; redis-cli --rdb - >/dev/null of the same RDB %.2f s (%.1f MB/s)\n",
      b / 1e6, t, m, s / 1e6, b / s, c, base, b / 1e6 / base
  }'
}

section_rss() {
  local k
  for k in $RSS_KEYS; do
    rss_run "$k"
  done
}

# rpo_run STORE FLUSH MODE
rpo_run() {
  local kind="$1" flush="$2" mode="$3" store envs=() out p99 target_ms segments
  case "$kind" in
    file) store="$WORK/rpo-$flush-$mode-archive" ;;
    garage)
      store="s3://pitr/bench-$flush-$mode"
      mapfile -t envs < <(garage_env)
      ;;
  esac
  start_archiver "rpo-$kind-$flush-$mode" "$store" "$flush" "${envs[@]}"
  if ! wait_for 60 replica_online; then
    die "the archiver did not come online: $(tail -n 20 "$PITR_LOG")"
  fi
  out="$("$TARGET_DIR/release/examples/rpo" "$REDIS_PORT" "$RPO_RATE" "$RPO_SECONDS" "$RPO_WAIT_MS" "$mode")" \
    || die "rpo failed: $out; archiver log: $(tail -n 20 "$PITR_LOG")"
  stop_archiver
  # How many segments the run left in the store (one per WAIT, at most, in wait mode).
  segments="$(env "${envs[@]}" "$TARGET_DIR/release/pitr" ls --store "$store" --json 2>/dev/null \
    | grep -o '"segments": *[0-9]*' | awk -F: '{ n += $2 } END { print n + 0 }')"
  if grep -q " WARN \| ERROR " "$PITR_LOG"; then
    log "archiver warnings ($kind, $flush, $mode):"
    grep " WARN \| ERROR " "$PITR_LOG" | head -n 5 >&2
  fi
  case "$flush" in
    *ms) target_ms="${flush%ms}" ;;
    *s) target_ms="$(awk -v s="${flush%s}" 'BEGIN { print s * 1000 }')" ;;
    *) target_ms=0 ;;
  esac
  p99="$(printf '%s\n' "$out" | grep -o 'p99=[0-9.]*' | cut -d= -f2)"
  printf 'rpo: store=%s flush=%s %s segments=%s' "$kind" "$flush" "${out#rpo }" "$segments"
  if [ "$mode" = "wait" ]; then
    awk -v p="$p99" -v t="$target_ms" 'BEGIN {
      printf "; target p99 <= %d ms: %s\n", t + 100, (p + 0 <= t + 100 ? "met" : "NOT met") }'
  else
    echo
  fi
}

section_rpo() {
  local kind flush mode
  banner "rpo"
  start_redis rpo
  for kind in $RPO_STORES; do
    if [ "$kind" = "garage" ]; then
      start_garage
    fi
    for flush in $RPO_FLUSH; do
      for mode in $RPO_MODES; do
        log "rpo: $kind, flush $flush, $mode, $RPO_RATE/s for $RPO_SECONDS s"
        rpo_run "$kind" "$flush" "$mode"
      done
    done
    if [ "$kind" = "garage" ]; then
      stop_pid "$GARAGE_PID" 10
      forget_pid "$GARAGE_PID"
    fi
  done
  stop_redis
}

# --- main -----------------------------------------------------------------------------------

have redis-server || die "redis-server not found (scripts/install-deps.sh installs it)"
have redis-cli || die "redis-cli not found (scripts/install-deps.sh installs it)"
build
echo "machine: $(nproc) cores, $(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), $(rustc --version), redis-server $(redis-server --version | awk '{ print $3 }' | cut -d= -f2), $(garage --version 2>/dev/null | awk '{ print "garage " $2 }')"
for s in "${sections[@]}"; do
  echo "load before $s: $(cut -d' ' -f1-3 /proc/loadavg)"
  "section_$s"
done
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
