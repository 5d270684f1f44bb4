#!/usr/bin/env bash
# Builds the upstream CNI plugins kproxy's conflist chains (bridge, host-local, portmap) and
# loopback, from github.com/containernetworking/plugins at one pinned version, through the Go
# module proxy, into a version-keyed cache:
#   $KPROXY_CACHE/cni-plugins-$CNI_PLUGINS_VERSION/bin/{bridge,host-local,portmap,loopback}
# Skips every plugin already there. With a directory argument, also copies the plugins into it
# (e.g. /opt/cni/bin, kproxy's --cni-bin-dir default), again skipping what is present.
# Prints the bin directory on its last line.
#
# Why a scratch module: the plugins are not in kproxy's go.mod (kproxy execs them, it does not
# link them), and `go install pkg@version` would resolve each plugin on its own. One scratch
# module pins one version for all four and lets `go build` share the build cache.
set -euo pipefail
: "${KPROXY_CACHE:=/var/cache/kproxy}"
: "${CNI_PLUGINS_VERSION:=v1.9.1}"
MODPATH=github.com/containernetworking/plugins
OUT=$KPROXY_CACHE/cni-plugins-$CNI_PLUGINS_VERSION
BIN=$OUT/bin
DEST=${1:-}
mkdir -p "$BIN"
export GOCACHE=$KPROXY_CACHE/gocache-cni GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local

declare -A pkg=(
  [bridge]=plugins/main/bridge
  [host-local]=plugins/ipam/host-local
  [portmap]=plugins/meta/portmap
  [loopback]=plugins/main/loopback
)

want=()
for b in bridge host-local portmap loopback; do [[ -x $BIN/$b ]] || want+=("$b"); done
if [[ ${#want[@]} -gt 0 ]]; then
  # The module and version must be served by the configured proxy; fail with a clear message.
  if ! (cd / && go list -m -versions "$MODPATH" 2>/dev/null) | tr ' ' '\n' | grep -qx "$CNI_PLUGINS_VERSION"; then
    echo "build-plugins: $MODPATH $CNI_PLUGINS_VERSION is not served by GOPROXY=$(go env GOPROXY)" >&2
    exit 1
  fi
  echo "build-plugins: building ${want[*]} $CNI_PLUGINS_VERSION" >&2
  MOD=$OUT/mod; rm -rf "$MOD"; mkdir -p "$MOD"
  PMOD=$(cd / && go mod download -json "$MODPATH@$CNI_PLUGINS_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  gover=$(awk '$1=="go"{print $2; exit}' "$PMOD")
  printf 'module kproxy.local/cniplugins\n\ngo %s\n\nrequire %s %s\n' "$gover" "$MODPATH" "$CNI_PLUGINS_VERSION" > "$MOD/go.mod"
  for b in "${want[@]}"; do
    s=$SECONDS
    (cd "$MOD" && go build -trimpath \
      -ldflags "-s -w -X $MODPATH/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" \
      -o "$BIN/$b.tmp" "$MODPATH/${pkg[$b]}")
    mv "$BIN/$b.tmp" "$BIN/$b"
    echo "build-plugins: $b built in $((SECONDS - s))s" >&2
  done
fi
if [[ -n $DEST ]]; then
  mkdir -p "$DEST"
  for b in bridge host-local portmap loopback; do
    [[ -x $DEST/$b ]] || install -m 0755 "$BIN/$b" "$DEST/$b"
  done
fi
echo "$BIN"
