package iptables

// Table is an iptables table name.
type Table string

// The tables kproxy writes or reads.
const (
	TableNAT    Table = "nat"
	TableFilter Table = "filter"
	TableMangle Table = "mangle"
	TableRaw    Table = "raw"
)

// Chain is an iptables chain name.
type Chain string

// Built-in chains.
const (
	ChainPrerouting  Chain = "PREROUTING"
	ChainInput       Chain = "INPUT"
	ChainForward     Chain = "FORWARD"
	ChainOutput      Chain = "OUTPUT"
	ChainPostrouting Chain = "POSTROUTING"
)

// kube-proxy's chains, kept by name so that operators' scripts keep working.
const (
	ChainKubeServices         Chain = "KUBE-SERVICES"
	ChainKubeNodePorts        Chain = "KUBE-NODEPORTS"
	ChainKubePostrouting      Chain = "KUBE-POSTROUTING"
	ChainKubeMarkMasq         Chain = "KUBE-MARK-MASQ"
	ChainKubeForward          Chain = "KUBE-FORWARD"
	ChainKubeExternalServices Chain = "KUBE-EXTERNAL-SERVICES"
	ChainKubeProxyFirewall    Chain = "KUBE-PROXY-FIREWALL"
	ChainKubeProxyCanary      Chain = "KUBE-PROXY-CANARY"
)

// maxChainNameLen is the longest chain name the kernel accepts.
const maxChainNameLen = 28

// builtinChains lists each table's built-in chains in the order iptables-save prints them.
var builtinChains = map[Table][]Chain{
	TableFilter: {ChainInput, ChainForward, ChainOutput},
	TableNAT:    {ChainPrerouting, ChainInput, ChainOutput, ChainPostrouting},
	TableMangle: {ChainPrerouting, ChainInput, ChainForward, ChainOutput, ChainPostrouting},
	TableRaw:    {ChainPrerouting, ChainOutput},
}

// tableOrder is the order Dump prints tables in.
var tableOrder = []Table{TableFilter, TableNAT, TableMangle, TableRaw}

// IsBuiltin reports whether chain is a built-in chain of table.
func IsBuiltin(table Table, chain Chain) bool {
	for _, c := range builtinChains[table] {
		if c == chain {
			return true
		}
	}
	return false
}

// Family is the address family a set of tables filters: iptables (IPv4) or ip6tables (IPv6).
type Family uint8

// The two families.
const (
	IPv4 Family = iota
	IPv6
)

func (f Family) String() string {
	if f == IPv6 {
		return "ipv6"
	}
	return "ipv4"
}

// Protocol is a transport protocol as iptables names it ("tcp", "udp", "sctp").
type Protocol string

// The protocols services use.
const (
	ProtocolTCP  Protocol = "tcp"
	ProtocolUDP  Protocol = "udp"
	ProtocolSCTP Protocol = "sctp"
)
