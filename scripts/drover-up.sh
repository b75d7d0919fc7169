#!/usr/bin/env bash
# Sets up this machine and runs Drover on it: installs QEMU 10 and the guest build's tools
# (scripts/install-deps.sh, needs root), builds the tiny test guest into target/guest, builds
# drover in release mode and runs `drover up` (a server and a local agent; Ctrl-C stops them).
# Arguments are passed to `drover up` (for example --data-dir DIR or --api-port PORT).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
./scripts/install-deps.sh
./scripts/guest.sh >/dev/null
cargo build --release -p drover
echo "drover is at $here/target/release/drover; put it on your PATH to use the commands below."
exec "$here/target/release/drover" up "$@"
