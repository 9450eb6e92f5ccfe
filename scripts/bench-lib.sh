# shellcheck shell=bash
# The REDIS_* variables set here are read by the scripts that source this file.
# shellcheck disable=SC2034
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

# Set by start_redis: the port, pid and directory of the server just started (read by the
# scripts that source this file).
REDIS_PORT=""
REDIS_PID=""
REDIS_DIR=""
# start_redis NAME [config lines...]: a scratch redis-server in $WORK/NAME (kept if it
# exists: a dump.rdb or appendonlydir put there is loaded). Returns once it answers INFO
# (it may still be loading; see wait_loaded).
start_redis() {
  local name="$1" dir attempt i
  shift
  dir="$WORK/$name"
  mkdir -p "$dir"
  for attempt in 1 2 3 4 5; do
    REDIS_PORT="$(free_port)"
    {
      echo "bind 127.0.0.1"
      echo "port $REDIS_PORT"
      echo "dir $dir"
      echo "logfile $dir/redis.log"
      echo "daemonize no"
      echo 'save ""'
      echo "appendonly no"
      echo "enable-debug-command local"
      printf '%s\n' "$@"
    } >"$dir/redis.conf"
    redis-server "$dir/redis.conf" >>"$dir/stdout.log" 2>&1 &
    REDIS_PID=$!
    REDIS_DIR="$dir"
    PIDS+=("$REDIS_PID")
    for ((i = 0; i < 600; i++)); do
      redis-cli -p "$REDIS_PORT" info server >/dev/null 2>&1 && return 0
      kill -0 "$REDIS_PID" 2>/dev/null || break
      sleep 0.05
    done
    stop_pid "$REDIS_PID"
    forget_pid "$REDIS_PID"
    log "redis-server did not start on port $REDIS_PORT (attempt $attempt): $(tail -n 3 "$dir/redis.log" 2>/dev/null)"
  done
  die "redis-server did not start"
}
