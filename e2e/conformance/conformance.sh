#!/usr/bin/env bash
# make conformance: builds what is missing, brings up real nodes (up.sh), runs the upstream
# sig-network specs (run.sh) with kproxy and then with upstream kube-proxy in the same mode on
# the same nodes (proxy.sh switches), prints the table (report) and tears everything down
# (down.sh), on failure and on Ctrl-C too.
#
# Usage: conformance.sh [--mode iptables|ipvs] [--set full|quick|vm] [--proxies "kproxy kube-proxy"]
#   --mode ipvs on a kernel without IPVS (this host's) runs the tier inside e2e/vm's qemu VM
#   (vm/vm.sh), the set vm unless told otherwise (README, "IPVS mode").
# Results: e2e/conformance/results/<mode>-<set>-<time>/{<proxy>/junit_01.xml,<proxy>/e2e.log,
#          table.md, logs/} and results/latest → it. Exit status 1 when kproxy failed a spec
#          the other proxies passed (or, run alone, any spec). KPC_KEEP=1 leaves the cluster up.
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/env.sh"
MODE=iptables SET=full PROXIES="kproxy kube-proxy"
while [[ $# -gt 0 ]]; do
  case $1 in
    --mode) MODE=$2; shift 2 ;;
    --set) SET=$2; shift 2 ;;
    --proxies) PROXIES=$2; shift 2 ;;
    *) echo "usage: $0 [--mode iptables|ipvs] [--set full|quick|vm] [--proxies \"kproxy kube-proxy\"]" >&2; exit 64 ;;
  esac
done
VM=
if [[ $MODE == ipvs ]] && ! grep -q ip_vs /proc/modules 2>/dev/null && [[ ! -d /proc/sys/net/ipv4/vs ]]; then
  # this kernel has no IPVS: the whole tier runs inside e2e/vm's qemu VM (vm/vm.sh, README "IPVS mode")
  VM=1
  if [[ $SET == full && -z ${KPC_VM_FULL:-} ]]; then
    log "IPVS in the VM: the full set does not fit (README, \"IPVS mode\"): running set vm (KPC_VM_FULL=1 insists)"
    SET=vm
  fi
fi
# deploy/'s DaemonSet needs pod tokens: the ServiceAccount admission plugin on (up.sh)
[[ " $PROXIES " == *" kproxy-daemonset "* ]] && export KPC_SA_ADMISSION=1
T0=$SECONDS
RESULTS=$CONF_DIR/results/$MODE-$SET-$(date +%Y%m%d-%H%M%S)
mkdir -p "$RESULTS"
ln -sfn "$(basename "$RESULTS")" "$CONF_DIR/results/latest"
finish() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -z $VM ]]; then
    mkdir -p "$RESULTS/logs"; cp -r "$STATE/log/." "$RESULTS/logs/" 2>/dev/null || true
    if [[ -z ${KPC_KEEP:-} ]]; then "$CONF_DIR/down.sh" || true; else log "KPC_KEEP: the cluster stays up; remove it with $CONF_DIR/down.sh"; fi
  fi
  log "total $((SECONDS - T0))s; results in $RESULTS"
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

cols=()
if [[ -n $VM ]]; then
  # everything of the tier lives in the VM and ends with it: no down.sh on this host
  "$CONF_DIR/vm/vm.sh" --mode "$MODE" --set "$SET" --proxies "$PROXIES" --out "$RESULTS" || true
  for p in $PROXIES; do cols+=("$p=$RESULTS/$p/junit_01.xml"); done
else
  "$CONF_DIR/down.sh"          # what a killed earlier run left
  "$CONF_DIR/up.sh" --proxy none
  for p in $PROXIES; do
    "$CONF_DIR/proxy.sh" "$p" "$MODE"
    "$CONF_DIR/run.sh" "$SET" "$RESULTS/$p" || true
    cols+=("$p=$RESULTS/$p/junit_01.xml")
  done
fi
go run -C "$REPO" ./e2e/conformance/report -o "$RESULTS/table.md" "${cols[@]}"
