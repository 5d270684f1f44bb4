#!/usr/bin/env bash
# Brings up real Kubernetes nodes (KPC_NODES, default 3; two drawn) on this machine, offline, in
# network namespaces:
#
#  netns $P-fab   bridge $P-br0 192.0.2.1/24 · etcd 127.0.0.1:2379 · kube-apiserver 0.0.0.0:6443
#                 (advertises 192.0.2.1: the `kubernetes` Service has that endpoint) · kube-controller-
#                 manager · kube-scheduler · CoreDNS 192.0.2.1:53 (Service kube-system/kube-dns
#                 100.100.0.10) · routes 100.64.i.0/24 via 192.0.2.1i · unreachable 100.100.0.0/16
#     | veth $P-v1                         | veth $P-v2
#  netns $P-n1  eth0 192.0.2.11/24       netns $P-n2  eth0 192.0.2.12/24
#    containerd + kubelet $P-node1         containerd + kubelet $P-node2
#    pods 100.64.1.0/24 on cni0            pods 100.64.2.0/24 on cni0   (CNI bridge + host-local)
#    100.64.2.0/24 via 192.0.2.12          100.64.1.0/24 via 192.0.2.11
#    100.100.0.0/16 via 192.0.2.1          100.100.0.0/16 via 192.0.2.1
#    the proxy: kproxy or kube-proxy       (proxy.sh switches it)
#
# Guards: no namespace we create has a default route; containerd's registry configuration sends
# every pull to http://127.0.0.1:1 (dead); the root namespace gets `unreachable 100.100.0.0/16`
# (removed by down.sh if we added it); the apiserver reaches kubelets by InternalIP only (never
# DNS); the sysctls the kubelet rewrites (kernel.panic, kernel.panic_on_oops,
# vm.overcommit_memory) are saved first and restored once the kubelets run, and again by down.sh.
# On any failure up.sh runs down.sh (KPC_KEEP=1 keeps the wreck for a look).
#
# Usage: up.sh [--proxy kproxy|kube-proxy|none] [--mode iptables|ipvs]
# Needs: build.sh's outputs, bin/kproxy, containerd and runc (make conformance-deps). Root.
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/env.sh"
PROXY=kproxy MODE=iptables
while [[ $# -gt 0 ]]; do
  case $1 in
    --proxy) PROXY=$2; shift 2 ;;
    --mode) MODE=$2; shift 2 ;;
    *) echo "usage: $0 [--proxy kproxy|kube-proxy|none] [--mode iptables|ipvs]" >&2; exit 64 ;;
  esac
done
[[ $(id -u) == 0 ]] || { echo "up.sh: needs root" >&2; exit 1; }
for c in containerd runc ctr nsenter openssl curl; do
  command -v $c >/dev/null || { echo "up.sh: $c missing (make conformance-deps)" >&2; exit 1; }
done
if ip netns list | grep -qw "$FAB"; then echo "up.sh: $FAB exists: run down.sh first" >&2; exit 1; fi
# KPC_BUILT: a file with build.sh's output, written before (the IPVS VM reads the builds over 9p)
if [[ -n ${KPC_BUILT:-} ]]; then eval "$(cat "$KPC_BUILT")"; else eval "$("$CONF_DIR/build.sh")"; fi
T0=$SECONDS
on_fail() {
  local rc=$?
  [[ $rc == 0 ]] && return
  log "up failed (exit $rc); logs in $STATE/log"
  if [[ -z ${KPC_KEEP:-} ]]; then "$CONF_DIR/down.sh" >&2 || true; fi
}
trap on_fail EXIT
mkdir -p "$STATE"/{run,log,pki}
find "$STATE/log" -type f -delete
RUN=$STATE/run PKI=$STATE/pki
echo "$K8S_BIN" > "$RUN/k8s-bin"

# ---- sysctls the kubelet rewrites at start ----
[[ -f $RUN/sysctl.saved ]] || sysctl -n kernel.panic kernel.panic_on_oops vm.overcommit_memory > "$RUN/sysctl.saved"
restore_sysctls() {
  local a b c; { read -r a; read -r b; read -r c; } < "$RUN/sysctl.saved"
  sysctl -qw kernel.panic="$a" kernel.panic_on_oops="$b" vm.overcommit_memory="$c"
}

