# Settings of the real-node conformance tier; sourced by the scripts in this directory.
# Everything it creates is named after KPC_PREFIX, so it cannot collide with the e2e suite
# (netns kpe2e-*): netns $P-fab, $P-n1 ... $P-nN; state in $STATE.
: "${KPROXY_CACHE:=/var/cache/kproxy}"
: "${KPC_PREFIX:=kpc}"
: "${K8S_VERSION:=v1.37.2}"
: "${COREDNS_VERSION:=v1.15.0}"
: "${KPC_NODES:=3}"    # 3: "HealthCheckNodePort ... when ExternalTrafficPolicy changes" needs three
export KPROXY_CACHE K8S_VERSION GOTOOLCHAIN=local
CONF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$CONF_DIR/../.." && pwd)
P=$KPC_PREFIX
STATE=/var/lib/kproxy-conformance/$P      # certs, logs, containerd and kubelet roots (disk, not tmpfs)
FAB=$P-fab                                # netns: bridge $P-br0 192.0.2.1/24, etcd, apiserver, kcm, scheduler, CoreDNS
FAB_IP=192.0.2.1
NODES=$(seq -s ' ' 1 "$KPC_NODES")        # netns $P-n$i, Node $P-node$i, eth0 192.0.2.1$i, pods 100.64.$i.0/24 on cni0
SERVICE_CIDR=100.100.0.0/16
CLUSTER_CIDR=100.64.0.0/16
DNS_IP=100.100.0.10                       # Service kube-system/kube-dns → CoreDNS on $FAB_IP:53
APISERVER_PORT=6443
# The images e2e.test $K8S_VERSION refers to (test/utils/image/manifest.go), built here.
AGNHOST_IMAGE=registry.k8s.io/e2e-test-images/agnhost:2.66.1
PAUSE_IMAGE=registry.k8s.io/pause:3.10.2
BUSYBOX_IMAGE=registry.k8s.io/e2e-test-images/busybox:1.37.0-2
NGINX_IMAGE=registry.k8s.io/e2e-test-images/nginx:1.27.0-2
GLIBC_DNS_IMAGE=registry.k8s.io/e2e-test-images/glibc-dns-testing:2.1.1

node_ns() { echo "$P-n$1"; }
node_name() { echo "$P-node$1"; }
node_ip() { echo "192.0.2.1$1"; }
# inns runs a command in a network namespace only. Not `ip netns exec`: that also unshares the
# mount namespace, and containerd's and the kubelet's mounts must live in the host's.
inns() { local ns=$1; shift; nsenter --net="/run/netns/$ns" "$@"; }
log() { printf '%s conformance: %s\n' "$(date +%T)" "$*" >&2; }
