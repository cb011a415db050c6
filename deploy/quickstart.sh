#!/usr/bin/env bash
# Fresh-machine quick start (Debian 12, as root): builds berth, starts berthd with its
# embedded defaults (root /var/lib/berth, state /run/berth, socket /run/berth/berth.sock),
# makes a busybox image locally (no network), loads it and runs a container in it.
# Safe to run again: an already running berthd is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD

export DEBIAN_FRONTEND=noninteractive
# runc runs containers; containernetworking-plugins, iproute2 and iptables give them their
# networks (the default bridge, published ports).
if ! command -v runc >/dev/null || ! dpkg -s busybox-static containernetworking-plugins iptables iproute2 >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends runc busybox-static ca-certificates \
    containernetworking-plugins iproute2 iptables >/dev/null
fi
cargo build --release --locked -p berth-services -p berth-cli -p berth-shim
bin=$PWD/target/release

sock=/run/berth/berth.sock
if ! "$bin/berth" -a "$sock" version >/dev/null 2>&1; then
  mkdir -p /var/log
  # berthd finds containerd-shim-berth-v2 on its PATH.
  PATH="$bin:$PATH" nohup "$bin/berthd" >>/var/log/berthd.log 2>&1 &
  echo "started berthd (pid $!), log in /var/log/berthd.log"
  for _ in $(seq 100); do
    "$bin/berth" -a "$sock" version >/dev/null 2>&1 && break
    sleep 0.1
  done
fi

"$bin/berth" version
# A busybox image made here from Debian's busybox-static (no network), loaded and run.
"$here/deploy/busybox-image.sh" /tmp/berth-busybox.tar busybox:latest
"$bin/berth" load -i /tmp/berth-busybox.tar
rm -f /tmp/berth-busybox.tar
"$bin/berth" run --rm busybox echo hello
