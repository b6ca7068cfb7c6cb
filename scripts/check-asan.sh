#!/usr/bin/env bash
# The series under AddressSanitizer and UBSan: a second build of work/qemu
# (into work/asan, configured as scripts/build.sh does, plus
# --enable-asan --enable-ubsan), then the series' own qtests and the e2e
# handovers (tap with 1, 2 and 4 queues, vhost-user-blk, their failure
# paths) against it.  Any sanitizer report fails the run, as does a failed
# test.  Not part of `make check`: the build alone takes about 25 minutes
# on a 2-core machine, the runs about 15.  Logs: work/check-asan/.
. "$(dirname "$0")/lib.sh"

[ -e "$QEMU_TREE/.git" ] || "$ROOT/scripts/tree.sh" --keep-work
ASAN_BUILD=$WORK/asan
out=$WORK/check-asan
rm -rf "$out"
mkdir -p "$out"

log "build with ASan and UBSan into $ASAN_BUILD"
WORK=$out QEMU_TREE=$QEMU_TREE BUILD=$ASAN_BUILD EXTRA_CONFIGURE_ARGS="--enable-asan --enable-ubsan" \
  NINJA_TARGETS="qemu-system-x86_64 storage-daemon/qemu-storage-daemon qemu-img contrib/vhost-user-blk/vhost-user-blk" \
  "$ROOT/scripts/build.sh"

# Leaks at exit are not what this looks for (QEMU frees little at exit);
# every report goes to the process's stderr, i.e. the logs.
export ASAN_OPTIONS=detect_leaks=0:print_summary=1
export UBSAN_OPTIONS=print_stacktrace=1

log "qtests"
cat >"$out/qtests.list" <<'LIST'
vhost-user-blk-migrate-fds-test
tap-migrate-fds-test
migration-test --full --prefix=/x86_64/migration/fds
LIST
read -r qp qf qs < <(QTESTS_LIST="$out/qtests.list" "$ROOT/scripts/qtests.sh" "$ASAN_BUILD" "$out/qtests" | tail -n 1)

log "e2e handovers"
e2e_rc=0
MFDS_BUILD=$ASAN_BUILD MFDS_LOGS=$out/e2e "$PY" -m pytest -p no:cacheprovider -q \
  "$ROOT/tests/e2e/test_tap_handover.py::test_tap_handover_local_upgrade" \
  "$ROOT/tests/e2e/test_tap_handover.py::test_tap_handover_target_lost" \
  "$ROOT/tests/e2e/test_vub_handover.py::test_vub_handover_local_upgrade" \
  "$ROOT/tests/e2e/test_vub_handover.py::test_vub_handover_target_killed" \
  "$ROOT/tests/e2e/test_vub_lifecycle.py::test_vub_handover_then_stop_cont" \
  >"$out/e2e.log" 2>&1 || e2e_rc=$?
tail -n 3 "$out/e2e.log"

reports=$(grep -rlE 'ERROR: AddressSanitizer|runtime error:' "$out" || true)
n=$(printf '%s' "$reports" | grep -c . || true)
log "qtests: $qp passed, $qf failed, $qs skipped; e2e exit $e2e_rc; logs with a sanitizer report: $n"
[ -z "$reports" ] || { printf '  %s\n' $reports; grep -rhE -A12 'ERROR: AddressSanitizer|runtime error:' $reports | sed -n '1,60p'; }
[ "$qf" -eq 0 ] && [ "$e2e_rc" -eq 0 ] && [ -z "$reports" ] || die "check-asan failed (see $out)"
log "no sanitizer report"
