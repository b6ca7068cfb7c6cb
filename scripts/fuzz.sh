#!/usr/bin/env bash
# Fuzz the handover state of the migration stream (issue #15 item 2):
# the tap and vhost-user-blk qtests' /stream/fuzz cases (the latter with
# qemu-storage-daemon and, /stream/fuzz-inflight, with
# contrib/vhost-user-blk, whose session has an inflight region), against
# the patched build, with FUZZ_ITERATIONS (default 10000) seeds in total,
# half to the tap, a quarter to each vhost-user-blk case, from FUZZ_SEED
# (default 1).  Not part of check.
# Writes work/fuzz/: iterations.tsv (one line per iteration), a log per
# test and summary.txt.  Exits non-zero if any iteration failed.
. "$(dirname "$0")/lib.sh"

total=${FUZZ_ITERATIONS:-10000}
seed=${FUZZ_SEED:-1}
out=$WORK/fuzz
[ -x "$BUILD/qemu-system-x86_64" ] || die "no build in $BUILD: make build first"
[ "$(id -u)" = 0 ] || die "the tap fuzz needs root (and /dev/net/tun)"
mkdir -p "$out"
rm -f "$out/iterations.tsv" "$out"/*.log "$out/summary.txt"

if [ "${FUZZ_BUILD:-yes}" != no ]; then
  log "building the qtests"
  ninja -C "$BUILD" qemu-system-x86_64 storage-daemon/qemu-storage-daemon \
    contrib/vhost-user-blk/vhost-user-blk tests/qtest/tap-migrate-fds-test \
    tests/qtest/vhost-user-blk-migrate-fds-test >"$out/build.log" 2>&1 ||
    { tail -n 30 "$out/build.log" >&2; die "building the qtests failed"; }
fi

tap_n=$(( (total + 1) / 2 ))
vub_n=$(( (total - tap_n + 1) / 2 ))
inflight_n=$(( total - tap_n - vub_n ))
start=$(date +%s)
rc=0
run() { # run NAME BINARY PATH ITERATIONS
  local name=$1 bin=$2 path=$3 n=$4 t0 r=0
  [ "$n" -gt 0 ] || return 0
  log "$name: $n iterations from seed $seed"
  t0=$(date +%s)
  ( cd "$BUILD" &&
    QTEST_QEMU_BINARY=./qemu-system-x86_64 \
    QTEST_QEMU_IMG=./qemu-img \
    QTEST_QEMU_STORAGE_DAEMON_BINARY=./storage-daemon/qemu-storage-daemon \
    MFDS_FUZZ_ITERATIONS=$n MFDS_FUZZ_SEED=$seed \
    MFDS_FUZZ_LOG="$out/iterations.tsv" \
    "tests/qtest/$bin" --tap -k -p "$path" ) >"$out/$name.log" 2>&1 || r=$?
  grep -E '^# fuzz ' "$out/$name.log" | sed 's/^# //' >&2 ||
    echo "$name: no fuzz case ran: does $BUILD have the fuzz patches? see $out/$name.log" >&2
  grep -qE '^ok [0-9]+ ' "$out/$name.log" || rc=1
  echo "$name: exit $r, $(( $(date +%s) - t0 )) s" >>"$out/durations"
}
rm -f "$out/durations"
run tap tap-migrate-fds-test /x86_64/tap-migrate-fds/stream/fuzz "$tap_n"
run vhost-user-blk vhost-user-blk-migrate-fds-test \
  /x86_64/vhost-user-blk-migrate-fds/stream/fuzz "$vub_n"
run vhost-user-blk-inflight vhost-user-blk-migrate-fds-test \
  /x86_64/vhost-user-blk-migrate-fds/stream/fuzz-inflight "$inflight_n"
secs=$(( $(date +%s) - start ))

# iterations.tsv: test, seed, outcome, mutation, the cause the target named
{
  echo "fuzz of the handover state: $total iterations from seed $seed," \
       "$secs s in all"
  cat "$out/durations"
  awk -F'\t' -v secs="$secs" '
    { n++; per[$1]++; out[$1 "\t" $3]++; if ($3 == "FAILURE") f++ }
    END {
      printf "iterations: %d, failures: %d, %.0f ms per iteration\n",
             n, f, n ? secs * 1000 / n : 0
      for (k in out) { split(k, p, "\t"); printf "  %-24s %-22s %d\n", p[1], p[2], out[k] }
    }' "$out/iterations.tsv"
  echo "most frequent causes named by the targets (first 120 characters):"
  awk -F'\t' '$3 != "loaded fine" { print $1 ": " substr($5, 1, 120) }' \
    "$out/iterations.tsv" | sort | uniq -c | sort -rn | sed -n '1,15p'
  echo "failed iterations (replay: MFDS_FUZZ_SEED=N MFDS_FUZZ_ITERATIONS=1):"
  grep -hE -A3 'FAILED at seed' "$out/tap.log" "$out/vhost-user-blk.log" \
    "$out/vhost-user-blk-inflight.log" \
    2>/dev/null | grep -v '^#' | sed -n '1,400p' || true
} >"$out/summary.txt"
sed -n "1,/^most frequent/p" "$out/summary.txt" | sed "\$d"
echo "summary: $out/summary.txt"
grep -q $'\tFAILURE\t' "$out/iterations.tsv" && rc=1
exit $rc
