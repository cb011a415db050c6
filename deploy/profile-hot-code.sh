#!/usr/bin/env bash
# Regenerates deploy/berthd.hot and deploy/shim.hot, the lists of the functions of berthd and
# of the shim that a day's work runs, which deploy/build-lean.sh links first and together
# (lld's symbol ordering; deploy/link-hot-first.sh).
#
# Why: the kernel maps a program's code 64 KiB at a time around each page it faults in
# (fault-around), so berthd's resident code is the number of 64 KiB windows its work
# touches, and the linker scatters the functions of one container's life over most of the
# 12 MiB of code. Linked together they fill fewer windows (issue 16's closing note has the
# figures).
#
# How: berthd and the shim run from an ext4 image on a loop device with readahead off and
# their pages out of the page cache, so each page of code they touch is read on its own and
# nothing else is mapped around it; /proc/PID/pagemap then tells which pages of code were
# touched. berthd's: once when the socket serves (those functions go first) and once after a
# workload (images loaded, containers run, exec'd, killed and removed one at a time and 8 at
# a time through ctr, and through the berth CLI). The shim's: the first container's shim,
# started, exec'd into and idle (nothing else has touched the shim's code yet). The
# functions on those pages, by symbol, are the lists.
#
# Needs root, berthd and the shim as deployed (cargo build --release --workspace, then
# deploy/build-lean.sh), ctr, losetup, mkfs.ext4, python3 and Debian's busybox-static.
# Run it again when the code has changed a lot: a stale list still links (see
# deploy/link-hot-first.sh for names whose hash changed or that are gone), it only orders
# less well.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
rel=$here/target/release
lean=$here/target/lean
for b in "$lean/berthd" "$lean/containerd-shim-berth-v2" "$rel/berth"; do
  [ -x "$b" ] || { echo "profile-hot-code.sh: no $b (cargo build --release --workspace; deploy/build-lean.sh)" >&2; exit 1; }
done

work=$(mktemp -d /dev/shm/berth-hot.XXXXXX)
mnt=$work/mnt
sock=$work/berthd.sock
loop=""
bdi=""
readahead=""
bpid=""
# Whatever a failed run left: containers (through berthd), mounts under $work, the loop
# device (its readahead as it was), the files.
cleanup() {
  set +e
  if [ -n "$bpid" ]; then
    for ns in hot default; do
      for t in $(command ctr -a "$sock" -n "$ns" tasks ls -q 2>/dev/null); do
        command ctr -a "$sock" -n "$ns" tasks rm -f "$t" >/dev/null 2>&1
      done
    done
    kill "$bpid" 2>/dev/null && wait "$bpid" 2>/dev/null
  fi
  awk -v w="$work/" 'index($5, w) == 1 {print $5}' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m"; done
  mountpoint -q "$mnt" && umount "$mnt"
  [ -n "$readahead" ] && echo "$readahead" >"/sys/class/bdi/$bdi/read_ahead_kb"
  [ -n "$loop" ] && losetup -d "$loop"
  rm -rf "$work"
}
trap cleanup EXIT

