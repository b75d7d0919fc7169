#!/usr/bin/env bash
# Everything CI checks, on a fresh Debian machine as root: installs the dependencies, builds the
# tiny test guest once (shared by every test), then formatting, clippy and the whole test suite
# (unit, component, QEMU under TCG and end-to-end). Uses cargo-nextest when it is installed.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
./scripts/install-deps.sh
./scripts/guest.sh >/dev/null
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --workspace --no-fail-fast
  # nextest does not run doctests.
  cargo test --workspace --doc
else
  cargo test --workspace --no-fail-fast
fi
