#!/usr/bin/env bash
# Full check of the crate, as CI runs it (.ci/run):
#   1. install the test dependencies (redis-server; prometheus for the metrics tests and its
#      promtool; Redis 5.0, 6.2, 7.4 and Valkey 9.1 for the cross-version tests; garage)
#                                                               scripts/install-deps.sh
#   2. cargo fmt --check
#   3. cargo clippy --release --all-targets -D warnings (the profile of the tests: one build)
#   4. the deployment files: alert rules and their tests, dashboard, manifests, systemd units
#                                                              scripts/check-deploy.sh
#   5. cargo test --release (unit tests, and the integration tests: one binary, tests/it)
#   6. the archive and files tests again, with Valkey 9.1 as the master
#   7. cargo bench --no-run (benchmarks compile)
# Works non-interactively (CI=true, no stdin).
#
# Environment:
#   PITR_TEST_THREADS   parallel tests per test binary (default 2: the
#                       integration tests start servers and move hundreds of MB)
#   SKIP_INSTALL=1      skip step 1
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
exec </dev/null

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
if [ "${CI:-}" = "true" ]; then
  export CARGO_INCREMENTAL=0
fi
threads="${PITR_TEST_THREADS:-2}"
total_start=$SECONDS

banner "toolchain"
cargo --version
rustc --version
log "repo: $REPO_ROOT; nproc: $(nproc 2>/dev/null || echo '?'); CI=${CI:-}"

if [ "${SKIP_INSTALL:-0}" != "1" ]; then
  step "install test dependencies" bash scripts/install-deps.sh
fi
log "redis-server: $(command -v redis-server || echo MISSING)"
log "garage: $(command -v garage || echo MISSING)"
log "other servers: $(ls "${PITR_SERVERS_DIR:-$HOME/.cache/redis-pitr/servers}/bin" 2>/dev/null | tr '\n' ' ' || echo MISSING)"

fmt_args=(--check)
if [ ! -t 1 ]; then
  fmt_args+=(--color never)
fi
step "cargo fmt --check" cargo fmt --all -- "${fmt_args[@]}"
step "cargo clippy" cargo clippy --release --all-targets -- -D warnings
step "deploy files" bash scripts/check-deploy.sh
# --release for everything: the integration tests push a lot of data, and the
# crate is then compiled once for the tests and the benches.
step "cargo test --release" cargo test --release -- --test-threads="$threads"
# The archiver's tests (PSYNC, restarts, backlog overrun, WAIT) and the files restores once
# more with Valkey as the master (tests/fidelity.rs covers the other versions).
valkey="${PITR_SERVERS_DIR:-$HOME/.cache/redis-pitr/servers}/bin/valkey-server-9.1"
step "cargo test against Valkey 9.1" env REDIS_SERVER_BIN="$valkey" \
  cargo test --release --test it -- --test-threads="$threads" archive_redis:: restore_files::
step "cargo bench --no-run" cargo bench --no-run

banner "all checks passed in $((SECONDS - total_start)) s"
