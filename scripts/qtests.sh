#!/usr/bin/env bash
# Run the qtests of tests/qtests.list against a build directory.
# usage: qtests.sh BUILD_DIR OUT_DIR
# Logs go to OUT_DIR; the last line of stdout is "PASSED FAILED SKIPPED".
. "$(dirname "$0")/lib.sh"

build=$1 out=$2
mkdir -p "$out"
mapfile -t runs < <(grep -vE '^\s*(#|$)' "$ROOT/tests/qtests.list")
bins=$(printf '%s\n' "${runs[@]}" | awk '{for (i = 1; $i ~ /=/; i++); print "tests/qtest/" $i}' | sort -u)
ninja -C "$build" $bins >"$out/qtest-build.log" 2>&1 ||
  { tail -n 30 "$out/qtest-build.log" >&2; echo "building the qtests failed" >&2; echo "0 1 0"; exit 0; }

P=0 F=0 S=0 i=0
for r in "${runs[@]}"; do
  # Leading VAR=value words set the environment of the run; @BASE@ is the
  # build of the unpatched base (scripts/build-base.sh).
  read -r -a words <<<"${r//@BASE@/$WORK/qemu-base/build}"
  envs=()
  while [[ ${words[0]} == *=* ]]; do envs+=("${words[0]}"); words=("${words[@]:1}"); done
  bin=${words[0]} extra=("${words[@]:1}") rest="${envs[*]} ${extra[*]}"
  i=$((i + 1))
  lg="$out/qtest-$i-$bin.log"
  # --prefix=P: every test whose path starts with P (glib's -p does not
  # descend into nested suites).
  args=(--tap -k) prefixes=()
  for a in "${extra[@]}"; do
    if [[ $a == --prefix=* ]]; then prefixes+=("${a#--prefix=}"); else args+=("$a"); fi
  done
  unmatched=()
  if [ ${#prefixes[@]} -gt 0 ]; then
    listing=$(cd "$build" && env QTEST_QEMU_BINARY=./qemu-system-x86_64 \
      QTEST_QEMU_STORAGE_DAEMON_BINARY=./storage-daemon/qemu-storage-daemon \
      "tests/qtest/$bin" "${args[@]:2}" -l 2>/dev/null)
  fi
  for pfx in "${prefixes[@]}"; do
    n=${#args[@]}
    while read -r tp; do args+=(-p "$tp"); done < <(grep "^$pfx" <<<"$listing")
    [ ${#args[@]} -gt "$n" ] || unmatched+=("$pfx")
  done
  if [ ${#unmatched[@]} -gt 0 ]; then
    echo "FAIL $bin: no test matches ${unmatched[*]}" >&2
    F=$((F + 1))
    continue
  fi
  rc=0
  ( cd "$build" &&
    QTEST_QEMU_BINARY=./qemu-system-x86_64 \
    QTEST_QEMU_IMG=./qemu-img \
    QTEST_QEMU_STORAGE_DAEMON_BINARY=./storage-daemon/qemu-storage-daemon \
    PYTHON="$build/pyvenv/bin/python3" \
    MALLOC_PERTURB_=$((RANDOM % 255 + 1)) \
    env "${envs[@]}" timeout 900 "tests/qtest/$bin" "${args[@]}" ) >"$lg" 2>&1 || rc=$?
  ok=$(grep -cE '^ok [0-9]+' "$lg" || true)
  sk=$(grep -cE '^ok [0-9]+.*# SKIP' "$lg" || true)
  bad=$(grep -cE '^not ok [0-9]+' "$lg" || true)
  if [ $((ok + bad)) -eq 0 ] || { [ $rc -ne 0 ] && [ "$bad" -eq 0 ]; }; then
    bad=$((bad + 1))   # a crash or a run of nothing is a failure too
    echo "FAIL $bin ${rest:-} (exit $rc, $ok ok): see $lg" >&2
    tail -n 15 "$lg" | sed 's/^/    /' >&2
  fi
  grep -E '^not ok' "$lg" | sed "s|^|    $bin: |" >&2 || true
  echo "  $bin ${rest:-}: $((ok - sk)) passed, $bad failed, $sk skipped" >&2
  P=$((P + ok - sk)) F=$((F + bad)) S=$((S + sk))
done
echo "$P $F $S"
