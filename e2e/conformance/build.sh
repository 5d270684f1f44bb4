#!/usr/bin/env bash
# Builds everything the conformance tier runs, each piece cached and skipped when present:
#   kubelet, kube-controller-manager, kube-scheduler, e2e.test, agnhost (+ kube-apiserver,
#     kube-proxy, kubectl, etcd)   e2e/tools/build-k8s.sh, $KPROXY_CACHE/k8s-<k8s>-etcd-<etcd>/bin
#   CNI plugins                     datapath/cni/build-plugins.sh, $KPROXY_CACHE/cni-plugins-<v>/bin
#   CoreDNS                         its Go module, $KPROXY_CACHE/coredns-<v>/bin/coredns
#   the images (OCI tarballs)       $KPROXY_CACHE/conformance-images-<hash>/*.tar, written by
#                                   ./mkimg from local files, keyed by a hash of their inputs
# Containerd and runc come from Debian's packages (make conformance-deps).
# Progress goes to stderr; stdout gets shell assignments for the other scripts:
#   K8S_BIN=... CNI_BIN=... COREDNS_BIN=... IMAGES=...
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/env.sh"
export GOFLAGS=-mod=mod CGO_ENABLED=0

K8S_BIN=$("$REPO/e2e/tools/build-k8s.sh" kubelet kube-controller-manager kube-scheduler agnhost e2e.test | tail -1)
CNI_BIN=$("$REPO/datapath/cni/build-plugins.sh" | tail -1)

COREDNS_BIN=$KPROXY_CACHE/coredns-$COREDNS_VERSION/bin
if [[ ! -x $COREDNS_BIN/coredns ]]; then
  log "building CoreDNS $COREDNS_VERSION (cold: about 2 minutes)"
  mod=$KPROXY_CACHE/coredns-$COREDNS_VERSION/mod; rm -rf "$mod"; mkdir -p "$mod" "$COREDNS_BIN"
  printf 'module kproxy.local/coredns\n\ngo 1.26.0\n\nrequire github.com/coredns/coredns %s\n' "$COREDNS_VERSION" > "$mod/go.mod"
  s=$SECONDS
  (cd "$mod" && GOCACHE=$KPROXY_CACHE/gocache-k8s go build -trimpath -ldflags '-s -w' -o "$COREDNS_BIN/coredns.tmp" github.com/coredns/coredns)
  mv "$COREDNS_BIN/coredns.tmp" "$COREDNS_BIN/coredns"
  log "CoreDNS built in $((SECONDS - s))s"
fi

# ---- images ----
# One root file system serves agnhost, nginx and glibc-dns-testing (same layer, stored once by
# containerd): agnhost and its porter certificates, CoreDNS, Debian's tools with their shared
# libraries (the specs run OpenBSD nc, curl, dig, bash, ip, socat; GNU wget: Debian's static busybox
# wget crashes with -T), every busybox applet.
TOOLS=(/usr/bin/bash /usr/bin/nc.openbsd /usr/bin/curl /usr/bin/wget /usr/bin/dig /usr/bin/nslookup /usr/bin/host
       /usr/sbin/ip /usr/bin/ss /usr/bin/socat /usr/bin/nsenter /usr/bin/timeout /usr/bin/getent
       /lib/x86_64-linux-gnu/libnss_dns.so.2 /lib/x86_64-linux-gnu/libnss_files.so.2 /lib/x86_64-linux-gnu/libresolv.so.2)
for t in "${TOOLS[@]}" /bin/busybox; do
  [[ -e $t ]] || { echo "conformance: $t missing (make conformance-deps installs it)" >&2; exit 1; }
done
key=$( { cat "$CONF_DIR/build.sh" "$CONF_DIR"/mkimg/*.go "$CONF_DIR"/pause/*.go
         sha256sum "$K8S_BIN/agnhost" "$COREDNS_BIN/coredns" /bin/busybox "${TOOLS[@]}"; } | sha256sum | cut -c1-12)
IMAGES=$KPROXY_CACHE/conformance-images-$key
if [[ ! -f $IMAGES/done ]]; then
  log "writing the images into $IMAGES"
  s=$SECONDS
  rm -rf "$KPROXY_CACHE"/conformance-images-*; mkdir -p "$IMAGES/tools"   # one set: drop stale ones
  go build -C "$REPO" -trimpath -ldflags '-s -w' -o "$IMAGES/tools/" ./e2e/conformance/mkimg ./e2e/conformance/pause
  mkimg=$IMAGES/tools/mkimg
  r=$IMAGES/rootfs; mkdir -p "$r"/{bin,usr/bin,sbin,usr/sbin,etc,tmp,uploads}
  chmod 1777 "$r/tmp"
  for t in "${TOOLS[@]}"; do
    cp --parents -L "$t" "$r/"
    ldd "$t" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do cp --parents -L -n "$lib" "$r/"; done
  done
  ln -s nc.openbsd "$r/usr/bin/nc"
  # /bin/sh is bash: busybox's sh runs its own applets first (its nc has no -v), not the PATH's
  ln -s /usr/bin/bash "$r/bin/sh"; ln -s /usr/bin/bash "$r/bin/bash"
  cp /bin/busybox "$r/bin/busybox"
  for a in $(/bin/busybox --list); do
    [[ -e $r/bin/$a || -e $r/usr/bin/$a || -e $r/sbin/$a || -e $r/usr/sbin/$a ]] || ln -s busybox "$r/bin/$a"
  done
  cp "$K8S_BIN/agnhost" "$r/agnhost"; ln -s agnhost "$r/agnhost-2"
  cp "$COREDNS_BIN/coredns" "$r/coredns"
  agsrc=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')/test/images/agnhost
  cp "$agsrc/porter/localhost.crt" "$agsrc/porter/localhost.key" "$r/"
  chmod 0644 "$r/localhost.crt" "$r/localhost.key"
  # the users and groups of upstream's alpine-based agnhost image
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nuser-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\n' > "$r/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\nuser-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n' > "$r/etc/group"
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$r/etc/nsswitch.conf"
  "$mkimg" -name "$AGNHOST_IMAGE" -o "$IMAGES/agnhost.tar" -entrypoint /agnhost -cmd pause -rootfs "$r" >&2
  "$mkimg" -name "$NGINX_IMAGE" -o "$IMAGES/nginx.tar" -entrypoint /agnhost -cmd "netexec --http-port=80 --udp-port=-1" -rootfs "$r" >&2
  "$mkimg" -name "$GLIBC_DNS_IMAGE" -o "$IMAGES/glibc-dns-testing.tar" -cmd /bin/sh -rootfs "$r" >&2
  b=$IMAGES/busybox-rootfs; mkdir -p "$b/bin"; cp /bin/busybox "$b/bin/busybox"
  for a in $(/bin/busybox --list); do [[ -e $b/bin/$a ]] || ln -s busybox "$b/bin/$a"; done
  "$mkimg" -name "$BUSYBOX_IMAGE" -o "$IMAGES/busybox.tar" -cmd sh -rootfs "$b" >&2
  "$mkimg" -name "$PAUSE_IMAGE" -o "$IMAGES/pause.tar" -entrypoint /pause "$IMAGES/tools/pause:/pause" >&2
  rm -rf "$r" "$b"
  touch "$IMAGES/done"
  log "images written in $((SECONDS - s))s ($(du -sh "$IMAGES" | cut -f1))"
fi
printf 'K8S_BIN=%s\nCNI_BIN=%s\nCOREDNS_BIN=%s\nIMAGES=%s\n' "$K8S_BIN" "$CNI_BIN" "$COREDNS_BIN" "$IMAGES"
