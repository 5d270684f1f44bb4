#!/usr/bin/env bash
# Puts PROXY in MODE on every node of the running cluster: stops the proxy that runs now,
# removes its rules with its own --cleanup, flushes the node's conntrack table, starts PROXY,
# and waits until every node's /healthz answers 200 (the first sync is done).
#
# Usage: proxy.sh kproxy|kube-proxy|none [iptables|ipvs]
#   kproxy is $KPROXY_BIN (default bin/kproxy, `make build`); kube-proxy is the upstream one
#   of the same Kubernetes version as the nodes. Both run with the same settings: cluster CIDR
#   100.64.0.0/16, healthz 0.0.0.0:10256, metrics 127.0.0.1:10249, everything else default.
#   kube-proxy also gets --conntrack-max-per-core=0 and the two conntrack timeouts 0: they are
#   sysctls of the whole machine, not of the node's namespace.
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/env.sh"
PROXY=${1:?usage: proxy.sh kproxy|kube-proxy|none [iptables|ipvs]} MODE=${2:-iptables}
: "${KPROXY_BIN:=$REPO/bin/kproxy}"
RUN=$STATE/run
K8S_BIN=$(cat "$RUN/k8s-bin")
case $PROXY in kproxy|kube-proxy|none) ;; *) echo "proxy.sh: unknown proxy $PROXY" >&2; exit 64 ;; esac
case $MODE in iptables|ipvs) ;; *) echo "proxy.sh: unknown mode $MODE" >&2; exit 64 ;; esac
[[ $PROXY != kproxy || -x $KPROXY_BIN ]] || { echo "proxy.sh: $KPROXY_BIN missing (make build)" >&2; exit 1; }
old=$(cat "$RUN/proxy" 2>/dev/null || echo none)

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
    kproxy) inns "$ns" "$KPROXY_BIN" --cleanup >> "$STATE/log/proxy$i-cleanup.log" 2>&1 || true ;;
    kube-proxy) inns "$ns" "$K8S_BIN/kube-proxy" --cleanup >> "$STATE/log/proxy$i-cleanup.log" 2>&1 || true ;;
  esac
  inns "$ns" conntrack -F >/dev/null 2>&1 || true
done
echo none > "$RUN/proxy"
[[ $PROXY == none ]] && { log "no proxy on the nodes"; exit 0; }

s=$SECONDS
for i in $NODES; do
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
    kill -0 "$(cat "$RUN/proxy$i.pid")" 2>/dev/null || { log "$PROXY on node $i died:"; tail -20 "$STATE/log/$PROXY$i.log" >&2; exit 1; }
    (( SECONDS - s < 60 )) || { log "$PROXY on node $i: /healthz not 200 after 60s"; exit 1; }
    sleep 0.1
  done
done
echo "$PROXY" > "$RUN/proxy"
log "$PROXY ($MODE) on every node, healthy in $((SECONDS - s))s"