# ---- network ----
if ! ip route show table main | grep -q '^unreachable 100.100.0.0/16'; then
  ip route add unreachable "$SERVICE_CIDR"; touch "$RUN/root-unreachable-added"
fi
ip netns add "$FAB"; ip -n "$FAB" link set lo up
ip -n "$FAB" link add "$P-br0" type bridge
ip -n "$FAB" addr add "$FAB_IP/24" dev "$P-br0"; ip -n "$FAB" link set "$P-br0" up
ip -n "$FAB" route add unreachable "$SERVICE_CIDR"
for i in $NODES; do
  ns=$(node_ns "$i")
  ip netns add "$ns"; ip -n "$ns" link set lo up
  ip -n "$FAB" link add "$P-v$i" type veth peer name eth0 netns "$ns"
  ip -n "$FAB" link set "$P-v$i" master "$P-br0" up
  ip -n "$ns" addr add "$(node_ip "$i")/24" dev eth0; ip -n "$ns" link set eth0 up
  inns "$ns" sysctl -qw net.ipv4.ip_forward=1
  ip -n "$ns" route add "$SERVICE_CIDR" via "$FAB_IP"   # a ClusterIP needs a route before the proxy's DNAT
  ip -n "$FAB" route add "100.64.$i.0/24" via "$(node_ip "$i")"
  for j in $NODES; do
    [[ $j == "$i" ]] || ip -n "$ns" route add "100.64.$j.0/24" via "$(node_ip "$j")"
  done
done

# ---- certificates ----
cd "$PKI"
if [[ ! -f ca.crt ]]; then
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=kproxy-conformance-ca" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,IP:%s,IP:100.100.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n' "$FAB_IP" > san.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 3650 -extfile san.ext 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' > client.ext
fi
client() { # name CN [O]
  [[ -f $1.crt ]] && return
  openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$2${3:+/O=$3}" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 3650 -extfile client.ext 2>/dev/null
}
kubeconfig() { # name server
  cat > "$RUN/$1.kubeconfig" <<EOT
apiVersion: v1
kind: Config
clusters: [{name: $P, cluster: {server: "https://$2:$APISERVER_PORT", certificate-authority: $PKI/ca.crt}}]
users: [{name: $1, user: {client-certificate: $PKI/$1.crt, client-key: $PKI/$1.key}}]
contexts: [{name: $P, context: {cluster: $P, user: $1}}]
current-context: $P
EOT
}
client admin kproxy-conformance-admin system:masters; kubeconfig admin 127.0.0.1
client kcm system:kube-controller-manager;             kubeconfig kcm 127.0.0.1
client sched system:kube-scheduler;                    kubeconfig sched 127.0.0.1
client kube-proxy system:kube-proxy;                   kubeconfig kube-proxy "$FAB_IP"
for i in $NODES; do client "kubelet$i" "system:node:$(node_name "$i")" system:nodes; kubeconfig "kubelet$i" "$FAB_IP"; done
cd "$CONF_DIR"
K() { inns "$FAB" "$K8S_BIN/kubectl" --kubeconfig="$RUN/admin.kubeconfig" "$@"; }

# start NAME NETNS CMD...: a daemon in a network namespace (nsenter execs it: $! is the daemon)
start() {
  local name=$1 ns=$2; shift 2
  nsenter --net="/run/netns/$ns" "$@" > "$STATE/log/$name.log" 2>&1 &
  echo $! > "$RUN/$name.pid"
}
alive() { kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null || { log "$1 died:"; tail -20 "$STATE/log/$1.log" >&2; return 1; }; }

# ---- cgroups: one root per node (both kubelets share the machine's tree) ----
for i in $NODES; do
  for c in /sys/fs/cgroup/*/; do
    [[ -d $c && $c != */unified/ ]] && mkdir -p "$c$P-n$i"
  done
  if [[ -d /sys/fs/cgroup/cpuset ]]; then
    cat /sys/fs/cgroup/cpuset/cpuset.cpus > "/sys/fs/cgroup/cpuset/$P-n$i/cpuset.cpus"
    cat /sys/fs/cgroup/cpuset/cpuset.mems > "/sys/fs/cgroup/cpuset/$P-n$i/cpuset.mems"
  fi
done

