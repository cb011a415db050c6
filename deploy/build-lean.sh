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
# - both: the functions a day's work runs linked first and together (deploy/berthd.hot and
#   deploy/shim.hot, made by deploy/profile-hot-code.sh; deploy/link-hot-first.sh links
#   with them). Code is mapped 64 KiB at a time around each page touched: scattered, the
#   hot functions kept most of berthd's code resident.
# A static link cannot be a profile setting, and a crt-static RUSTFLAGS for the whole
# build breaks proc macros: `cargo rustc` gives the flag to each binary's final link only.
# deploy/install.sh installs these when they are there; the release benchmarks run them
# when they are not older than the release build's own.
set -euo pipefail
cd "$(dirname "$0")/.."
relr="link-arg=-Wl,-z,pack-relative-relocs"
linker="linker=$PWD/deploy/link-hot-first.sh"
hot() { echo "link-arg=--berth-hot-list=$PWD/deploy/$1#$(sha256sum <"deploy/$1" | cut -c1-16)"; }
cargo rustc --profile shim --locked -p berth-shim --bin containerd-shim-berth-v2 \
  -- -C target-feature=+crt-static -C "$relr" -C "$linker" -C "$(hot shim.hot)"
cargo rustc --release --locked -p berth-services --bin berthd \
  -- -C target-feature=+crt-static -C "$relr" -C "$linker" -C "$(hot berthd.hot)"
target=${CARGO_TARGET_DIR:-target}
mkdir -p "$target/lean"
cp "$target/shim/containerd-shim-berth-v2" "$target/release/berthd" "$target/lean/"
echo "built $target/lean/berthd and $target/lean/containerd-shim-berth-v2"
