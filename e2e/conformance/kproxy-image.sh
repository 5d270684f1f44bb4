#!/usr/bin/env bash
# Writes kproxy's image, docker.io/library/kproxy:dev (what the kubelet makes of deploy/daemonset.yaml's kproxy:dev), as an OCI tarball
# with our own writer (mkimg), from local files: no container daemon, nothing pulled. What the
# Dockerfile's image holds that kproxy needs at run time: a static bin/kproxy at
# /usr/local/bin/kproxy, and the iptables tools it execs (iptables, iptables-save,
# iptables-restore and the ip6tables twins, all this machine's xtables-nft-multi with its
# libraries and the xtables extensions it loads at run time).
#
# Usage: kproxy-image.sh OUT.tar     (KPROXY_BIN: default bin/kproxy, from `make build`)
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/env.sh"
OUT=${1:?usage: kproxy-image.sh OUT.tar}
: "${KPROXY_BIN:=$REPO/bin/kproxy}"
[[ -x $KPROXY_BIN ]] || { echo "kproxy-image.sh: $KPROXY_BIN missing (make build)" >&2; exit 1; }
multi=$(readlink -f /usr/sbin/iptables-nft 2>/dev/null || true)
[[ -x $multi ]] || { echo "kproxy-image.sh: iptables-nft missing (make deps installs iptables)" >&2; exit 1; }
ext=/usr/lib/x86_64-linux-gnu/xtables
[[ -d $ext ]] || { echo "kproxy-image.sh: $ext missing (the xtables extensions of iptables)" >&2; exit 1; }

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
r=$work/rootfs; mkdir -p "$r"/{usr/local/bin,usr/sbin,etc,tmp,run,var/lib/kproxy}
chmod 1777 "$r/tmp"
cp "$KPROXY_BIN" "$r/usr/local/bin/kproxy"
for f in "$multi" "$ext"/*.so; do
  cp --parents -L "$f" "$r/"
  ldd "$f" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do cp --parents -L -n "$lib" "$r/"; done
done
for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
  ln -s "$(basename "$multi")" "$r/usr/sbin/$t"
done
cp /etc/protocols /etc/services "$r/etc/" 2>/dev/null || true
printf 'root:x:0:0:root:/root:/bin/false\n' > "$r/etc/passwd"
go build -C "$REPO" -trimpath -ldflags '-s -w' -o "$work/mkimg" ./e2e/conformance/mkimg
"$work/mkimg" -name docker.io/library/kproxy:dev -o "$OUT" -entrypoint /usr/local/bin/kproxy -rootfs "$r" >&2
log "kproxy image kproxy:dev written to $OUT ($(du -h "$OUT" | cut -f1))"
