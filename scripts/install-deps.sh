#!/usr/bin/env bash
# Installs what the integration tests need, on Debian/Ubuntu:
#   - redis-server and redis-cli (apt packages redis-server, redis-tools);
#   - Garage 2.x, the S3-compatible object store (cargo install garage).
# Idempotent: anything already installed is left alone, so a second run does
# nothing. Needs root for apt (uses sudo when not root).
#
# Environment:
#   GARAGE_VERSION   garage version to install from crates.io (default 2.5.0)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

GARAGE_VERSION="${GARAGE_VERSION:-2.5.0}"
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
export DEBIAN_FRONTEND=noninteractive

apt_updated=0
apt_install() {
  have apt-get || die "apt-get not found: install $* by hand (this script supports Debian/Ubuntu)"
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q || die "apt-get update failed"
    apt_updated=1
  fi
  log "apt-get install $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" \
    || die "apt-get install $* failed"
}

# Stops and disables the system redis-server service that the Debian package
# starts (it would hold port 6379; the tests run their own servers).
disable_system_redis() {
  if have systemctl && [ -d /run/systemd/system ]; then
    as_root systemctl disable --now redis-server.service >/dev/null 2>&1 || true
  fi
  if [ -x /etc/init.d/redis-server ] && have service; then
    if as_root service redis-server status >/dev/null 2>&1; then
      log "stopping the redis-server system service"
      as_root service redis-server stop >/dev/null 2>&1 || true
    fi
  fi
  if have update-rc.d && [ -x /etc/init.d/redis-server ]; then
    as_root update-rc.d redis-server disable >/dev/null 2>&1 || true
  fi
}

# policy-rc.d written by this script (removed on exit, also on failure).
POLICY_RC=/usr/sbin/policy-rc.d
own_policy=0
remove_own_policy() {
  if [ "$own_policy" -eq 1 ]; then
    as_root rm -f "$POLICY_RC" || true
    own_policy=0
  fi
}
trap remove_own_policy EXIT

install_redis() {
  if have redis-server && have redis-cli; then
    log "redis-server already installed: $(redis-server --version | head -n1)"
    return 0
  fi
  log "installing redis-server and redis-tools"
  # Keep the package's service from starting during the install (the
  # standard Debian policy-rc.d mechanism), unless a policy already exists.
  if [ ! -e "$POLICY_RC" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $POLICY_RC && chmod 755 $POLICY_RC"
    own_policy=1
  fi
  apt_install redis-server redis-tools
  remove_own_policy
  disable_system_redis
  have redis-server || die "redis-server still not on PATH after installing it"
  log "installed $(redis-server --version | head -n1)"
}

garage_path() {
  if have garage; then
    command -v garage
  elif [ -x "$CARGO_BIN/garage" ]; then
    echo "$CARGO_BIN/garage"
  else
    return 1
  fi
}

install_garage() {
  local g
  if g="$(garage_path)"; then
    # `garage --version` prints e.g. "garage cargo:2.5.0 [features: ...]" or "garage v2.1.0 ...".
    local v major
    v="$("$g" --version 2>/dev/null | head -n1 || true)"
    major="$(printf '%s\n' "$v" | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1 | cut -d. -f1 || true)"
    if [ "$major" = "2" ]; then
      log "garage already installed: $g ($v)"
      return 0
    fi
    log "found $g ($v), but the tests need Garage 2.x: installing $GARAGE_VERSION"
  fi
  have cargo || die "cargo not found: install Rust (rustup) first, then rerun"
  # garage builds bundled C code (sqlite, libsodium): it needs cc, make, pkg-config.
  local missing=()
  have cc || missing+=(build-essential)
  have make || missing+=(make)
  have pkg-config || missing+=(pkg-config)
  if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
  fi
  local target_dir="${TMPDIR:-/tmp}/garage-build-$GARAGE_VERSION"
  log "installing garage $GARAGE_VERSION with cargo install --locked:"
  log "this compiles ~500 crates and takes several minutes (about 12 on 2 cores)"
  local start=$SECONDS
  # A separate target dir: never the project's (CARGO_TARGET_DIR may point there).
  if ! cargo install garage --version "$GARAGE_VERSION" --locked --target-dir "$target_dir"; then
    die "cargo install garage failed (build directory kept in $target_dir for a retry)"
  fi
  rm -rf "$target_dir"
  g="$(garage_path)" || die "garage installed but not found in PATH or $CARGO_BIN"
  log "installed $("$g" --version | head -n1) in $((SECONDS - start)) s"
}

case "${1:-all}" in
  redis) install_redis ;;
  garage) install_garage ;;
  all)
    install_redis
    install_garage
    ;;
  *) die "usage: install-deps.sh [redis|garage|all]" ;;
esac
log "dependencies present: ${1:-all}"