# The snapshot of touched code pages (vaddrs in the ELF file) and the list made from them.
py() {
  python3 - "$@" <<'EOF'
import struct, subprocess, sys
if sys.argv[1] == 'pages':
    pid, binpath, out = sys.argv[2], sys.argv[3], sys.argv[4]
    maps = []
    for line in open(f'/proc/{pid}/maps'):
        f = line.split()
        if len(f) >= 6 and f[5] == binpath:
            lo, hi = (int(x, 16) for x in f[0].split('-'))
            maps.append((lo, hi, int(f[2], 16), f[1]))
    bias = maps[0][0] - maps[0][2]
    pagemap = open(f'/proc/{pid}/pagemap', 'rb')
    pages = []
    for lo, hi, _, perm in maps:
        if 'x' not in perm:
            continue
        for va in range(lo, hi, 4096):
            pagemap.seek(va // 4096 * 8)
            if struct.unpack('Q', pagemap.read(8))[0] >> 63:
                pages.append(va - bias)
    open(out, 'w').write(''.join('%x\n' % p for p in pages))
    print(f'{len(pages) * 4} KiB of code touched', file=sys.stderr)
else:
    binpath, fresh, after, out = sys.argv[2:6]
    read = lambda f: {int(l, 16) for l in open(f) if l.strip()}
    first, rest = read(fresh), read(after)
    nm = subprocess.run(['nm', '-S', '--defined-only', binpath], capture_output=True,
                        text=True, check=True).stdout
    a, b = [], []
    for line in nm.splitlines():
        f = line.split()
        if len(f) != 4 or f[2] not in 'tTwW' or int(f[1], 16) == 0:
            continue
        addr, size = int(f[0], 16), int(f[1], 16)
        pages = range(addr // 4096 * 4096, addr + size, 4096)
        if any(p in first for p in pages):
            a.append((addr, size, f[3]))
        elif any(p in rest for p in pages):
            b.append((addr, size, f[3]))
    a.sort(); b.sort()
    open(out, 'w').write(''.join(n + '\n' for _, _, n in a + b))
    kib = lambda l: sum(s for _, s, _ in l) // 1024
    print(f'{len(a)} functions ({kib(a)} KiB) at start, {len(b)} more ({kib(b)} KiB) after the workload',
          file=sys.stderr)
EOF
}

truncate -s 128M "$work/disk.img"
mkfs.ext4 -q -F "$work/disk.img"
loop=$(losetup -f --show "$work/disk.img")
mkdir -p "$mnt"
mount "$loop" "$mnt"
cp "$lean/berthd" "$lean/containerd-shim-berth-v2" "$mnt/"
umount "$mnt"
# No readahead on the device, and the binaries read afresh: a fault reads only its own page.
bdi=$(($(stat -c 0x%t "$loop"))):$(($(stat -c 0x%T "$loop")))
readahead=$(cat "/sys/class/bdi/$bdi/read_ahead_kb")
echo 0 >"/sys/class/bdi/$bdi/read_ahead_kb"
mount "$loop" "$mnt"

touch "$work/none.toml"
PATH="$mnt:$PATH" "$mnt/berthd" --config "$work/none.toml" --root "$work/root" \
  --state "$work/state" --address "$sock" >"$work/berthd.log" 2>&1 &
bpid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
sleep 0.5
py pages "$bpid" "$mnt/berthd" "$work/fresh"

"$here/deploy/busybox-image.sh" "$work/busybox.tar" busybox:latest
berth() { "$rel/berth" -a "$sock" "$@"; }
ctr() { command ctr -a "$sock" -n hot "$@"; }
berth load -i "$work/busybox.tar" >/dev/null
ctr images import "$work/busybox.tar" >/dev/null
img=$(ctr images ls -q | head -1)
# The first shim, alone: started, exec'd into, idle.
ctr run -d "$img" idle sleep 1000 >/dev/null
ctr tasks exec --exec-id e0 idle true
sleep 1
spid=$(ctr tasks ls | awk '$1 == "idle" {print $2}')
spid=$(awk '{print $4}' "/proc/$spid/stat")
py pages "$spid" "$mnt/containerd-shim-berth-v2" "$work/shim"
gone() {
  ctr tasks kill -s SIGKILL "$1" >/dev/null
  while [ "$(ctr tasks ls | awk -v id="$1" '$1 == id {print $3}')" = RUNNING ]; do sleep 0.01; done
  ctr tasks rm "$1" >/dev/null
  ctr containers rm "$1" >/dev/null
}
for i in $(seq 10); do ctr run -d "$img" "s$i" sleep 1000 >/dev/null; done
ctr tasks exec --exec-id e1 s1 true
ctr tasks ls >/dev/null; ctr containers ls >/dev/null; ctr snapshots ls >/dev/null
ctr content ls >/dev/null
for i in $(seq 10); do gone "s$i" 2>/dev/null; done
gone idle 2>/dev/null
export -f gone ctr
export sock img
seq 10 | xargs -P8 -I{} bash -c 'ctr run -d "$img" "p{}" sleep 1000 >/dev/null'
seq 10 | xargs -P8 -I{} bash -c 'gone "p{}" 2>/dev/null'
ctr run --rm "$img" r1 true
berth run --rm --network none busybox true
berth run -d --name hot --network none busybox sleep 1000 >/dev/null
berth ps >/dev/null
berth exec hot true
berth logs hot >/dev/null
berth stop -t 1 hot >/dev/null
berth rm hot >/dev/null
sleep 2
py pages "$bpid" "$mnt/berthd" "$work/after"
py order "$lean/berthd" "$work/fresh" "$work/after" "$here/deploy/berthd.hot"
: >"$work/none"
py order "$lean/containerd-shim-berth-v2" "$work/shim" "$work/none" "$here/deploy/shim.hot"
echo "wrote deploy/berthd.hot and deploy/shim.hot"
