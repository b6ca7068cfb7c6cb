#!/usr/bin/env bash
# work/qemu base..HEAD -> patches/, reproducibly: no commit ids, no tool
# version, full blob ids.  Exporting an unchanged queue twice changes no byte.
# The cover letter keeps the subject and text it already has in patches/.
. "$(dirname "$0")/lib.sh"

cd "$QEMU_TREE"
git rev-parse -q --verify base >/dev/null || die "no work/qemu base tree: run 'make tree'"
[ -z "$(git status --porcelain --untracked-files=no)" ] || \
  die "work/qemu has uncommitted changes: commit them into the series first"

n=$(git rev-list --count base..HEAD)
cover=$PATCHES/0000-cover-letter.patch
subject="migrate-fds: hand backend fds over to a new QEMU on the same host"
blurb=
if [ -f "$cover" ]; then
  subject=$(sed -n 's/^Subject: \[PATCH[^]]*\] //p' "$cover" | head -n1)
  # The text between the headers and the shortlog ("Name (N):").
  blurb=$(awk 'NR>1 && !hdr_done && /^$/ {hdr_done=1; next}
               hdr_done && /^[^ ].* \([0-9]+\):$/ {exit}
               hdr_done {print}' "$cover")
fi
[ -n "$blurb" ] || blurb="(describe the series here)"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
if [ "$n" -gt 0 ]; then
  git -c core.abbrev=12 -c diff.noprefix=false -c diff.mnemonicPrefix=false \
      -c diff.renames=true -c format.signature= \
    format-patch -q --zero-commit --full-index --no-signature --no-numbered-files \
      --cover-letter --base=base --no-attach \
      -o "$out" base..HEAD >/dev/null
  # Fill the cover letter template.
  S="$subject" B="$blurb" $PY - "$out/0000-cover-letter.patch" <<'PYEOF'
import os, sys
p = sys.argv[1]
t = open(p).read()
t = t.replace("*** SUBJECT HERE ***", os.environ["S"], 1)
t = t.replace("*** BLURB HERE ***", os.environ["B"].strip("\n"), 1)
open(p, "w").write(t)
PYEOF
  # format-patch dates the cover letter "now": take the last commit's date.
  d=$(git log -1 --format=%aD HEAD)
  sed -i "0,/^Date: /s/^Date: .*/Date: $d/" "$out/0000-cover-letter.patch"
fi

mkdir -p "$PATCHES"
# Replace only what changed, so mtimes of unchanged patches stay.
for f in "$PATCHES"/*.patch; do
  [ -e "$f" ] || continue
  [ -e "$out/$(basename "$f")" ] || rm -f "$f"
done
for f in "$out"/*.patch; do
  [ -e "$f" ] || continue
  cmp -s "$f" "$PATCHES/$(basename "$f")" || cp "$f" "$PATCHES/"
done
log "exported $n patches to patches/"
