#!/usr/bin/env bash
# e2e/vm/ipvs-e2e.sh: kproxy inside the IPVS test VM, fed by a real kube-apiserver + etcd on
# the host (harness prefix kpvm<pid>, no proxy on the host), with real traffic between pod
# namespaces inside the VM: the same scenarios in IPVS mode, then iptables mode, then IPVS
# again (mode switches), plus the IPVS-only checks, restart, tampering and --cleanup. The VM
# reaches the apiserver through qemu's user network (restrict=on; guestfwd 192.0.2.100:6443
# -> socat -> the harness's API forwarder on 127.0.0.1). See e2e/vm/README.md. Needs root.
#
#   e2e/vm/ipvs-e2e.sh                 # builds static kproxy, echo and the guest test itself
#   KPVM_DYNAMIC=0 e2e/vm/ipvs-e2e.sh  # skip the endpoint add/remove made from the host mid-run
#   KPVM_MODES=ipvs e2e/vm/ipvs-e2e.sh # one mode only (default ipvs,iptables)
#   KPVM_KPROXY_ARGS='--ipvs-scheduler=wrr' e2e/vm/ipvs-e2e.sh   # extra kproxy flags in the VM
#
# Environment: KPROXY_K8S_BIN (default: e2e/tools/build-k8s.sh), KPROXY_BIN and
# KPROXY_ECHO_BIN (static binaries; default: built), KPROXY_E2E_KEEP=1, KPVM_VM_TIMEOUT (420 s),
# and run-test.sh's (VM_KEEP, KPROXY_CACHE; not VM_QUIET: the host reads the console for the
# guest's KPVM-STEP requests). Extra arguments go to go test.
set -euo pipefail
cd "$(dirname "$0")/../.."
export GOTOOLCHAIN=local
exec go test -tags 'e2e vm' -count=1 -v -timeout 10m ./e2e/vm/ipvse2e "$@"
