#!/usr/bin/env bash
# make check: from nothing to a tested series.  deps -> tree -> build
# (the series, and the unpatched base for compatibility tests) -> guest,
# then: checkpatch on every patch, the qtests of tests/qtests.list, and
# tests/e2e.  Ends with one line "N passed, N failed, N skipped" that
# counts all of it; exits non-zero on any failure.
. "$(dirname "$0")/lib.sh"

OUT=$WORK/check
rm -rf "$OUT"; mkdir -p "$OUT"
pass=0; fail=0; skip=0; xfail=0; failed=()
t0=$(date +%s)
stage() { log "$1 ($(( $(date +%s) - t0 ))s)"; }

record() { # record NAME RESULT(pass|fail|skip)
  case $2 in
    pass) pass=$((pass + 1)) ;;
    skip) skip=$((skip + 1)) ;;
    *) fail=$((fail + 1)); failed+=("$1") ;;
  esac
}

summary() {
  echo
  [ ${#failed[@]} -eq 0 ] || { echo "failed:"; printf '  %s\n' "${failed[@]}"; }
  echo "total time: $(( $(date +%s) - t0 ))s"
  [ "$xfail" -eq 0 ] || echo "$xfail expected failures (known bugs, listed above), counted apart"
  echo "$pass passed, $fail failed, $skip skipped"
}

if [ "$(id -u)" = 0 ]; then
  stage "deps"; "$ROOT/scripts/deps.sh"
fi
stage "tree"; "$ROOT/scripts/tree.sh"
stage "build"; "$ROOT/scripts/build.sh"
stage "build of the unpatched base"; "$ROOT/scripts/build-base.sh"
stage "guest"; "$ROOT/scripts/guest.sh"

# --- checkpatch: every patch of the series, 0 errors.
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

# --- qtests.
stage "qtests"
read -r qp qf qs < <("$ROOT/scripts/qtests.sh" "$BUILD" "$OUT" | tail -n 1)
pass=$((pass + qp)); fail=$((fail + qf)); skip=$((skip + qs))
[ "$qf" -eq 0 ] || failed+=("qtests: $qf failed (see work/check/qtest-*.log)")

# --- end-to-end tests.
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

summary
[ "$fail" -eq 0 ]
