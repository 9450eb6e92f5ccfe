# shellcheck shell=bash
# The REDIS_* variables set here are read by the scripts that source this file.
# shellcheck disable=SC2034
# Process, port, redis-server and Garage helpers shared by the benchmark scripts
# (scripts/bench.sh, scripts/bench-restore.sh). Source it after setting WORK (the scratch
# directory) and PIDS=() (the processes to stop on exit); it installs the EXIT/INT/TERM traps
# and unsets GARAGE_* variables (they would override the Garage config file start_garage
# writes).

while read -r v; do
  unset "$v"
done < <(compgen -e | grep '^GARAGE_' || true)

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

# Waits up to $1 seconds for the command "$2..." to succeed.
wait_for() {
  local timeout="$1" i
  shift
  for ((i = 0; i < timeout * 10; i++)); do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# --- Garage (the logic of tests/support/garage.rs) -------------------------------------------

GARAGE_CFG=""
GARAGE_PID=""
GARAGE_S3_PORT=""
GARAGE_ADMIN_PORT=""
GARAGE_KEY_ID=""
GARAGE_SECRET=""
garage_cli() {
  RUST_LOG=warn garage -c "$GARAGE_CFG" "$@"
}

garage_s3_answers() {
  local reply
  reply="$(
    exec 3<>"/dev/tcp/127.0.0.1/$GARAGE_S3_PORT" || exit 1
    printf 'GET /pitr/ HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$GARAGE_S3_PORT" >&3
    timeout 2 head -c 8 <&3
  )" 2>/dev/null || return 1
  [ "${reply#HTTP/1.}" != "$reply" ]
}

start_garage() {
  have garage || die "garage not found (scripts/install-deps.sh installs it)"
  local dir="$WORK/garage" rpc engine node out
  mkdir -p "$dir"
  GARAGE_CFG="$dir/garage.toml"
  GARAGE_S3_PORT="$(free_port)"
  rpc="$(free_port)"
  GARAGE_ADMIN_PORT="$(free_port)"
  if garage --version 2>&1 | grep -q lmdb || ! garage --version 2>&1 | grep -q sqlite; then
    engine=lmdb
  else
    engine=sqlite
  fi
  cat >"$GARAGE_CFG" <<EOF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "$engine"
metadata_fsync = false
data_fsync = false
disable_scrub = true

replication_factor = 1

rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$GARAGE_S3_PORT"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$GARAGE_ADMIN_PORT"
admin_token = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
EOF
  (cd "$dir" && RUST_LOG=garage=warn exec garage -c "$GARAGE_CFG" server >"$dir/garage.log" 2>&1) &
  GARAGE_PID=$!
  PIDS+=("$GARAGE_PID")
  wait_for 60 garage_cli status || die "garage did not start: $(tail -n 20 "$dir/garage.log")"
  node="$(garage_cli node id -q | cut -d@ -f1)"
  garage_cli layout assign -z dc1 -c 1G "$node" >/dev/null
  garage_cli layout apply --version 1 >/dev/null
  wait_for 60 garage_cli health || die "garage not healthy: $(tail -n 20 "$dir/garage.log")"
  out="$(garage_cli key create pitr-bench)"
  GARAGE_KEY_ID="$(printf '%s\n' "$out" | sed -n 's/^ *Key ID: *//p' | head -n1)"
  GARAGE_SECRET="$(printf '%s\n' "$out" | sed -n 's/^ *Secret key: *//p' | head -n1)"
  if [ -z "$GARAGE_KEY_ID" ] || [ -z "$GARAGE_SECRET" ]; then
    die "no key in: $out"
  fi
  garage_cli bucket create pitr >/dev/null
  garage_cli bucket allow --read --write --owner pitr --key "$GARAGE_KEY_ID" >/dev/null
  wait_for 60 garage_s3_answers || die "garage S3 API does not answer on $GARAGE_S3_PORT"
  log "garage up: S3 on 127.0.0.1:$GARAGE_S3_PORT ($engine)"
}

# garage_requests: the S3 requests Garage has answered since it started, one line per API
# endpoint ("GetObject 1234"), from its admin API's Prometheus metrics
# (api_s3_request_counter; no metrics_token is configured, so /metrics needs none). A range GET
# counts as GetObject.
garage_requests() {
  curl -fsS "http://127.0.0.1:$GARAGE_ADMIN_PORT/metrics" \
    | sed -n 's/^api_s3_request_counter{api_endpoint="\([A-Za-z0-9]*\)"} \([0-9]*\)$/\1 \2/p' \
    | sort
}

# requests_delta BEFORE AFTER: the requests between two garage_requests outputs (files), as
# "GetObject 12, ListObjectsV2 3" (endpoints with none left out; "none" if there were none).
requests_delta() {
  awk 'NR == FNR { b[$1] = $2; next } { d = $2 - b[$1]; if (d > 0) { printf "%s%s %d", sep, $1, d; sep = ", " } }
    END { if (sep == "") printf "none" }' "$1" "$2"
}

garage_env() {
  echo "AWS_ACCESS_KEY_ID=$GARAGE_KEY_ID"
  echo "AWS_SECRET_ACCESS_KEY=$GARAGE_SECRET"
  echo "AWS_REGION=garage"
  echo "AWS_DEFAULT_REGION=garage"
  echo "AWS_ENDPOINT_URL=http://127.0.0.1:$GARAGE_S3_PORT"
  echo "AWS_ENDPOINT=http://127.0.0.1:$GARAGE_S3_PORT"
  echo "AWS_ALLOW_HTTP=true"
  echo "AWS_VIRTUAL_HOSTED_STYLE_REQUEST=false"
}
