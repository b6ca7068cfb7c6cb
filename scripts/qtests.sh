#!/usr/bin/env bash
# Run the qtests of tests/qtests.list against a build directory.
# usage: qtests.sh BUILD_DIR OUT_DIR
# Logs go to OUT_DIR; the last line of stdout is "PASSED FAILED SKIPPED".
#
# Every binary the list names and every --prefix it gives must exist: a
# binary the build does not know, or a prefix that matches no test, is a
# failure.  With QTESTS_PREFIX=1 (check-bisect.sh, on a prefix of the
# series, before the patch that adds them) such a binary or prefix is
# skipped instead, and said so.  Which binaries exist at a prefix, meson
# says (the qtest targets of the build it generated); which tests a binary
# has, the binary (-l).
# QTESTS_LIST=FILE: another list.  QTESTS_BUILD=no: run the binaries the
# build has as they are, without building the qtests first.
. "$(dirname "$0")/lib.sh"

build=$1 out=$2
list=${QTESTS_LIST:-$ROOT/tests/qtests.list}
lenient=${QTESTS_PREFIX:-0}
mkdir -p "$out"
mapfile -t runs < <(grep -vE '^\s*(#|$)' "$list")

# The binary of a run: the first word that is not VAR=value.
binary() { awk '{for (i = 1; $i ~ /=/; i++); print $i}' <<<"$1"; }

# The qtest binaries this build defines: meson's targets in build.ninja,
# which ninja first regenerates if a meson.build changed (a prefix of the
# series checked out since the last build).
if [ "${QTESTS_BUILD:-yes}" != no ]; then
  ninja -C "$build" build.ninja >"$out/qtest-build.log" 2>&1 ||
    { tail -n 30 "$out/qtest-build.log" >&2; echo "meson failed" >&2; echo "0 1 0"; exit 0; }
fi
known=$(ninja -C "$build" -t targets all 2>/dev/null |
        sed -n -e 's|^tests/qtest/\([^:/]*\): .*|\1|p' \
               -e 's|^tests/\(unit/[^:/]*\): .*|\1|p' | sort -u)
# Where a binary is: "unit/NAME" is a unit test, any other name a qtest.
path_of() { if [[ $1 == unit/* ]]; then echo "tests/$1"; else echo "tests/qtest/$1"; fi; }
is_known() { grep -qxF "$1" <<<"$known"; }

P=0 F=0 S=0
missing() { # missing WHAT: a binary or prefix this build lacks
  if [ "$lenient" = 1 ]; then
    echo "SKIP $1 (not in the series up to this patch)" >&2
    S=$((S + 1))
  else
    echo "FAIL $1" >&2
    F=$((F + 1))
  fi
}

bins=()
for r in "${runs[@]}"; do
  b=$(binary "$r")
  is_known "$b" && bins+=("$(path_of "$b")")
done
mapfile -t bins < <(printf '%s\n' "${bins[@]}" | sort -u | grep . || true)
if [ "${QTESTS_BUILD:-yes}" != no ] && [ ${#bins[@]} -gt 0 ]; then
  ninja -C "$build" "${bins[@]}" >>"$out/qtest-build.log" 2>&1 ||
    { tail -n 30 "$out/qtest-build.log" >&2; echo "building the qtests failed" >&2; echo "0 1 0"; exit 0; }
fi

i=0
for r in "${runs[@]}"; do
  # Leading VAR=value words set the environment of the run; @BASE@ is the
  # build of the unpatched base (scripts/build-base.sh).
  read -r -a words <<<"${r//@BASE@/$WORK/qemu-base/build}"
  envs=()
  while [[ ${words[0]} == *=* ]]; do envs+=("${words[0]}"); words=("${words[@]:1}"); done
  bin=${words[0]} extra=("${words[@]:1}") rest="${envs[*]} ${extra[*]}"
  i=$((i + 1))
  lg="$out/qtest-$i-${bin//\//-}.log" path=$(path_of "$bin")
  if ! is_known "$bin" || [ ! -x "$build/$path" ]; then
    missing "$bin: no such qtest in $build"
    continue
  fi
  # --prefix=P: every test whose path starts with P (glib's -p does not
  # descend into nested suites).
  args=(--tap -k) prefixes=()
  for a in "${extra[@]}"; do
    if [[ $a == --prefix=* ]]; then prefixes+=("${a#--prefix=}"); else args+=("$a"); fi
  done
  if [ ${#prefixes[@]} -gt 0 ]; then
    rc=0
    listing=$(cd "$build" && env QTEST_QEMU_BINARY=./qemu-system-x86_64 \
      QTEST_QEMU_STORAGE_DAEMON_BINARY=./storage-daemon/qemu-storage-daemon \
      "${envs[@]}" "$path" "${args[@]:2}" -l 2>"$lg") || rc=$?
    if [ $rc -ne 0 ]; then
      echo "FAIL $bin ${rest:-}: listing its tests failed (exit $rc): see $lg" >&2
      F=$((F + 1))
      continue
    fi
    matched=0
    for pfx in "${prefixes[@]}"; do
      n=${#args[@]}
      while read -r tp; do args+=(-p "$tp"); done < <(grep "^$pfx" <<<"$listing")
      if [ ${#args[@]} -gt "$n" ]; then
        matched=$((matched + 1))
      else
        missing "$bin: no test matches --prefix=$pfx"
      fi
    done
    # Not one prefix left: run nothing (without -p the binary would run all).
    [ "$matched" -gt 0 ] || continue
  fi
  rc=0
  ( cd "$build" &&
    QTEST_QEMU_BINARY=./qemu-system-x86_64 \
    QTEST_QEMU_IMG=./qemu-img \
    QTEST_QEMU_STORAGE_DAEMON_BINARY=./storage-daemon/qemu-storage-daemon \
    PYTHON="$build/pyvenv/bin/python3" \
    MALLOC_PERTURB_=$((RANDOM % 255 + 1)) \
    env "${envs[@]}" timeout 900 "$path" "${args[@]}" ) >"$lg" 2>&1 || rc=$?
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
