#!/usr/bin/env bash
# Builds the tiny test guest (Debian cloud kernel + busybox initramfs) once into
# target/guest and prints its directory. Later calls reuse it until the build script changes.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${DROVER_GUEST_DIR:-$here/target/guest}
stamp=$(sha256sum "$here/scripts/build-tiny-guest.sh" | cut -c1-16)
if [ ! -s "$out/vmlinux" ] || [ ! -s "$out/initramfs.cpio.gz" ] || [ ! -s "$out/rootfs.qcow2" ] ||
   [ "$(cat "$out/.script-sha256" 2>/dev/null)" != "$stamp" ]; then
  [ -n "$(ls /var/lib/apt/lists/*_Packages 2>/dev/null | head -1)" ] || apt-get update -q >&2
  MAKE_EXT4=1 MAKE_QCOW2=1 "$here/scripts/build-tiny-guest.sh" "$out" >&2
  echo "$stamp" > "$out/.script-sha256"
fi
echo "$out"
