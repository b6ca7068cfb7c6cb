# migrate-fds: thin entry points; the steps live in scripts/.
# make demo   - everything from nothing, then a live local upgrade demo
# make check  - everything from nothing, then all tests (what CI runs)
#
# Only `make tree` replaces work/qemu with base + patches/ (and refuses to
# drop work patches/ does not have).  `make build` (and check, bench, demo)
# create the tree when there is none and otherwise build it as it is, so
# that an edit builds before it is committed and exported.

SHELL := /bin/bash
PY := /usr/bin/python3

.PHONY: all deps base tree export build guest check check-bisect check-asan bench soak fuzz demo clean distclean

all: build

deps:
	bash scripts/deps.sh

base:
	bash scripts/base.sh

tree:
	bash scripts/tree.sh

export:
	bash scripts/export.sh

build:
	bash scripts/tree.sh --keep-work
	bash scripts/build.sh

guest:
	bash scripts/guest.sh

check:
	bash scripts/check.sh

check-bisect:
	bash scripts/check-bisect.sh

# The series' qtests and e2e handovers under ASan and UBSan (not in check)
check-asan: deps guest
	bash scripts/check-asan.sh

# baseline-10.2.2 runs the unpatched build (scripts/build-base.sh); then
# a CPU profile of the new QEMU while the guest warms up (bench/warmup.py)
bench: deps build guest
	bash scripts/build-base.sh
	$(PY) -m bench.bench
	$(PY) -m bench.warmup

# 100 handovers with a stop/cont and a guest reboot every 10 (not in check)
soak: deps build guest
	$(PY) -m pytest -p no:cacheprovider -v -s tests/e2e/soak.py

# Fuzz the handover state in the stream: 10000 mutated streams, split
# between the tap and vhost-user-blk qtests (not in check; FUZZ_ITERATIONS,
# FUZZ_SEED); summary in work/fuzz/
fuzz: deps build
	bash scripts/fuzz.sh

demo: deps build guest
	$(PY) scripts/demo.py

# Everything built or recorded; kept: the download and work/qemu itself
# (its commits may hold work not yet exported).
clean:
	rm -rf work/qemu/build work/qemu-base work/bisect work/base-logs work/guest \
	  work/guest-build.* work/qemu.tmp work/check work/check-bisect work/e2e \
	  work/bench work/fuzz work/demo work/asan work/check-asan work/configure.log work/build.log work/optionrom.log work/apt.log
	if [ -d work/qemu/.git ]; then git -C work/qemu worktree prune; fi

distclean:
	rm -rf work
