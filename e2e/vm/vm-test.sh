#!/usr/bin/env bash
# e2e/vm/vm-test.sh: the IPVS VM tier. Builds the in-VM test binaries (static) and runs
# each in its own VM boot through run-test.sh:
#   - e2e/vm/smoke (tag vm): dummy kube-ipvs0 + IPVS + real TCP across namespaces;
#   - ipset (tag netns): the ipset contract tests on Debian's kernel;
#   - ipvs/vmtest (tag vm): the IPVS mode's Proxier against the real kernel, with real TCP;
#   - datapath (tag netns): pod-to-pod traffic over vxlan, direct routing, host-gw and ipip
#     (the host kernel has no ipip device, Debian's has).
# Exit status: 0 when all pass, else the first failure's. Extra arguments go to every
# test binary (e.g. -test.run Contract). Needs root.
set -euo pipefail
cd "$(dirname "$0")/../.."
export GOTOOLCHAIN=local CGO_ENABLED=0
OUT=$(mktemp -d /tmp/kproxy-vm-bin.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
t=$SECONDS
go test -c -tags vm -o "$OUT/smoke.test" ./e2e/vm/smoke
go test -c -tags netns -o "$OUT/ipset.test" ./ipset
go test -c -tags vm -o "$OUT/ipvs.test" ./ipvs/vmtest
go test -c -tags netns -o "$OUT/datapath.test" ./datapath
echo "vm-test: test binaries built in $((SECONDS - t))s" >&2
rc=0
for b in smoke ipset ipvs datapath; do
  extra=()
  # The datapath's pod-to-pod test over every backend: the host kernel has no ipip.
  [ "$b" = datapath ] && extra=(-test.run TestBackendsPodToPod)
  e2e/vm/run-test.sh "$OUT/$b.test" -test.v -test.count=1 "${extra[@]}" "$@" || {
    r=$?
    echo "vm-test: $b FAILED (exit $r)" >&2
    [ $rc -ne 0 ] || rc=$r
  }
done
[ $rc -eq 0 ] && echo "vm-test: PASS" >&2
exit $rc