# ---- registry guard: every pull goes to a dead local endpoint ----
for h in _default registry.k8s.io docker.io; do
  mkdir -p "$STATE/certs.d/$h"
  printf 'server = "http://127.0.0.1:1"\n[host."http://127.0.0.1:1"]\n  capabilities = ["pull", "resolve"]\n' > "$STATE/certs.d/$h/hosts.toml"
done

# ---- containerd per node ----
imports=()
for i in $NODES; do
  d=$STATE/n$i; rm -rf "$d/cni-data"
  mkdir -p "$d"/{containerd/root,containerd/state,runc,cni-conf,cni-data,kubelet-root,pod-logs,manifests}
  cat > "$d/containerd/config.toml" <<EOT
version = 2
root = "$d/containerd/root"
state = "$d/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$d/containerd/containerd.sock"
[ttrpc]
  address = "$d/containerd/containerd-ttrpc.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true          # root here lacks CAP_SYS_RESOURCE: runc fails otherwise
  netns_mounts_under_state_dir = true    # pod netns under our state dir: teardown knows which are ours
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$STATE/certs.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$(command -v runc)"
        Root = "$d/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$d/cni-conf"
EOT
  cat > "$d/cni-conf/10-$P.conflist" <<EOT
{"cniVersion": "1.0.0", "name": "$P-podnet", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$d/cni-data", "ranges": [[{"subnet": "100.64.$i.0/24", "gateway": "100.64.$i.1"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOT
  start "containerd$i" "$(node_ns "$i")" containerd --config "$d/containerd/config.toml"
  until ctr -a "$d/containerd/containerd.sock" version >/dev/null 2>&1; do alive "containerd$i"; sleep 0.05; done
  ( for im in ${KPC_IMAGES:-pause agnhost nginx glibc-dns-testing busybox}; do
      ctr -a "$d/containerd/containerd.sock" -n k8s.io images import "$IMAGES/$im.tar" >/dev/null
    done ) &
  imports+=($!)
done
log "containerd x$KPC_NODES up, importing images"

# ---- etcd + kube-apiserver in the fabric namespace ----
rm -rf "$STATE/etcd"
start etcd "$FAB" "$K8S_BIN/etcd" --name "$P" --data-dir "$STATE/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster "$P=http://127.0.0.1:2380" --unsafe-no-fsync --log-level warn
until inns "$FAB" curl -sf http://127.0.0.1:2379/health >/dev/null; do alive etcd; sleep 0.05; done
# ServiceAccount admission: off by default (the proxies run as processes with a kubeconfig, and
# the recorded runs were made so); on with KPC_SA_ADMISSION=1, which conformance.sh sets for
# kproxy-daemonset: deploy/'s pods reach the apiserver with their projected token, as in a cluster.
sa_admission=(--disable-admission-plugins=ServiceAccount)
[[ ${KPC_SA_ADMISSION:-0} == 1 ]] && sa_admission=()
start kube-apiserver "$FAB" "$K8S_BIN/kube-apiserver" \
  --etcd-servers=http://127.0.0.1:2379 --bind-address=0.0.0.0 --advertise-address="$FAB_IP" \
  --secure-port=$APISERVER_PORT --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" --authorization-mode=Node,RBAC \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" --service-node-port-range=30000-32767 \
  "${sa_admission[@]}" --allow-privileged=true --profiling=false \
  --kubelet-preferred-address-types=InternalIP \
  --kubelet-client-certificate="$PKI/admin.crt" --kubelet-client-key="$PKI/admin.key"
until [[ $(inns "$FAB" curl -sk --max-time 1 https://127.0.0.1:$APISERVER_PORT/readyz 2>/dev/null) == ok ]]; do alive kube-apiserver; sleep 0.1; done
until K get svc kubernetes >/dev/null 2>&1; do alive kube-apiserver; sleep 0.1; done
log "etcd + kube-apiserver ready ($((SECONDS - T0))s)"

# ---- controllers ----
start kube-controller-manager "$FAB" "$K8S_BIN/kube-controller-manager" --kubeconfig="$RUN/kcm.kubeconfig" \
  --authentication-kubeconfig="$RUN/kcm.kubeconfig" --authorization-kubeconfig="$RUN/kcm.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" --allocate-node-cidrs=false
start kube-scheduler "$FAB" "$K8S_BIN/kube-scheduler" --kubeconfig="$RUN/sched.kubeconfig" \
  --authentication-kubeconfig="$RUN/sched.kubeconfig" --authorization-kubeconfig="$RUN/sched.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false

# ---- CoreDNS in the fabric, behind the kube-dns Service (so DNS goes through the proxy) ----
cat > "$RUN/Corefile" <<EOT
.:53 {
    bind $FAB_IP
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $RUN/admin.kubeconfig $P
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
}
EOT
start coredns "$FAB" "$COREDNS_BIN/coredns" -conf "$RUN/Corefile"
K apply -f - >/dev/null <<EOT
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: $DNS_IP
  ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-coredns
  namespace: kube-system
  labels: {kubernetes.io/service-name: kube-dns, endpointslice.kubernetes.io/managed-by: conformance.kproxy.io}
addressType: IPv4
ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]
endpoints: [{addresses: ["$FAB_IP"], conditions: {ready: true}}]
EOT

# ---- kubelets ----
for pid in "${imports[@]}"; do wait "$pid"; done
log "images imported ($((SECONDS - T0))s)"
for i in $NODES; do
  d=$STATE/n$i
  cat > "$d/kubelet-config.yaml" <<EOT
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false          # this host is cgroup v1 (hybrid); 1.37 refuses v1 by default
failSwapOn: false
cgroupDriver: cgroupfs       # no systemd
cgroupRoot: /$P-n$i          # both kubelets share the host's cgroup tree
containerRuntimeEndpoint: unix://$d/containerd/containerd.sock
imageServiceEndpoint: unix://$d/containerd/containerd.sock
staticPodPath: $d/manifests
podLogsDir: $d/pod-logs
address: $(node_ip "$i")
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}, x509: {clientCAFile: $PKI/ca.crt}}
authorization: {mode: AlwaysAllow}
clusterDNS: ["$DNS_IP"]
clusterDomain: cluster.local
resolvConf: ""
serializeImagePulls: false
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
EOT
  # Every kubelet removes and binds /var/lib/kubelet/device-plugins/kubelet.sock (not under
  # --root-dir): two at once can fail with "address already in use" and exit. Start the next
  # one only once this one has bound its socket (a new inode there).
  sock=/var/lib/kubelet/device-plugins/kubelet.sock
  before=$(stat -c %i "$sock" 2>/dev/null || echo none)
  start "kubelet$i" "$(node_ns "$i")" "$K8S_BIN/kubelet" --config="$d/kubelet-config.yaml" \
    --kubeconfig="$RUN/kubelet$i.kubeconfig" --root-dir="$d/kubelet-root" --cert-dir="$d/kubelet-root/pki" \
    --hostname-override="$(node_name "$i")" --node-ip="$(node_ip "$i")" --v=2
  s=$SECONDS
  until [[ -S $sock && $(stat -c %i "$sock" 2>/dev/null) != "$before" ]] || (( SECONDS - s >= 15 )); do
    alive "kubelet$i"; sleep 0.05
  done
done
for i in $NODES; do
  until [[ $(K get node "$(node_name "$i")" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]; do
    alive "kubelet$i"; sleep 0.1
  done
done
restore_sysctls
log "nodes Ready, sysctls restored ($((SECONDS - T0))s)"

# ---- controllers ready: kcm starts its controllers ~5 s after /healthz ----
until inns "$FAB" curl -sk https://127.0.0.1:10257/healthz | grep -q ok; do alive kube-controller-manager; sleep 0.1; done
until inns "$FAB" curl -sk https://127.0.0.1:10259/healthz | grep -q ok; do alive kube-scheduler; sleep 0.1; done
until grep -q 'Starting endpoint slice controller' "$STATE/log/kube-controller-manager.log"; do alive kube-controller-manager; sleep 0.1; done
until K get serviceaccount default >/dev/null 2>&1; do sleep 0.1; done
until inns "$FAB" dig +time=1 +tries=1 @"$FAB_IP" kubernetes.default.svc.cluster.local | grep -q 'status: NOERROR'; do alive coredns; sleep 0.1; done
log "controllers, scheduler, CoreDNS ready ($((SECONDS - T0))s)"

"$CONF_DIR/proxy.sh" "$PROXY" "$MODE"
trap - EXIT
log "up in $((SECONDS - T0))s; kubectl: nsenter --net=/run/netns/$FAB $K8S_BIN/kubectl --kubeconfig=$RUN/admin.kubeconfig"
