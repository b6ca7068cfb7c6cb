#!/usr/bin/env bash
# Install everything the project needs from Debian's packages.
# Idempotent: when all is installed it only checks and returns.
# It changes the host's apt configuration: it adds (and says so)
# /etc/apt/sources.list.d/migrate-fds.sources, with bookworm-backports
# (deb and deb-src: meson >= 1.5 and pycotap) and sid's deb-src (the pinned
# QEMU source package, which apt-get source selects by its exact version),
# both from the archive the host already uses.  Remove that file (and run
# apt-get update) to undo it; the packages installed from backports stay.
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "deps.sh installs packages: run it as root"

# Packages from bookworm itself.
PKGS=(
  git make gcc g++ binutils pkg-config ninja-build
  libglib2.0-dev libpixman-1-dev libslirp-dev zlib1g-dev libcap-ng-dev
  libaio-dev libfdt-dev device-tree-compiler python3-venv python3-pytest perl
  seabios ipxe-qemu iproute2 busybox-static xz-utils bzip2 dpkg-dev
  gnuplot-nox libc6-dev libbpf-dev linux-perf
)
# Packages from bookworm-backports (QEMU 10.2 needs meson >= 1.5).
BPO_PKGS=(meson python3-pycotap)

# The archive address and keyring come from the machine's own apt setup.
debian_uri() {
  local u
  u=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
      awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
  if [ -z "$u" ] && [ -f /etc/apt/sources.list ]; then
    u=$(awk '$1=="deb" && $0 ~ /bookworm/ {for (i=2;i<=NF;i++) if ($i ~ /^(https?|file):/) {print $i; exit}}' \
        /etc/apt/sources.list | grep -E '/debian/?$' | head -n1 || true)
  fi
  [ -n "$u" ] || die "no Debian archive found in the apt configuration"
  echo "$u"
}

SRC_LIST=/etc/apt/sources.list.d/migrate-fds.sources
ensure_sources() {
  local uri want
  uri=$(debian_uri)
  # bookworm-backports: meson and pycotap.  deb-src of sid: the pinned
  # QEMU source package (apt-get source selects it by its exact version).
  want="# Added by migrate-fds scripts/deps.sh
Types: deb deb-src
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: $uri
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"
  if [ ! -f "$SRC_LIST" ] || [ "$(cat "$SRC_LIST")" != "$(printf '%s' "$want")" ]; then
    log "adding to the host's apt sources: $SRC_LIST (bookworm-backports deb + deb-src," \
        "sid deb-src, from $uri); remove it to undo"
    printf '%s' "$want" >"$SRC_LIST"
    rm -f /var/lib/apt/periodic/migrate-fds-updated
  fi
}

missing() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || echo "$p"
  done
}

apt_updated=0
apt_update() {
  [ $apt_updated = 1 ] && return
  log "apt-get update"
  apt_logged apt-get update -qq || die "apt-get update failed"
  apt_updated=1
}

ensure_sources
# Make sure the index knows the sources we just added.
if ! apt-cache policy 2>/dev/null | grep -q 'bookworm-backports'; then
  apt_update
fi

miss=$(missing "${PKGS[@]}")
if [ -n "$miss" ]; then
  apt_update
  log "installing:" $miss
  DEBIAN_FRONTEND=noninteractive apt_logged apt-get install -y -qq --no-install-recommends $miss \
    || die "apt-get install failed for: $miss"
fi

meson_ok() {
  local v
  v=$(dpkg-query -W -f='${Version}' meson 2>/dev/null || true)
  [ -n "$v" ] && dpkg --compare-versions "$v" ge 1.5
}
if ! meson_ok || [ -n "$(missing "${BPO_PKGS[@]}")" ]; then
  apt_update
  log "installing from bookworm-backports: ${BPO_PKGS[*]}"
  DEBIAN_FRONTEND=noninteractive apt_logged apt-get install -y -qq --no-install-recommends \
    -t bookworm-backports "${BPO_PKGS[@]}" || die "backports install failed"
fi
meson_ok || die "meson >= 1.5 is required"
log "dependencies present (meson $(dpkg-query -W -f='${Version}' meson))"
