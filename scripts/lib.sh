# shellcheck shell=bash
# Shared shell helpers for scripts/*.sh. Source it; it defines functions only
# (plus REPO_ROOT and the ~/.cargo/bin PATH entry).

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT

# Tools installed by `cargo install` (garage) live here.
case ":${PATH}:" in
  *":${CARGO_HOME:-$HOME/.cargo}/bin:"*) ;;
  *) export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:${PATH}" ;;
esac

# Prints a banner for one step.
banner() {
  printf '\n==================== %s ====================\n' "$*"
}

# Informational message on stderr.
log() {
  printf '[%s] %s\n' "$(basename "$0")" "$*" >&2
}

# Prints an error and exits non-zero.
die() {
  printf '[%s] ERROR: %s\n' "$(basename "$0")" "$*" >&2
  exit 1
}

# Whether a command exists.
have() {
  command -v "$1" >/dev/null 2>&1
}

# Runs a command as root: directly when root, else through sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif have sudo; then
    sudo "$@"
  else
    die "need root for: $* (not root and no sudo)"
  fi
}

# Runs a step with a banner and its duration; exits on failure.
step() {
  local name="$1"
  shift
  banner "$name"
  local start=$SECONDS
  if "$@"; then
    log "step '$name' OK ($((SECONDS - start)) s)"
  else
    local rc=$?
    log "step '$name' FAILED with exit code $rc ($((SECONDS - start)) s)"
    exit "$rc"
  fi
}

# select_sections "A B C" ARGS...: the sections a script runs, in SECTIONS: ARGS, or all of
# "A B C" when ARGS is empty or "all"; an unknown section is an error.
select_sections() {
  local known="$1" s
  shift
  SECTIONS=("$@")
  if [ "${#SECTIONS[@]}" -eq 0 ] || [ "${SECTIONS[0]}" = "all" ]; then
    read -r -a SECTIONS <<<"$known"
  fi
  for s in "${SECTIONS[@]}"; do
    case " $known " in
      *" $s "*) ;;
      *) die "unknown section '$s' (use ${known// /, } or all)" ;;
    esac
  done
}
