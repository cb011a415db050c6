#!/usr/bin/env bash
# Installs berth's binaries, default config and systemd unit from a built workspace
# (`cargo build --release --workspace`, then deploy/build-lean.sh for the deployed berthd and
# shim).
#   deploy/install.sh [--prefix /usr/local] [--profile release]
set -euo pipefail
prefix=/usr/local
profile=release
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --profile) profile=$2; shift 2 ;;
    *) echo "usage: $0 [--prefix DIR] [--profile release|debug]" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "$0")/.." && pwd)
bins="$here/target/$profile"
for b in berthd berth containerd-shim-berth-v2 berth-snapshotter; do
  src="$bins/$b"
  # berthd and the shim as deployed (deploy/build-lean.sh: static, the shim small), when
  # they were built and are not older than the release build.
  if [ "$profile" = release ] && [ -x "$here/target/lean/$b" ] && ! [ "$src" -nt "$here/target/lean/$b" ]; then
    src="$here/target/lean/$b"
  fi
  [ -x "$src" ] || { echo "missing $src: run cargo build --$profile first" >&2; exit 1; }
  install -D -m 0755 "$src" "$prefix/bin/$b"
done
install -d -m 0755 /etc/berth
[ -e /etc/berth/config.toml ] || install -m 0644 "$here/deploy/config.toml" /etc/berth/config.toml
# The pods' network (CRI), unless the host has one: a bridge on 10.88.0.0/16 with host ports.
if ! ls /etc/cni/net.d/*.conf* >/dev/null 2>&1; then
  install -D -m 0644 "$here/deploy/cni/10-berth-pods.conflist" /etc/cni/net.d/10-berth-pods.conflist
fi
if [ -d /etc/systemd/system ]; then
  install -m 0644 "$here/deploy/berthd.service" /etc/systemd/system/berthd.service
  sed -i "s#/usr/local/bin/berthd#$prefix/bin/berthd#" /etc/systemd/system/berthd.service
  command -v systemctl >/dev/null && systemctl daemon-reload || true
fi
echo "installed berthd, berth, containerd-shim-berth-v2 and berth-snapshotter into $prefix/bin"
