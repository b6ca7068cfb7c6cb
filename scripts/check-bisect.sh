#!/usr/bin/env bash
# Build every prefix of the series and run the quick tests on each
# (checkpatch of the newest patch, the qtests of tests/qtests.list).
# Uses a separate worktree (work/bisect) so work/qemu stays as it is;
# successive prefixes rebuild incrementally.  Names the first patch that
# breaks.  Not part of CI.
# On a prefix, the list's qtests that the series adds later (a binary, or
# a --prefix of migration-test) do not exist yet: that prefix skips them,
# saying so (qtests.sh with QTESTS_PREFIX=1).  The whole series must have
# every one of them, as in `make check`.
# FROM=N [TO=M]: only patches N..M (1-based), e.g. to go on where an
# earlier run stopped; prefix N-1 is then taken as good.
. "$(dirname "$0")/lib.sh"

"$ROOT/scripts/tree.sh"
"$ROOT/scripts/build-base.sh"
BT=$WORK/bisect
git -C "$QEMU_TREE" worktree prune
[ -e "$BT/.git" ] || git -C "$QEMU_TREE" worktree add -q --detach "$BT" base

mapfile -t commits < <(git -C "$QEMU_TREE" rev-list --reverse base..HEAD)
mapfile -t files < <(ls "$PATCHES"/*.patch 2>/dev/null | grep -v '/0000-cover-letter.patch$' || true)
[ ${#commits[@]} -eq ${#files[@]} ] || die "work/qemu and patches/ disagree; run 'make tree'"
[ ${#commits[@]} -gt 0 ] || { log "the series is empty: nothing to bisect"; exit 0; }

first=${FROM:-1} last=${TO:-${#commits[@]}}
[[ $first =~ ^[0-9]+$ && $last =~ ^[0-9]+$ && $first -ge 1 && $first -le $last &&
   $last -le ${#commits[@]} ]] || die "FROM=$first TO=$last: not within 1..${#commits[@]}"

for k in "${!commits[@]}"; do
  [ $((k + 1)) -ge "$first" ] && [ $((k + 1)) -le "$last" ] || continue
  c=${commits[$k]} p=${files[$k]} name=$(basename "${files[$k]}")
  log "[$((k + 1))/${#commits[@]}] $name"
  t0=$SECONDS
  git -C "$BT" checkout -q --detach "$c"
  out=$WORK/check-bisect/$((k + 1))
  rm -rf "$out"; mkdir -p "$out"
  (cd "$BT" && ./scripts/checkpatch.pl --no-color --patch "$p") >"$out/checkpatch.log" 2>&1 ||
    die "first broken patch: $name (checkpatch, see $out/checkpatch.log)"
  WORK=$out QEMU_TREE=$BT "$ROOT/scripts/build.sh" ||
    die "first broken patch: $name (build, see $out/build.log)"
  partial=1
  [ $((k + 1)) -lt ${#commits[@]} ] || partial=0
  qp='' qf='' qs=''
  read -r qp qf qs < <(QTESTS_PREFIX=$partial "$ROOT/scripts/qtests.sh" "$BT/build" "$out" | tail -n 1) || true
  [ "${qf:-1}" = 0 ] || die "first broken patch: $name (${qf:-the} qtests failed, see $out)"
  log "  ok: $qp passed, $qs skipped ($((SECONDS - t0)) s)"
done
if [ "$first" = 1 ] && [ "$last" = ${#commits[@]} ]; then
  log "every prefix of the series builds and passes the quick tests"
else
  log "patches $first..$last of ${#commits[@]} build and pass the quick tests"
fi
