#!/usr/bin/env bash
# Build the tiny e2e test guest into work/guest/:
#   vmlinuz     Debian's linux-image-6.1.0-*-amd64 kernel (extracted, not installed)
#   initrd.img  busybox-static, the virtio modules, tests/e2e/guest/{init,mfds-agent}
#               and the static writer, udpecho and ticker programs
# Cached: rebuilt only when a hash of its inputs changes (work/guest/.stamp).
. "$(dirname "$0")/lib.sh"

SRC=$ROOT/tests/e2e/guest
OUT=$WORK/guest
DL=$WORK/download
MODULES=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
         failover net_failover virtio_net virtio_blk)
mkdir -p "$OUT" "$DL"

# The kernel package that Debian's linux-image-amd64 metapackage points at.
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
       sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1)
if [ -z "$kpkg" ]; then
  # A stale or missing package index: refresh once.
  apt_logged apt-get update -qq || die "apt-get update failed"
  kpkg=$(apt-cache depends linux-image-amd64 |
         sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1)
fi
[ -n "$kpkg" ] || die "cannot resolve the kernel package of linux-image-amd64"
kver=$(apt-cache policy "$kpkg" | sed -n 's/^ *Candidate: //p')
deb=$(ls "$DL/${kpkg}_"*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
  log "downloading $kpkg $kver"
  (cd "$DL" && apt_logged apt-get download -q "$kpkg") || die "apt-get download $kpkg failed"
  deb=$(ls "$DL/${kpkg}_"*.deb | head -n1)
fi

stamp_want=$( { sha256sum "$0" "$SRC"/* /bin/busybox; basename "$deb"; gcc --version | head -n1; } |
              sha256sum | cut -d' ' -f1)
if [ -f "$OUT/.stamp" ] && [ "$(cat "$OUT/.stamp")" = "$stamp_want" ] &&
   [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initrd.img" ]; then
  log "guest up to date: $OUT"
  exit 0
fi

log "building guest from $(basename "$deb")"
tmp=$(mktemp -d "$WORK/guest-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "$deb" "$tmp/kernel"
kdir=$(ls -d "$tmp"/kernel/lib/modules/* | head -n1)

root=$tmp/root
mkdir -p "$root"/{bin,dev,proc,sys,tmp,etc,lib/modules}
cp /bin/busybox "$root/bin/busybox"
install -m 755 "$SRC/init" "$root/init"
install -m 755 "$SRC/mfds-agent" "$root/bin/mfds-agent"
for p in writer udpecho ticker; do
  gcc -static -O2 -Wall -o "$root/bin/$p" "$SRC/$p.c" || die "cannot build $p (is libc6-dev installed? run scripts/deps.sh)"
done

# Modules in load order; a module built into the kernel has no file and is skipped.
: >"$root/etc/modules"
for m in "${MODULES[@]}"; do
  f=$(find "$kdir" -name "$m.ko" -o -name "$m.ko.xz" | head -n1)
  [ -n "$f" ] || continue
  case $f in
    *.xz) xz -dc "$f" >"$root/lib/modules/$m.ko" ;;
    *) cp "$f" "$root/lib/modules/$m.ko" ;;
  esac
  echo "$m" >>"$root/etc/modules"
done

(cd "$root" && find . | /bin/busybox cpio -o -H newc 2>/dev/null) | gzip -1 >"$tmp/initrd.img"
cp "$tmp"/kernel/boot/vmlinuz-* "$OUT/vmlinuz"
mv "$tmp/initrd.img" "$OUT/initrd.img"
echo "$stamp_want" >"$OUT/.stamp"
log "guest built: $OUT/vmlinuz $OUT/initrd.img ($(wc -l <"$root/etc/modules") modules)"
