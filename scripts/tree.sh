#!/usr/bin/env bash
# work/qemu := base + the series in patches/.
# With FORCE=1 a tree holding unexported commits or changes is reset anyway.
. "$(dirname "$0")/lib.sh"

"$ROOT/scripts/base.sh"
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

# Refuse to throw away work that patches/ does not hold.
if [ "${FORCE:-0}" != 1 ] && git rev-parse -q --verify HEAD >/dev/null; then
  if [ -n "$(git status --porcelain --untracked-files=normal)" ]; then
    die "work/qemu has uncommitted changes; commit and 'make export' them, or FORCE=1"
  fi
  exported=$(cat "${series[@]}" /dev/null | git patch-id --stable | awk '{print $1}' | sort -u)
  for c in $(git rev-list base..HEAD); do
    id=$(git show "$c" | git patch-id --stable | awk '{print $1}')
    if [ -n "$id" ] && ! grep -qx "$id" <<<"$exported"; then
      die "work/qemu commit $(git log -1 --format='%h %s' "$c") is not in patches/; 'make export' it first, or FORCE=1"
    fi
  done
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
