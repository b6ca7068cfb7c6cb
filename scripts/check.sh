#!/usr/bin/env bash
# make check: from nothing to a tested series.  deps -> tree -> build
# (the series, and the unpatched base for compatibility tests) -> guest,
# then: checkpatch on every patch, the qtests of tests/qtests.list, and
# tests/e2e.  Ends with one line "N passed, N failed, N skipped" that
# counts all of it, whatever failed on the way (a set-up stage that fails
# counts as one failure, and what needs it does not run: it is listed);
# exits non-zero on any failure.  Expected failures (known bugs of QEMU
# 10.2.2 itself, pytest xfail) are listed and counted apart.
# A work/qemu holding work not in patches/ is built and tested as it is
# (tree.sh --keep-work), and the summary says so.
. "$(dirname "$0")/lib.sh"

OUT=$WORK/check
rm -rf "$OUT"; mkdir -p "$OUT"
pass=0; fail=0; skip=0; xfail=0; failed=(); notrun=(); notes=()
t0=$(date +%s)
stage() { log "$1 ($(( $(date +%s) - t0 ))s)"; }

record() { # record NAME RESULT(pass|fail|skip)
  case $2 in
    pass) pass=$((pass + 1)) ;;
    skip) skip=$((skip + 1)) ;;
    *) fail=$((fail + 1)); failed+=("$1") ;;
  esac
}

finished=0
summary() {
  echo
  [ ${#failed[@]} -eq 0 ] || { echo "failed:"; printf '  %s\n' "${failed[@]}"; }
  [ ${#notrun[@]} -eq 0 ] || { echo "not run:"; printf '  %s\n' "${notrun[@]}"; }
  [ ${#notes[@]} -eq 0 ] || printf 'note: %s\n' "${notes[@]}"
  echo "logs: $OUT"
  echo "total time: $(( $(date +%s) - t0 ))s"
  [ "$xfail" -eq 0 ] || echo "$xfail expected failures (known bugs, listed above), counted apart"
  echo "$pass passed, $fail failed, $skip skipped"
}
# Whatever ends the script (a bug here, a signal), the summary comes.
trap 'rc=$?; if [ $finished = 0 ]; then record "check.sh stopped (exit $rc)" fail; summary; fi' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A set-up stage: its output also in work/check/NAME.log; a failure is
# recorded and returned.
setup() { # setup NAME SCRIPT [ARGS]
  local name=$1 rc=0
  shift
  stage "$name"
  "$@" 2>&1 | tee "$OUT/$name.log" >&2 || rc=$?
  [ $rc -eq 0 ] || record "$name (exit $rc, see work/check/$name.log)" fail
  return $rc
}

ok_tree=1 ok_build=1 ok_base=1 ok_guest=1
if [ "$(id -u)" = 0 ]; then
  setup deps "$ROOT/scripts/deps.sh" || ok_tree=0
fi
if [ $ok_tree = 1 ]; then
  setup tree "$ROOT/scripts/tree.sh" --keep-work || ok_tree=0
  if grep -q '^==> work/qemu holds' "$OUT/tree.log"; then
    notes+=("work/qemu is not base + patches/ (work/check/tree.log): built and tested as it is; checkpatch ran on patches/")
  fi
fi
if [ $ok_tree = 1 ]; then
  setup build "$ROOT/scripts/build.sh" || ok_build=0
else
  ok_build=0 ok_base=0
  notrun+=("build, build of the unpatched base, checkpatch: no tree")
fi
if [ $ok_tree = 1 ]; then
  setup build-base "$ROOT/scripts/build-base.sh" || ok_base=0
fi
setup guest "$ROOT/scripts/guest.sh" || ok_guest=0

# --- checkpatch: every patch of the series, 0 errors.
if [ $ok_tree = 1 ]; then
  stage "checkpatch"
  for p in "$PATCHES"/*.patch; do
    [ -e "$p" ] || continue
    name=$(basename "$p")
    [ "$name" = 0000-cover-letter.patch ] && continue
    if (cd "$QEMU_TREE" && ./scripts/checkpatch.pl --no-color --patch "$p") >"$OUT/checkpatch-$name.log" 2>&1; then
      record "checkpatch $name" pass
    else
      record "checkpatch $name" fail
      grep -E '^(ERROR|total)' "$OUT/checkpatch-$name.log" | sed 's/^/    /' >&2
    fi
  done
fi

# --- qtests (those against the unpatched base fail without its build).
if [ $ok_build = 1 ]; then
  stage "qtests"
  [ $ok_base = 1 ] || notes+=("no build of the unpatched base: the qtests that migrate to or from it fail")
  qp='' qf='' qs=''
  read -r qp qf qs < <("$ROOT/scripts/qtests.sh" "$BUILD" "$OUT" | tail -n 1) || true
  if [ -z "$qf" ]; then
    record "qtests: qtests.sh gave no result" fail
  else
    pass=$((pass + qp)); fail=$((fail + qf)); skip=$((skip + qs))
    [ "$qf" -eq 0 ] || failed+=("qtests: $qf failed (see work/check/qtest-*.log)")
  fi
else
  notrun+=("qtests: no build")
fi

# --- end-to-end tests.
if [ $ok_build = 0 ] || [ $ok_guest = 0 ]; then
  notrun+=("e2e: no build or no guest")
  finished=1
  summary
  exit 1
fi
stage "e2e"
junit=$OUT/e2e.xml
MFDS_BUILD=$BUILD "$PY" -m pytest -p no:cacheprovider -v --junitxml="$junit" "$ROOT/tests/e2e" \
  2>&1 | tee "$OUT/e2e.log" | grep -E '(PASSED|FAILED|SKIPPED|ERROR)' || true
if [ -f "$junit" ]; then
  read -r jp jf js jx < <("$PY" - "$junit" <<'PYEOF'
import sys, xml.etree.ElementTree as ET
p = f = s = x = 0
for case in ET.parse(sys.argv[1]).iter("testcase"):
    tags = {c.tag: c for c in case}
    if set(tags) & {"failure", "error"}:
        f += 1
    elif "skipped" in tags:
        # an expected failure (a known bug) is not a skip
        if tags["skipped"].get("type") == "pytest.xfail":
            x += 1
            print(f"known bug: {case.get('name')}: {tags['skipped'].get('message')}",
                  file=sys.stderr)
        else:
            s += 1
    else:
        p += 1
print(p, f, s, x)
PYEOF
)
  pass=$((pass + jp)); fail=$((fail + jf)); skip=$((skip + js)); xfail=$((xfail + jx))
  [ "$jf" -eq 0 ] || failed+=("e2e: $jf failed (see work/check/e2e.log)")
  [ $((jp + jf + js)) -gt 0 ] || record "e2e: ran no test" fail
else
  record "e2e: pytest produced no report (see work/check/e2e.log)" fail
fi

finished=1
summary
[ "$fail" -eq 0 ]
