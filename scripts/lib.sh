# Shared settings for the harness scripts.  Sourced, never run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${WORK:-$ROOT/work}
QEMU_TREE=${QEMU_TREE:-$WORK/qemu}
# The build directory (scripts/check-asan.sh builds the tree a second time)
BUILD=${BUILD:-$QEMU_TREE/build}
PATCHES=$ROOT/patches

# The pinned base: Debian's source package of QEMU 10.2.2.
BASE_PKG=qemu
BASE_DEBVER=1:10.2.2+ds-1
BASE_ORIG=qemu_10.2.2+ds.orig.tar.xz
BASE_ORIG_SHA256=be05230fe47a6937cd29f28f562932c8125f9c93c2a82c625198f7a4aa601dfb
BASE_TOPDIR=qemu-10.2.2

# Directory holding the three files of the source package, used when the
# package index no longer offers the pinned version (CI: ../shared/deps).
# Default: the project's shared/ beside the checkout, where there is one.
if [ -z "${QEMU_BASE_DEPS:-}" ] && [ -d "$ROOT/../shared/deps" ]; then
  QEMU_BASE_DEPS=$(cd "$ROOT/../shared/deps" && pwd)
fi
QEMU_BASE_DEPS=${QEMU_BASE_DEPS:-}

# The project identity: commits of the series are signed off with it.
PROJECT_NAME=$(git config --global user.name 2>/dev/null || true)
PROJECT_EMAIL=$(git config --global user.email 2>/dev/null || true)
PROJECT_NAME=${PROJECT_NAME:-Seed 43829073 maintainers}
PROJECT_EMAIL=${PROJECT_EMAIL:-maintainers@users.noreply.r-seed-43829073.example}

# Debian's python, which sees the meson and pytest that deps.sh installs
# (a pyenv python earlier in PATH would not).
PY=/usr/bin/python3

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Run an apt command with its output in work/apt.log; when it fails, show
# the end of that output (apt's own error) and return its status.
apt_logged() {
  local lg=$WORK/apt.log rc=0
  mkdir -p "$WORK"
  echo "+ $*" >>"$lg"
  "$@" >>"$lg" 2>&1 || rc=$?
  if [ $rc -ne 0 ]; then
    printf 'apt: %s failed (exit %d); the end of work/apt.log:\n' "$*" "$rc" >&2
    tail -n 15 "$lg" | sed 's/^/    /' >&2
  fi
  return $rc
}
