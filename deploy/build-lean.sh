#!/usr/bin/env bash
# Builds berthd and the shim as they are deployed, into target/lean/, after
# `cargo build --release --workspace`:
# - the shim: the `shim` profile of Cargo.toml (smallest code, panic aborts), linked
#   statically (glibc's static libc). One shim runs per container or pod, so its memory
#   counts many times over.
# - berthd: the release build linked statically: no libc.so, libm.so, libgcc_s.so or ld.so
#   pages mapped (~1.4 MB of its resident memory).
# - both: relative relocations packed (DT_RELR; glibc 2.36 and binutils 2.38 on). A static
#   PIE relocates itself at start, reading all of .rela.dyn, whose pages then stay
#   resident: berthd's was 663 KiB; packed, it is a few KiB.
# A static link cannot be a profile setting, and a crt-static RUSTFLAGS for the whole
# build breaks proc macros: `cargo rustc` gives the flag to each binary's final link only.
# deploy/install.sh installs these when they are there; the release benchmarks run them
# when they are not older than the release build's own.
set -euo pipefail
cd "$(dirname "$0")/.."
relr="link-arg=-Wl,-z,pack-relative-relocs"
cargo rustc --profile shim --locked -p berth-shim --bin containerd-shim-berth-v2 \
  -- -C target-feature=+crt-static -C "$relr"
cargo rustc --release --locked -p berth-services --bin berthd \
  -- -C target-feature=+crt-static -C "$relr"
target=${CARGO_TARGET_DIR:-target}
mkdir -p "$target/lean"
cp "$target/shim/containerd-shim-berth-v2" "$target/release/berthd" "$target/lean/"
echo "built $target/lean/berthd and $target/lean/containerd-shim-berth-v2"
