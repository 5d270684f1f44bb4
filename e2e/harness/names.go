package harness

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
)

// Prefixes of the two users of the harness.
const (
	PrefixTest = "kpe2e"
	PrefixDemo = "kpdemo"
)

// The fixed parts of the IP plan (TESTING.md).
var (
	FabricIP    = netip.MustParseAddr("192.0.2.1")
	FabricCIDR  = netip.MustParsePrefix("192.0.2.0/24")
	ClusterCIDR = netip.MustParsePrefix("100.64.0.0/16")
	ServiceCIDR = netip.MustParsePrefix("100.100.0.0/16")
	// KubernetesServiceIP is the first address of ServiceCIDR, the default/kubernetes Service.
	KubernetesServiceIP = netip.MustParseAddr("100.100.0.1")
	// ServiceCIDR6 is the IPv6 service range, given to the apiserver only with
	// Options.DualStack.
	ServiceCIDR6 = netip.MustParsePrefix("2001:db8:2::/112")
)

// Ports used inside the namespaces (every namespace has its own port space).
const (
	APIServerPort  = 6443
	EtcdClientPort = 2379
	EtcdPeerPort   = 2380
	HealthzPort    = 10256
	MetricsPort    = 10249
	EchoPort       = 8080
)

const (
	stateRoot  = "/run/kproxy-e2e"
	shmRoot    = "/dev/shm"
	netnsDir   = "/run/netns"
	fabBridge  = "kpbr0"
	nodeBridge = "cni0"
	maxNodes   = 50
	maxPods    = 200
)

var prefixRE = regexp.MustCompile(`^[a-z][a-z0-9]{1,11}$`)

// ValidatePrefix accepts short lowercase names: they become netns names, file names and
// Kubernetes object names.
func ValidatePrefix(prefix string) error {
	if !prefixRE.MatchString(prefix) {
		return fmt.Errorf("prefix %q: want 2-12 lowercase letters or digits, starting with a letter", prefix)
	}
	return nil
}

// StateDir is where a run keeps pid files, logs, certificates and kubeconfigs.
func StateDir(prefix string) string { return filepath.Join(stateRoot, prefix) }

// etcdDir is etcd's data directory (tmpfs).
func etcdDir(prefix string) string { return filepath.Join(shmRoot, "kproxy-e2e-"+prefix) }

// AdminKubeconfig is the admin kubeconfig that works from the root namespace (through the
// forwarder on 127.0.0.1).
func AdminKubeconfig(prefix string) string {
	return filepath.Join(StateDir(prefix), "admin.kubeconfig")
}

// FabricKubeconfig is the admin kubeconfig that works inside the fabric and node namespaces
// (server https://192.0.2.1:6443).
func FabricKubeconfig(prefix string) string {
	return filepath.Join(StateDir(prefix), "admin-fabric.kubeconfig")
}

// FabricNetns is the name of the fabric namespace (bridge, etcd, apiserver).
func FabricNetns(prefix string) string { return prefix + "-fab" }

func fabName(prefix string) string { return FabricNetns(prefix) }

// NetnsPath is the bind mount of a named network namespace.
func NetnsPath(name string) string { return filepath.Join(netnsDir, name) }

func nodeName(prefix string, i int) string   { return fmt.Sprintf("%s-n%d", prefix, i) }
func podName(prefix string, i, j int) string { return fmt.Sprintf("%s-n%d-p%d", prefix, i, j) }
func nodeIP(i int) netip.Addr                { return netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)}) }
func podCIDR(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, byte(i), 0}), 24)
}
func podGateway(i int) netip.Addr                 { return netip.AddrFrom4([4]byte{100, 64, byte(i), 1}) }
func podIP(i, j int) netip.Addr                   { return netip.AddrFrom4([4]byte{100, 64, byte(i), byte(10 + j)}) }
func zoneName(i int) string                       { return fmt.Sprintf("zone-%d", i) }
func prefixLen(p netip.Prefix) string             { return fmt.Sprintf("%d", p.Bits()) }
func withLen(a netip.Addr, p netip.Prefix) string { return a.String() + "/" + prefixLen(p) }

// The external client's addresses (see external.go): it hangs off the fabric bridge with
// ExternalLinkIP, and sends from ExternalClientIP (or ExternalClientIP2, to test source
// ranges).
var (
	ExternalLinkIP    = netip.MustParseAddr("192.0.2.100")
	ExternalClientIP  = netip.MustParseAddr("198.51.100.10")
	ExternalClientIP2 = netip.MustParseAddr("198.51.100.11")
	// ExternalClientCIDR (external clients and LB ingress IPs) and ExternalIPCIDR
	// (Service externalIPs) are routed from every node to the external namespace.
	ExternalClientCIDR = netip.MustParsePrefix("198.51.100.0/24")
	ExternalIPCIDR     = netip.MustParsePrefix("203.0.113.0/24")
)

// Per-node blocks of LoadBalancer ingress IPs and externalIPs that the external namespace routes
// to node i (a stand-in for a cloud load balancer or a router sending a VIP to one node).
const (
	maxLBNodes         = 7  // 198.51.100.(128+16i)/28 stays inside the /24
	maxExternalIPNodes = 15 // 203.0.113.(16i)/28
)

// ExternalNetns is the name of the external client namespace.
func ExternalNetns(prefix string) string { return prefix + "-ext" }

// LoadBalancerIP is address k (1-14) of node i's LoadBalancer block 198.51.100.(128+16i)/28:
// the external namespace sends it to node i (i ≤ 7).
func LoadBalancerIP(i, k int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 51, 100, byte(128 + 16*i + k)})
}

// ExternalIP is address k (1-14) of node i's externalIPs block 203.0.113.(16i)/28: the
// external namespace sends it to node i (i ≤ 15).
func ExternalIP(i, k int) netip.Addr { return netip.AddrFrom4([4]byte{203, 0, 113, byte(16*i + k)}) }

func lbBlock(i int) netip.Prefix  { return netip.PrefixFrom(LoadBalancerIP(i, 0), 28) }
func extBlock(i int) netip.Prefix { return netip.PrefixFrom(ExternalIP(i, 0), 28) }
