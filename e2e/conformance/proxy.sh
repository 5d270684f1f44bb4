#!/usr/bin/env bash
# Puts PROXY in MODE on every node of the running cluster: stops the proxy that runs now,
# removes its rules with its own --cleanup, flushes the node's conntrack table, starts PROXY,
# and waits until every node's /healthz answers 200 (the first sync is done).
#
# Usage: proxy.sh kproxy|kproxy-daemonset|kube-proxy|none [iptables|ipvs]
#   kproxy is $KPROXY_BIN (default bin/kproxy, `make build`); kproxy-daemonset is the same
#   binary as an operator runs it: deploy/'s RBAC, ConfigMap and DaemonSet applied as they are
#   (only the ConfigMap's placeholder server, its mode and the cluster CIDR set), the image
#   written by kproxy-image.sh and imported into every node's containerd, the pods started by
#   the kubelets; kube-proxy is the upstream one
#   of the same Kubernetes version as the nodes. Both run with the same settings: cluster CIDR
#   100.64.0.0/16, healthz 0.0.0.0:10256, metrics 127.0.0.1:10249, everything else default.
#   kube-proxy also gets --conntrack-max-per-core=0 and the two conntrack timeouts 0: they are
#   sysctls of the whole machine, not of the node's namespace.
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/env.sh"
PROXY=${1:?usage: proxy.sh kproxy|kproxy-daemonset|kube-proxy|none [iptables|ipvs]} MODE=${2:-iptables}
: "${KPROXY_BIN:=$REPO/bin/kproxy}"
RUN=$STATE/run
K8S_BIN=$(cat "$RUN/k8s-bin")
case $PROXY in kproxy|kproxy-daemonset|kube-proxy|none) ;; *) echo "proxy.sh: unknown proxy $PROXY" >&2; exit 64 ;; esac
case $MODE in iptables|ipvs) ;; *) echo "proxy.sh: unknown mode $MODE" >&2; exit 64 ;; esac
[[ $PROXY != kproxy* || -x $KPROXY_BIN ]] || { echo "proxy.sh: $KPROXY_BIN missing (make build)" >&2; exit 1; }
old=$(cat "$RUN/proxy" 2>/dev/null || echo none)
K() { inns "$FAB" "$K8S_BIN/kubectl" --kubeconfig="$RUN/admin.kubeconfig" "$@"; }

# deploy_manifests prints deploy/'s manifests for this cluster: the apiserver's address in the
# ConfigMap's kubeconfig, MODE and the cluster CIDR in its KubeProxyConfiguration.
deploy_manifests() {
  cat "$REPO/deploy/rbac.yaml"; echo '---'
  sed -e "s|https://control-plane.invalid:6443|https://$FAB_IP:$APISERVER_PORT|" \
      -e "s|^    mode: iptables\$|    mode: $MODE|" \
      -e "s|^    clusterCIDR: .*|    clusterCIDR: $CLUSTER_CIDR|" "$REPO/deploy/configmap.yaml"; echo '---'
  cat "$REPO/deploy/daemonset.yaml"
}

if [[ $old == kproxy-daemonset ]]; then
  # the pods end (SIGTERM: kproxy leaves its rules, as kube-proxy does); --cleanup below
  K delete --ignore-not-found --wait=true -n kube-system daemonset/kproxy >/dev/null
  s=$SECONDS
  while [[ -n $(K get pods -n kube-system -l app.kubernetes.io/name=kproxy -o name 2>/dev/null) ]]; do
    (( SECONDS - s < 90 )) || { log "kproxy DaemonSet pods still there after 90s"; exit 1; }
    sleep 0.5
  done
fi

for i in $NODES; do
  ns=$(node_ns "$i") f=$RUN/proxy$i.pid
  if [[ -f $f ]]; then
    p=$(cat "$f")
    if kill -0 "$p" 2>/dev/null; then
      kill "$p"
      for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$p" 2>/dev/null || true
    fi
    rm -f "$f"
  fi
  case $old in
    kproxy|kproxy-daemonset) inns "$ns" "$KPROXY_BIN" --cleanup >> "$STATE/log/proxy$i-cleanup.log" 2>&1 || true ;;
    kube-proxy) inns "$ns" "$K8S_BIN/kube-proxy" --cleanup >> "$STATE/log/proxy$i-cleanup.log" 2>&1 || true ;;
  esac
  inns "$ns" conntrack -F >/dev/null 2>&1 || true
done
echo none > "$RUN/proxy"
[[ $PROXY == none ]] && { log "no proxy on the nodes"; exit 0; }

s=$SECONDS
if [[ $PROXY == kproxy-daemonset ]]; then
  img=$STATE/kproxy-image.tar
  KPROXY_BIN=$KPROXY_BIN "$CONF_DIR/kproxy-image.sh" "$img"
  for i in $NODES; do
    ctr -a "$STATE/n$i/containerd/containerd.sock" -n k8s.io images import "$img" >/dev/null
  done
  deploy_manifests | K apply -f - >/dev/null
  log "deploy/ applied (mode $MODE, server https://$FAB_IP:$APISERVER_PORT); waiting for the DaemonSet"
  K rollout status -n kube-system daemonset/kproxy --timeout=120s >&2 || {
    K get pods -n kube-system -l app.kubernetes.io/name=kproxy -o wide >&2 || true
    K describe pods -n kube-system -l app.kubernetes.io/name=kproxy 2>&1 | tail -40 >&2 || true
    for p in $(K get pods -n kube-system -l app.kubernetes.io/name=kproxy -o name 2>/dev/null); do K logs -n kube-system "$p" --tail=20 >&2 || true; done
    exit 1
  }
fi
for i in $NODES; do
  [[ $PROXY == kproxy-daemonset ]] && continue
  ns=$(node_ns "$i") common=(--kubeconfig="$RUN/kube-proxy.kubeconfig" --hostname-override="$(node_name "$i")"
    --cluster-cidr="$CLUSTER_CIDR" --healthz-bind-address=0.0.0.0:10256 --metrics-bind-address=127.0.0.1:10249 --v=2)
  if [[ $PROXY == kproxy ]]; then
    cmd=("$KPROXY_BIN" --mode="$MODE" "${common[@]}")
  else
    cmd=("$K8S_BIN/kube-proxy" --proxy-mode="$MODE" "${common[@]}" --conntrack-max-per-core=0
         --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0)
  fi
  nsenter --net="/run/netns/$ns" "${cmd[@]}" > "$STATE/log/$PROXY$i.log" 2>&1 &
  echo $! > "$RUN/proxy$i.pid"
done
for i in $NODES; do
  until [[ $(inns "$(node_ns "$i")" curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:10256/healthz) == 200 ]]; do
    [[ $PROXY == kproxy-daemonset ]] || kill -0 "$(cat "$RUN/proxy$i.pid")" 2>/dev/null || { log "$PROXY on node $i died:"; tail -20 "$STATE/log/$PROXY$i.log" >&2; exit 1; }
    (( SECONDS - s < 60 )) || { log "$PROXY on node $i: /healthz not 200 after 60s"; exit 1; }
    sleep 0.1
  done
done
echo "$PROXY" > "$RUN/proxy"
log "$PROXY ($MODE) on every node, healthy in $((SECONDS - s))s"
