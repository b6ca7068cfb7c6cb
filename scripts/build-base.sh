#!/usr/bin/env bash
# Build the unpatched base (QEMU 10.2.2 as released) into
# work/qemu-base/build: only the system emulator, for the tests that
# migrate between it and the patched QEMU.  Incremental when run again.
. "$(dirname "$0")/lib.sh"

BASE_TREE=$WORK/qemu-base
"$ROOT/scripts/base.sh"
git -C "$QEMU_TREE" worktree prune
if [ ! -e "$BASE_TREE/.git" ]; then
  git -C "$QEMU_TREE" worktree add -q --detach "$BASE_TREE" base
fi
[ "$(git -C "$BASE_TREE" rev-parse HEAD)" = "$(git -C "$QEMU_TREE" rev-parse base)" ] ||
  git -C "$BASE_TREE" checkout -q --detach base
mkdir -p "$WORK/base-logs"
WORK=$WORK/base-logs QEMU_TREE=$BASE_TREE NINJA_TARGETS=qemu-system-x86_64 \
  "$ROOT/scripts/build.sh"
