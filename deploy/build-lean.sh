#!/usr/bin/env bash
# Builds the shim as it is deployed: the `shim` profile of Cargo.toml (smallest code, panic
# aborts) and linked statically (glibc's static libc), into target/shim/. One shim runs per
# container or pod, so its memory counts many times over; deploy/install.sh installs this
# build when it is there, and the benchmarks (`cargo bench`, release) run it when present.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo rustc --profile shim --locked -p berth-shim --bin containerd-shim-berth-v2 \
  -- -C target-feature=+crt-static
echo "built target/shim/containerd-shim-berth-v2"
