#!/usr/bin/env bash
# Builds a busybox image from Debian's busybox-static, with no network, as a `docker save`
# archive: `deploy/busybox-image.sh OUT.tar [NAME:TAG]` (default busybox:latest), then
# `berth load -i OUT.tar`. The layer is deterministic (sorted, mtime 0, root-owned), so the
# same busybox binary always gives the same image.
set -euo pipefail
out=${1:?usage: busybox-image.sh OUT.tar [NAME:TAG]}
tag=${2:-busybox:latest}
busybox=/bin/busybox
if ! "$busybox" --list >/dev/null 2>&1 || ldd "$busybox" >/dev/null 2>&1; then
  echo "busybox-image.sh: need a static $busybox (apt-get install busybox-static)" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,proc,sys,dev,var/www}
chmod 1777 "$root/tmp"
chmod 700 "$root/root"
cp "$busybox" "$root/bin/busybox"
# One symlink per applet, where busybox installs it (bin/sh, usr/bin/env, ...).
"$busybox" --list-full | while read -r applet; do
  [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done
printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'daemon:x:1:1:daemon:/usr/sbin:/bin/false' \
  'www-data:x:33:33:www-data:/var/www:/bin/false' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' \
  >"$root/etc/passwd"
printf '%s\n' 'root:x:0:' 'daemon:x:1:' 'www-data:x:33:' 'nogroup:x:65534:' >"$root/etc/group"
echo 'hosts: files dns' >"$root/etc/nsswitch.conf"

blobs=$work/archive
mkdir -p "$blobs"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$root" -cf "$work/layer.tar" .
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
mkdir -p "$blobs/$diff_id"
mv "$work/layer.tar" "$blobs/$diff_id/layer.tar"
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
config=$(printf '{"architecture":"%s","os":"linux","created":"1970-01-01T00:00:00Z","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"deploy/busybox-image.sh (busybox-static)"}]}' "$arch" "$diff_id")
config_id=$(printf '%s' "$config" | sha256sum | cut -d' ' -f1)
printf '%s' "$config" >"$blobs/$config_id.json"
printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' \
  "$config_id" "$tag" "$diff_id" >"$blobs/manifest.json"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$blobs" -cf "$out" .
echo "$out: $tag ($(du -h "$out" | cut -f1))"
