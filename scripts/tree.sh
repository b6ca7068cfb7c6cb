#!/usr/bin/env bash
# work/qemu := base + the series in patches/ (`make tree`).
# A tree holding work that patches/ does not (uncommitted changes, commits
# not exported) is refused, unless FORCE=1 (then reset anyway).
# --keep-work (`make build`, `make check`): create the tree if there is
# none and bring an unchanged one up to date with patches/, but leave a
# tree holding such work as it is and say so (exit 0), so that an edit is
# built and tested before it is committed and exported.
. "$(dirname "$0")/lib.sh"

keep_work=0
case ${1:-} in
  --keep-work) keep_work=1 ;;
  "") ;;
  *) die "usage: tree.sh [--keep-work]" ;;
esac

# The base tree (and its download) is needed only to make work/qemu.
if [ ! -e "$QEMU_TREE/.git" ] || ! git -C "$QEMU_TREE" rev-parse -q --verify base >/dev/null; then
  "$ROOT/scripts/base.sh"
fi
cd "$QEMU_TREE"

git config user.name "$PROJECT_NAME"
git config user.email "$PROJECT_EMAIL"
git config core.abbrev 12
# Build products, and build.sh's stand-ins for files the Debian tarball
# lacks, never belong to the series.
printf '%s\n' /build/ /pyvenv/ /GNUmakefile '/pc-bios/edk2-*.fd.bz2' >.git/info/exclude

series=()
for p in "$PATCHES"/*.patch; do
  [ -e "$p" ] || continue
  case "$(basename "$p")" in 0000-cover-letter.patch) continue ;; esac
  series+=("$p")
done

# Already base + exactly this series, nothing else?  Leave it (and the
# mtimes the incremental build relies on) alone.
if git rev-parse -q --verify HEAD >/dev/null &&
   [ -z "$(git status --porcelain --untracked-files=normal)" ]; then
  have=$(for c in $(git rev-list --reverse base..HEAD); do git show "$c" | git patch-id --stable | awk '{print $1}'; done)
  want=$(for p in "${series[@]}"; do git patch-id --stable <"$p" | awk '{print $1}'; done)
  if [ "$have" = "$want" ]; then
    log "work/qemu: base + ${#series[@]} patches (up to date)"
    exit 0
  fi
fi

# Refuse to throw away work that patches/ does not hold (--keep-work:
# keep it, and build what is there).
unexported() {
  if [ -n "$(git status --porcelain --untracked-files=normal)" ]; then
    echo "uncommitted changes"
    return
  fi
  local exported c id
  exported=$(cat "${series[@]}" /dev/null | git patch-id --stable | awk '{print $1}' | sort -u)
  for c in $(git rev-list base..HEAD); do
    id=$(git show "$c" | git patch-id --stable | awk '{print $1}')
    if [ -n "$id" ] && ! grep -qx "$id" <<<"$exported"; then
      echo "commit $(git log -1 --format='%h %s' "$c"), which patches/ does not have"
      return
    fi
  done
}
if [ "${FORCE:-0}" != 1 ] && git rev-parse -q --verify HEAD >/dev/null; then
  work=$(unexported)
  if [ -n "$work" ] && [ "$keep_work" = 1 ]; then
    log "work/qemu holds $work: left as it is, not base + patches/ ('make export' to make it so)"
    exit 0
  fi
  [ -z "$work" ] || die "work/qemu holds $work: commit and 'make export' it first, or FORCE=1"
fi

git am --abort >/dev/null 2>&1 || true
git checkout -q -B series base
git reset -q --hard base
for p in "${series[@]}"; do
  if ! git am -q --keep-cr "$p" >/dev/null 2>/tmp/migrate-fds-am.$$; then
    cat /tmp/migrate-fds-am.$$ >&2; rm -f /tmp/migrate-fds-am.$$
    git am --abort >/dev/null 2>&1 || true
    die "patch does not apply: $(basename "$p")"
  fi
done
rm -f /tmp/migrate-fds-am.$$
log "work/qemu: base + ${#series[@]} patches"
