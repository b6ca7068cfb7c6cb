"""End-to-end harness for migrate-fds: a real guest, a real tap, a real
vhost-user-blk backend, and a local upgrade (migration to a new QEMU on the
same host) measured from the guest's point of view.  Used by tests/e2e,
bench/bench.py and scripts/demo.py, with the repository's root on sys.path
(pytest.ini's pythonpath, python3 -m bench.bench, demo.py's own insert).

Layout:
  paths.py     where the build, the guest and QEMU's python package are
  harness.py   namespace, taps, qemu-storage-daemon, QEMU processes, agent,
               a TCP echo connection into the guest, a process's fds and RSS
  scenario.py  what a local upgrade is (a combination of network, disk, RAM
               and backend parts) and the run that measures one
  result.py    what a run measured (RunResult, FaultResult)
  stream.py    the 1 kHz UDP sender (a separate process in the namespace)
  verify.py    host-side check of the records the guest wrote, and
               KnownDefect (an xfail in the tests)
"""
