package kstate

// Kind is the kernel interface a proxy programs, which says what to read.
type Kind string

const (
	// IPTables is read with iptables-save -t nat (whichever iptables backend is installed).
	IPTables Kind = "iptables"
	// NFTables is read with nft list table ip kube-proxy.
	NFTables Kind = "nftables"
)

// State is what one read of the node's kernel found: the endpoint DNAT targets ("ip:port")
// and the ClusterIPs that have a service rule. A read of the VIPs only leaves Endpoints nil.
type State struct {
	Endpoints map[string]bool
	VIPs      map[string]bool
}

func newState() State {
	return State{Endpoints: map[string]bool{}, VIPs: map[string]bool{}}
}

// Missing counts the VIPs and endpoints (ip:port) that st does not hold.
func Missing(st State, vips, eps []string) int {
	n := 0
	for _, v := range vips {
		if !st.VIPs[v] {
			n++
		}
	}
	for _, e := range eps {
		if !st.Endpoints[e] {
			n++
		}
	}
	return n
}
