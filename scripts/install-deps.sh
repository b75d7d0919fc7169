#!/usr/bin/env bash
# Installs what Drover needs on a fresh Debian bookworm machine: QEMU 10 from
# bookworm-backports (Debian's 7.2 would remove the machine's qemu-utils 10) and
# the small tools the test guest build uses. Safe to run again: it skips what is there.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then echo "install-deps.sh must run as root" >&2; exit 1; fi
export DEBIAN_FRONTEND=noninteractive
if ! qemu-system-x86_64 --version 2>/dev/null | grep -q 'version 10'; then
  if [ ! -f /etc/apt/sources.list.d/bookworm-backports.sources ]; then
    URI=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$URI" > /etc/apt/sources.list.d/bookworm-backports.sources
  fi
  apt-get update -q
  apt-get install -y -q --no-install-recommends -t bookworm-backports qemu-system-x86
fi
missing=()
# dnsmasq and nft realize virtual networks (DHCP per network, NAT and isolation rules); iperf3
# is the bare-host baseline of `drover-bench throughput`.
# xorriso makes the ISOs of the CD-ROM tests.
for tool in mke2fs:e2fsprogs lz4:lz4 xz:xz-utils zstd:zstd dnsmasq:dnsmasq-base nft:nftables iperf3:iperf3 xorriso:xorriso; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ -n "$(ls /var/lib/apt/lists/*_Packages 2>/dev/null | head -1)" ] || apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
