#!/usr/bin/env bash
# Builds kube-apiserver, kube-proxy, kubectl (from the k8s.io/kubernetes module) and etcd
# (from go.etcd.io/etcd/server/v3) of one pinned version into a version-keyed cache:
#   $KPROXY_CACHE/k8s-$K8S_VERSION-etcd-$ETCD_VER/bin/{kube-apiserver,kube-proxy,kubectl,etcd}
# Extra binaries of the same Kubernetes version, named as arguments, go to the same directory
# (the real-node conformance tier asks for them):
#   kubelet kube-controller-manager kube-scheduler   (cmd/...)
#   e2e.test                                          (go test -c k8s.io/kubernetes/test/e2e)
#   agnhost                                           (test/images/agnhost, static, for an image)
# Skips every binary that is already there. Prints progress on stderr and the bin directory on
# its last line of stdout.
#
# Why a scratch module: k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces
# them with ./staging/src/...; a dependency's replaces are ignored, so `go install` cannot work.
# We generate a module that replaces each staging module with its published v0.M.P tag.
set -euo pipefail
: "${KPROXY_CACHE:=/var/cache/kproxy}"
: "${K8S_VERSION:=v1.37.2}"
: "${KPROXY_ETCD_VERSION:=v3.7.3}"   # not ETCD_*: etcd reads ETCD_* variables as flags
OUT=$KPROXY_CACHE/k8s-$K8S_VERSION-etcd-$KPROXY_ETCD_VERSION
BIN=$OUT/bin
mkdir -p "$BIN"
export GOCACHE=$KPROXY_CACHE/gocache-k8s GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local

# pkgpath prints the import path a binary is built from.
pkgpath() {
  case $1 in
    kube-apiserver|kube-proxy|kubectl|kubelet|kube-controller-manager|kube-scheduler) echo "k8s.io/kubernetes/cmd/$1" ;;
    e2e.test) echo k8s.io/kubernetes/test/e2e ;;
    agnhost) echo k8s.io/kubernetes/test/images/agnhost ;;
    *) echo "build-k8s: unknown binary $1" >&2; return 1 ;;
  esac
}

want=()
for b in kube-apiserver kube-proxy kubectl "$@"; do
  pkgpath "$b" >/dev/null
  [[ -x $BIN/$b ]] || want+=("$b")
done
if [[ ${#want[@]} -gt 0 ]]; then
  echo "build-k8s: building ${want[*]} $K8S_VERSION (cold: about 5 minutes on 2 cores for the first, e2e.test 3 more)" >&2
  MOD=$OUT/k8smod; rm -rf "$MOD"; mkdir -p "$MOD"
  KMOD=$(cd / && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  minorpatch=${K8S_VERSION#v1.}
  staging=v0.$minorpatch
  gover=$(awk '$1=="go"{print $2; exit}' "$KMOD")
  {
    printf 'module kproxy.local/k8sbins\n\ngo %s\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$gover" "$K8S_VERSION"
    for m in $(awk '$2=="=>" && $3 ~ /^\.\/staging\/src\//{print $1}' "$KMOD"); do
      if (cd / && go list -m -versions "$m" 2>/dev/null) | tr ' ' '\n' | grep -qx "$staging"; then
        printf '\t%s => %s %s\n' "$m" "$m" "$staging"
      fi
    done
    printf ')\n'
  } > "$MOD/go.mod.tmp"
  mv "$MOD/go.mod.tmp" "$MOD/go.mod"
  ldx=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldx+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minorpatch%%.*}"
    ldx+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit=0000000000000000000000000000000000000000"
  done
  for b in "${want[@]}"; do
    s=$SECONDS
    if [[ $b == e2e.test ]]; then
      (cd "$MOD" && go test -c -trimpath -ldflags "-s -w$ldx" -o "$BIN/$b.tmp" "$(pkgpath "$b")")
    else
      (cd "$MOD" && go build -trimpath -ldflags "-s -w$ldx" -o "$BIN/$b.tmp" "$(pkgpath "$b")")
    fi
    mv "$BIN/$b.tmp" "$BIN/$b"
    echo "build-k8s: $b built in $((SECONDS - s))s" >&2
  done
fi
if [[ ! -x $BIN/etcd ]]; then
  echo "build-k8s: building etcd $KPROXY_ETCD_VERSION" >&2
  MOD=$OUT/etcdmod; rm -rf "$MOD"; mkdir -p "$MOD"
  printf 'module kproxy.local/etcdbin\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$KPROXY_ETCD_VERSION" > "$MOD/go.mod"
  s=$SECONDS
  (cd "$MOD" && go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$BIN/etcd.tmp" "$BIN/etcd"
  echo "build-k8s: etcd built in $((SECONDS - s))s" >&2
fi
echo "$BIN"
