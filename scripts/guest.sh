#!/usr/bin/env bash
# Builds the tiny test guest (Debian cloud kernel + busybox initramfs) once into
# target/guest and prints its directory. Later calls reuse it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${DROVER_GUEST_DIR:-$here/target/guest}
if [ ! -s "$out/vmlinux" ] || [ ! -s "$out/initramfs.cpio.gz" ] || [ ! -s "$out/rootfs.qcow2" ]; then
  [ -n "$(ls /var/lib/apt/lists/*_Packages 2>/dev/null | head -1)" ] || apt-get update -q
  MAKE_EXT4=1 MAKE_QCOW2=1 "$here/scripts/build-tiny-guest.sh" "$out" >&2
fi
echo "$out"
