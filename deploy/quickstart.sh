#!/usr/bin/env bash
# Fresh-machine quick start (Debian 12, as root): builds berth, starts berthd with its
# embedded defaults (root /var/lib/berth, state /run/berth, socket /run/berth/berth.sock)
# and shows it answering. Safe to run again: an already running berthd is reused.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
if ! command -v runc >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends runc ca-certificates >/dev/null
fi
cargo build --release --locked -p berth-services -p berth-cli
bin=$PWD/target/release

sock=/run/berth/berth.sock
if ! "$bin/berth" -a "$sock" version >/dev/null 2>&1; then
  mkdir -p /var/log
  nohup "$bin/berthd" >>/var/log/berthd.log 2>&1 &
  echo "started berthd (pid $!), log in /var/log/berthd.log"
  for _ in $(seq 100); do
    "$bin/berth" -a "$sock" version >/dev/null 2>&1 && break
    sleep 0.1
  done
fi

"$bin/berth" version
"$bin/berth" plugins ls
# A container record (running containers arrive with the shim and tasks work).
spec=$(mktemp)
printf '%s\n' '{"ociVersion":"1.1.0","process":{"args":["echo","hello"],"cwd":"/"},"root":{"path":"rootfs"}}' >"$spec"
"$bin/berth" containers rm hello >/dev/null 2>&1 || true
"$bin/berth" containers create --spec "$spec" --label demo=quickstart hello
"$bin/berth" containers ls
rm -f "$spec"
