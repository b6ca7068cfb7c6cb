#!/usr/bin/env bash
# Fetch the pinned base (Debian's qemu 1:10.2.2+ds-1), verify it, and make
# work/qemu a git repository whose single commit, tagged "base", is the
# unpacked upstream tarball.  Identity and dates are fixed, so the same
# tarball always gives the same commit id.
. "$(dirname "$0")/lib.sh"

DL=$WORK/download
mkdir -p "$DL"

verify() {
  echo "$BASE_ORIG_SHA256  $1" | sha256sum -c --status -
}

fetch() {
  local f=$DL/$BASE_ORIG
  if [ -f "$f" ] && verify "$f"; then return; fi
  rm -f "$f"
  if apt-cache showsrc "$BASE_PKG" 2>/dev/null | grep -qx "Version: $BASE_DEBVER"; then
    log "apt-get source $BASE_PKG=$BASE_DEBVER"
    (cd "$DL" && apt_logged apt-get source --download-only -qq "$BASE_PKG=$BASE_DEBVER") ||
      log "apt-get source failed (see above)${QEMU_BASE_DEPS:+; trying $QEMU_BASE_DEPS}"
  fi
  if [ ! -f "$f" ] && [ -n "$QEMU_BASE_DEPS" ]; then
    log "taking the source package from $QEMU_BASE_DEPS"
    [ -f "$QEMU_BASE_DEPS/$BASE_ORIG" ] || die "$QEMU_BASE_DEPS has no $BASE_ORIG"
    cp "$QEMU_BASE_DEPS"/qemu_10.2.2+ds* "$DL"/
  fi
  [ -f "$f" ] || die "cannot get $BASE_ORIG: the package index does not offer $BASE_PKG $BASE_DEBVER (run 'make deps'), and QEMU_BASE_DEPS does not name a directory holding it"
  verify "$f" || die "$BASE_ORIG: sha256 mismatch (want $BASE_ORIG_SHA256)"
}

fetch
log "verified $BASE_ORIG"

# Already there and right?  Keep it (and its build directory).
if [ -d "$QEMU_TREE/.git" ] && git -C "$QEMU_TREE" rev-parse -q --verify base >/dev/null; then
  exit 0
fi
[ -e "$QEMU_TREE" ] && die "$QEMU_TREE exists but is not a base tree; remove it"

tmp=$WORK/qemu.tmp
rm -rf "$tmp"
mkdir -p "$tmp"
log "unpacking"
tar -xJf "$DL/$BASE_ORIG" -C "$tmp" --strip-components=1
# The unpacked tree is the commit; the build and the venv stay out of it.
(
  cd "$tmp"
  export GIT_AUTHOR_NAME="QEMU 10.2.2 (Debian qemu $BASE_DEBVER)" \
         GIT_AUTHOR_EMAIL="base@migrate-fds.invalid" \
         GIT_AUTHOR_DATE="2026-01-01T00:00:00Z"
  export GIT_COMMITTER_NAME="$GIT_AUTHOR_NAME" \
         GIT_COMMITTER_EMAIL="$GIT_AUTHOR_EMAIL" \
         GIT_COMMITTER_DATE="$GIT_AUTHOR_DATE"
  git init -q -b master .
  git config core.autocrlf false
  git add -A -f .
  git commit -q --no-verify -m "QEMU 10.2.2 from $BASE_ORIG" -m "sha256: $BASE_ORIG_SHA256"
  git tag base
)
mv "$tmp" "$QEMU_TREE"
log "base commit $(git -C "$QEMU_TREE" rev-parse base)"
