#!/usr/bin/env bash
# The linker of deploy/build-lean.sh (`-C linker=`): links as rustc asked (cc), then, when
# given a list of hot functions (deploy/profile-hot-code.sh) as the link argument
# `--berth-hot-list=PATH[#CHECKSUM]` and the linker was lld, links again with those
# functions first and together (lld's --symbol-ordering-file), so the code a day's work
# runs fills fewer of the 64 KiB windows the kernel maps code in. The checksum is only
# there to make cargo link again when the list changes (cargo compares rustc's arguments,
# not the environment or the list's contents).
# The list holds full symbol names; the symbols of this very link are taken from the first
# output. A name not there (the code or a dependency changed since the profile, which
# changes a symbol's hash) stands for every instance of the same function under any hash.
set -euo pipefail
args=()
list=""
out=""
for arg in "$@"; do
  case $arg in
  --berth-hot-list=*)
    list=${arg#--berth-hot-list=}
    list=${list%%#*}
    ;;
  *) args+=("$arg") ;;
  esac
  [ "${prev:-}" = "-o" ] && out=$arg
  prev=$arg
done
cc "${args[@]}"
[ -n "$list" ] || exit 0
if [ -z "$out" ] || ! readelf -p .comment "$out" 2>/dev/null | grep -q 'Linker: LLD'; then
  echo "link-hot-first.sh: not linked by lld; $out keeps the linker's own order" >&2
  exit 0
fi
order=$(mktemp)
trap 'rm -f "$order"' EXIT
nm --defined-only "$out" | awk '
  function unhashed(s) { sub(/17h[0-9a-f]+E$/, "", s); return s }
  NR == FNR {
    if ($2 ~ /^[tTwW]$/) { have[$3] = 1; k = unhashed($3); all[k] = all[k] " " $3 }
    next
  }
  $1 in have { if (!done[$1]++) print $1; next }
  {
    n = split(all[unhashed($1)], same, " ")
    for (i = 1; i <= n; i++) if (!done[same[i]]++) print same[i]
  }' - "$list" >"$order"
cc "${args[@]}" -Wl,--symbol-ordering-file="$order" -Wl,--no-warn-symbol-ordering
echo "link-hot-first.sh: $(wc -l <"$order") functions of $list first in $out" >&2
