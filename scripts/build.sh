#!/usr/bin/env bash
# Configure (once) and build work/qemu into $BUILD (work/qemu/build): a trimmed
# x86_64 system emulator with KVM and TCG, slirp, vhost-user/-kernel/-net,
# eBPF (virtio-net's RSS program, which the tap handover must keep), and
# the tools (qemu-img, qemu-storage-daemon with the vhost-user-blk
# export).  Then give the build tree what the Debian tarball leaves out:
# firmware (from Debian's seabios and ipxe-qemu) and the x86 option ROMs
# (built from pc-bios/optionrom).  Incremental when run again.
# It builds the tree as it is, edits not yet committed included; `make
# build` makes the tree first when there is none (tree.sh --keep-work).
. "$(dirname "$0")/lib.sh"

[ -e "$QEMU_TREE/.git" ] || die "no QEMU tree at $QEMU_TREE: run 'make tree'"
cd "$QEMU_TREE"

CONFIGURE_ARGS=(
  --python="$PY"
  --target-list=x86_64-softmmu
  --without-default-features
  --disable-install-blobs
  --disable-docs --disable-download
  --enable-kvm --enable-tcg
  --enable-slirp
  --enable-vhost-user --enable-vhost-kernel --enable-vhost-net
  --enable-tools
  --enable-vhost-user-blk-server
  --enable-linux-aio --enable-cap-ng
  --enable-bpf
  ${EXTRA_CONFIGURE_ARGS:-}
)
# Debian's +ds tarball drops the prebuilt edk2 images that meson unpacks
# for x86 targets; x86 guests here boot SeaBIOS, so empty stand-ins do
# (untracked, excluded from git by tree.sh: they are no part of the series).
for f in $(sed -n "s/^ *'\(edk2-[a-z0-9_-]*\.fd\)',\$/\1/p" pc-bios/meson.build); do
  [ -e "pc-bios/$f.bz2" ] || bzip2 -c </dev/null >"pc-bios/$f.bz2"
done

stamp=$BUILD/.migrate-fds-configure
want="${CONFIGURE_ARGS[*]}"
if [ ! -f "$BUILD/build.ninja" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "configure"
  rm -rf "$BUILD"
  mkdir -p "$BUILD"
  (cd "$BUILD" && "$QEMU_TREE/configure" "${CONFIGURE_ARGS[@]}") >"$WORK/configure.log" 2>&1 ||
    { tail -n 30 "$WORK/configure.log" >&2; die "configure failed (see work/configure.log)"; }
  echo "$want" >"$stamp"
fi

log "ninja"
ninja -C "$BUILD" ${NINJA_TARGETS:-all storage-daemon/qemu-storage-daemon} >"$WORK/build.log" 2>&1 ||
  { grep -E '^FAILED|error:' "$WORK/build.log" | head -n 40 >&2; die "build failed (see work/build.log)"; }

# --- option ROMs: configure writes no config.mak for them here.
rom=$BUILD/pc-bios/optionrom
mkdir -p "$rom"
cat >"$rom/config.mak.new" <<MK
TOPSRC_DIR=$QEMU_TREE
EXTRA_CFLAGS=
CC=cc
CCAS=cc
AS=as
LD=ld
OBJCOPY=objcopy
PYTHON=$PY
MK
cmp -s "$rom/config.mak.new" "$rom/config.mak" || mv "$rom/config.mak.new" "$rom/config.mak"
rm -f "$rom/config.mak.new"
[ -e "$rom/Makefile" ] || ln -sf "$QEMU_TREE/pc-bios/optionrom/Makefile" "$rom/Makefile"
make -s -C "$rom" >"$WORK/optionrom.log" 2>&1 ||
  { tail -n 20 "$WORK/optionrom.log" >&2; die "option ROM build failed"; }

# --- firmware where a QEMU run from the build tree looks for it.
datadir=$(sed -n "s/^#define CONFIG_QEMU_DATADIR \"\(.*\)\"/\1/p" "$BUILD/config-host.h")
[ -n "$datadir" ] || die "cannot read CONFIG_QEMU_DATADIR"
fw=$BUILD/qemu-bundle$datadir
mkdir -p "$fw"
link() { [ -e "$1" ] || die "missing firmware $1"; ln -sfn "$1" "$fw/$(basename "${2:-$1}")"; }
for f in /usr/share/seabios/bios*.bin /usr/share/seabios/vgabios*.bin; do link "$f"; done
for f in /usr/lib/ipxe/qemu/*.rom; do link "$f"; done
for f in multiboot.bin multiboot_dma.bin linuxboot.bin linuxboot_dma.bin kvmvapic.bin pvh.bin; do
  link "$rom/$f"
done
log "built: $BUILD/qemu-system-x86_64"
