# shellcheck shell=bash
# Process and port helpers shared by the benchmark scripts (scripts/bench.sh,
# scripts/bench-restore.sh). Source it after setting WORK (the scratch directory) and
# PIDS=() (the processes to stop on exit); it installs the EXIT/INT/TERM traps.

# Stops one process this script started: SIGTERM, then SIGKILL after $2 seconds (default 10).
stop_pid() {
  local pid="$1" grace="${2:-10}" i
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid still running after ${grace}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do
    stop_pid "$pid" 5
  done
  if [ "${BENCH_KEEP:-0}" = "1" ]; then
    log "kept $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() {
  local keep=() p
  for p in "${PIDS[@]}"; do
    [ "$p" = "$1" ] || keep+=("$p")
  done
  PIDS=("${keep[@]}")
}

# A TCP port on 127.0.0.1 that nothing listens on, outside the ephemeral range, not handed
# out before by this script.
USED_PORTS=" "
free_port() {
  local lo hi base span p _
  read -r lo hi </proc/sys/net/ipv4/ip_local_port_range
  if [ "$lo" -ge 12000 ]; then
    base=10000 span=$((lo - 10000))
  else
    base=$((hi + 1)) span=$((65000 - hi))
  fi
  for _ in $(seq 200); do
    p=$((base + (RANDOM * 32768 + RANDOM) % span))
    case "$USED_PORTS" in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      USED_PORTS+="$p "
      echo "$p"
      return 0
    fi
  done
  die "no free port found"
}
