"""End-to-end harness for migrate-fds: a real guest, a real tap, a real
vhost-user-blk backend, and a local upgrade (migration to a new QEMU on the
same host) measured from the guest's point of view.

Layout:
  paths.py     where the build, the guest and QEMU's python package are
  harness.py   namespace, taps, qemu-storage-daemon, QEMU processes, agent,
               a TCP echo connection into the guest, a process's fds and RSS
  scenario.py  what a local upgrade is (source/target args + hooks) and the
               run that measures one
  stream.py    the 1 kHz UDP sender (a separate process in the namespace)
  verify.py    host-side check of the records the guest wrote
"""
