#!/usr/bin/env bash
# Runs the upstream e2e.test (same Kubernetes version as the nodes) against the running
# cluster, from inside the fabric namespace (it reaches node IPs directly, as a test runner in
# a real cluster's network), minus the specs of skip.txt.
#
# Usage: run.sh full|quick|vm OUTDIR
#   full   [sig-network] Services specs and every [sig-network] ... [Conformance] spec
#   quick  [sig-network] Services ... [Conformance] specs only
#   vm     four of those, each sending traffic through the proxy (what fits the IPVS VM)
# Writes OUTDIR/junit_01.xml (Ginkgo's JUnit report) and OUTDIR/e2e.log. Exit status: e2e.test's.
# KPC_FOCUS / KPC_SKIP (regular expressions) replace the focus / add to the skip list.
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/env.sh"
SET=${1:?usage: run.sh full|quick|vm OUTDIR} OUT=${2:?usage: run.sh full|quick|vm OUTDIR}
RUN=$STATE/run
K8S_BIN=$(cat "$RUN/k8s-bin")
case $SET in
  full) focus='\[sig-network\] Services |\[sig-network\] .*\[Conformance\]' ;;
  quick) focus='\[sig-network\] Services .*\[Conformance\]' ;;
  vm) # the IPVS VM's subset (README, "IPVS mode"): four Services [Conformance] specs with traffic
      focus='\[sig-network\] Services should (be able to create a functioning NodePort service|be able to change the type from ExternalName to NodePort|serve endpoints on same port and different protocols|have session affinity work for service with type clusterIP) .*\[Conformance\]' ;;
  *) echo "run.sh: unknown set $SET" >&2; exit 64 ;;
esac
focus=${KPC_FOCUS:-$focus}
skip=$(sed -e 's/^[[:space:]]*#.*//' -e 's/[[:space:]]*#[[:space:]].*$//' -e '/^[[:space:]]*$/d' "$CONF_DIR/skip.txt" | paste -sd'|')
skip=$skip${KPC_SKIP:+|$KPC_SKIP}
mkdir -p "$OUT"
rm -f "$OUT"/junit_*.xml
log "e2e.test ($SET) → $OUT"
s=$SECONDS
rc=0
inns "$FAB" "$K8S_BIN/e2e.test" --kubeconfig="$RUN/admin.kubeconfig" --provider=skeleton \
  --kubectl-path="$K8S_BIN/kubectl" \
  --report-dir="$OUT" --ginkgo.focus="$focus" --ginkgo.skip="$skip" --ginkgo.timeout=2h \
  --ginkgo.no-color --ginkgo.v --dump-logs-on-failure=false --disable-log-dump \
  ${KPC_E2E_ARGS:-} > "$OUT/e2e.log" 2>&1 || rc=$?
grep -E '^(Ran [0-9]+ of|FAIL!|SUCCESS!)' "$OUT/e2e.log" >&2 || true
log "e2e.test ($SET) done in $((SECONDS - s))s, exit $rc"
exit $rc
