#!/usr/bin/env bash
# The main job, end to end, on a scratch redis-server:
#   1. start redis-server on a free loopback port in a temporary directory,
#   2. fill it with some data, start `pitr archive` on it,
#   3. keep writing (some writes wait for the archive with WAIT 1),
#   4. show `pitr ls` and `pitr verify`,
#   5. restore to a chosen moment (before a mistaken FLUSHALL) as files, start a stock
#      redis-server on them, and show that the data is back; then stop everything.
# Installs redis-server (apt) when missing and builds pitr (cargo, release).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

have redis-server || bash scripts/install-deps.sh redis
banner "building pitr"
cargo build --release --quiet
pitr="$REPO_ROOT/target/release/pitr"

work="$(mktemp -d "${TMPDIR:-/tmp}/pitr-demo.XXXXXX")"
port=$((20000 + RANDOM % 10000))
redis_pid=""
pitr_pid=""
cleanup() {
  [ -n "$pitr_pid" ] && kill "$pitr_pid" 2>/dev/null && wait "$pitr_pid" 2>/dev/null || true
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

banner "scratch redis-server on 127.0.0.1:$port"
redis-server --port "$port" --bind 127.0.0.1 --dir "$work" --save '' --appendonly no \
  --enable-debug-command local --repl-diskless-sync-delay 0 --logfile "$work/redis.log" &
redis_pid=$!
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$port" debug populate 100000 user: 64 >/dev/null
echo "loaded $(redis-cli -p "$port" dbsize) keys"

banner "pitr archive --source redis://127.0.0.1:$port --store $work/archive"
"$pitr" archive --source "redis://127.0.0.1:$port" --store "$work/archive" \
  2>"$work/pitr.log" &
pitr_pid=$!
for _ in $(seq 100); do
  redis-cli -p "$port" info replication | grep -q 'state=online' && break
  sleep 0.1
done
grep -E "full sync|snapshot durable" "$work/pitr.log" | sed 's/^/  log: /'

banner "writing while archiving"
for i in $(seq 1 20); do
  printf 'SET order:%s %s\nINCR orders\nLPUSH recent order:%s\n' "$i" "$RANDOM" "$i"
done | redis-cli -p "$port" >/dev/null
# WAIT 1 returns once the archiver has made the writes durable in the store.
printf 'SET important yes\nWAIT 1 2000\n' | redis-cli -p "$port" | tail -1 |
  sed 's/^/  WAIT 1 2000 -> /'
sleep 0.2
moment="$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)"
echo "the moment to come back to: $moment ($(redis-cli -p "$port" dbsize) keys)"
sleep 0.2
echo "oops: FLUSHALL"
printf 'FLUSHALL\nWAIT 1 2000\n' | redis-cli -p "$port" >/dev/null
echo "keys now: $(redis-cli -p "$port" dbsize)"
sleep 1

banner "pitr ls --store $work/archive"
"$pitr" ls --store "$work/archive"

banner "stopping the archiver (SIGTERM: flush, ack, exit 0)"
kill -TERM "$pitr_pid"
wait "$pitr_pid"
pitr_pid=""
echo "exit code 0"

banner "pitr verify --store $work/archive"
"$pitr" verify --store "$work/archive"

banner "pitr restore --store $work/archive --to $moment --output-dir $work/restored"
"$pitr" restore --store "$work/archive" --to "$moment" --output-dir "$work/restored" |
  tee "$work/restore.txt"
rport=$((port + 1))
cmdline="$(grep -E '^ +redis-server ' "$work/restore.txt" | sed 's/^ *//')"
# shellcheck disable=SC2086
$cmdline --port "$rport" --bind 127.0.0.1 --save '' --logfile "$work/restored.log" &
restored_pid=$!
for _ in $(seq 100); do
  [ "$(redis-cli -p "$rport" info persistence 2>/dev/null | grep -c 'loading:0')" = 1 ] && break
  sleep 0.1
done
echo "restored server on port $rport: $(redis-cli -p "$rport" dbsize) keys," \
  "important=$(redis-cli -p "$rport" get important), orders=$(redis-cli -p "$rport" get orders)"
kill "$restored_pid"
wait "$restored_pid" 2>/dev/null || true
