#!/usr/bin/env bash
# make demo: a two-node sandbox (network namespaces, real kube-apiserver + etcd) with kproxy on
# both nodes, a ClusterIP Service whose endpoints are the pod on node 1 and the pod on node 2,
# and requests from the pod on node 2 until one lands on the pod on node 1 (cross-node).
# Expects `make build` (bin/kproxy, bin/echo, bin/sandbox) and e2e/tools/build-k8s.sh to have run.
#   KPROXY_DEMO_PROXY=kube-proxy hack/demo.sh   runs upstream kube-proxy instead, for comparison
#   KPROXY_DEMO_DATAPATH=host-gw hack/demo.sh   the pod network between the nodes (kproxy only;
#                                               default vxlan; none = static routes)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${KPROXY_DEMO_BIN:-$ROOT/bin}   # where make build put kproxy, echo and sandbox
PREFIX=kpdemo
PROXY=${KPROXY_DEMO_PROXY:-kproxy}
DATAPATH=${KPROXY_DEMO_DATAPATH:-vxlan}
[[ $PROXY == kproxy ]] || DATAPATH=none   # upstream kube-proxy has no pod network: static routes
DP_ARGS=()
[[ $DATAPATH == none ]] || DP_ARGS=(--datapath "$DATAPATH")

[[ $(id -u) == 0 ]] || { echo "demo: run as root (it creates network namespaces)"; exit 1; }
for b in sandbox echo; do
  [[ -x $BIN/$b ]] || { echo "demo: $BIN/$b missing: run make build"; exit 1; }
done
K8S_BIN=${KPROXY_K8S_BIN:-$("$ROOT/e2e/tools/build-k8s.sh" | tail -1)}

echo "== sandbox: 2 nodes, 1 pod each, $PROXY on every node, pod network between the nodes: $DATAPATH"
"$BIN/sandbox" up --prefix "$PREFIX" --nodes 2 --pods-per-node 1 --proxy "$PROXY" "${DP_ARGS[@]}" \
  --k8s-bin "$K8S_BIN" --kproxy-bin "$BIN/kproxy" --echo-bin "$BIN/echo"
KCFG=$("$BIN/sandbox" kubeconfig --prefix "$PREFIX")
kubectl() { "$K8S_BIN/kubectl" --kubeconfig "$KCFG" "$@"; }
trap 'echo; echo "demo: failed; the sandbox is left for a look (logs in /run/kproxy-e2e/$PREFIX/logs); make demo-down removes it"' ERR

N1_POD=$PREFIX-n1-p1 N1_IP=100.64.1.11
N2_POD=$PREFIX-n2-p1 N2_IP=100.64.2.11
echo
echo "== Service demo/echo (ClusterIP, port 80 -> 8080) with endpoints $N1_POD ($N1_IP) and $N2_POD ($N2_IP)"
kubectl create namespace demo >/dev/null
kubectl apply -f - <<EOF
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: demo}
spec:
  type: ClusterIP
  ports: [{name: tcp, protocol: TCP, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-demo
  namespace: demo
  labels: {kubernetes.io/service-name: echo, endpointslice.kubernetes.io/managed-by: e2e.kproxy.io}
addressType: IPv4
ports: [{name: tcp, protocol: TCP, port: 8080}]
endpoints:
- {addresses: ["$N1_IP"], conditions: {ready: true}, nodeName: $PREFIX-n1, zone: zone-1}
- {addresses: ["$N2_IP"], conditions: {ready: true}, nodeName: $PREFIX-n2, zone: zone-2}
EOF
CIP=$(kubectl -n demo get service echo -o jsonpath='{.spec.clusterIP}')
request() { nsenter --net="/run/netns/$N2_POD" "$BIN/echo" client --tcp "$CIP:80" --timeout 1s 2>&1; }

echo
echo "== waiting for $CIP:80 to be programmed (requests from $N2_POD)"
start=${EPOCHREALTIME/./}
for ((i = 0; ; i++)); do
  if out=$(request); then break; fi
  ((i < 100)) || { echo "demo: $CIP:80 not reachable after 100 tries: $out"; false; }
  sleep 0.2
done
ms=$(( (${EPOCHREALTIME/./} - start) / 1000 ))
echo "programmed: first reply after ${ms} ms"

echo
echo "== requests from pod $N2_POD (node 2, $N2_IP) to $CIP:80 until the pod on node 1 answers"
for ((i = 1; i <= 50; i++)); do
  out=$(request) || { echo "demo: request failed: $out"; false; }
  echo "  $N2_POD -> $CIP:80  =>  $out"
  if [[ $out == "name=$N1_POD "* ]]; then
    echo "cross-node: $N2_POD (node 2) -> ClusterIP $CIP -> $N1_POD (node 1)"
    [[ $out != *" client=$N2_IP:"* ]] || echo "the backend saw the client pod's own IP ($N2_IP): no masquerade for pod traffic"
    break
  fi
  ((i < 50)) || { echo "demo: $N1_POD never answered in 50 requests"; false; }
done
trap - ERR

cat <<EOF

== look around
  $K8S_BIN/kubectl --kubeconfig $KCFG get nodes,services,endpointslices -A
  nsenter --net=/run/netns/$PREFIX-n1 iptables-save -t nat | grep KUBE
  nsenter --net=/run/netns/$PREFIX-n1 curl -s 127.0.0.1:10249/metrics | grep kubeproxy_
  nsenter --net=/run/netns/$PREFIX-n1 ip -d link show kproxy.1; ip -n $PREFIX-n1 route; bridge -n $PREFIX-n1 fdb show dev kproxy.1   # the vxlan datapath
  nsenter --net=/run/netns/$N2_POD curl -s $CIP           # the echo server also speaks HTTP
  ls /run/kproxy-e2e/$PREFIX/logs/                        # proxy, apiserver, etcd, echo logs
  make demo-down                                          # removes everything
EOF
