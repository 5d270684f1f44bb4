package proxy

import (
	"iter"
	"net/netip"
	"slices"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/iptables"
)

// largeClusterEndpoints is upstream's largeClusterEndpointsThreshold: past this many endpoints
// (all service ports together) the per-endpoint rules carry no comment, which makes the
// tables up to 40% smaller.
const largeClusterEndpoints = 1000

// Input is everything Render needs: values only.
type Input struct {
	Services  endpoints.ServiceMap
	Endpoints endpoints.EndpointsMap
	Node      endpoints.NodeInfo
	Config    Config
	// NodePortIPs are the node's addresses inside Config.NodePortAddresses (the proxier
	// resolves them); unused when NodePortAddresses is empty.
	NodePortIPs []netip.Addr
}

// Rules is the desired content of every chain the iptables mode owns.
type Rules struct {
	// NAT holds the shared chains first, then each service's chains, services in name order.
	NAT    []ChainRules
	Filter []ChainRules
	// ServicePorts and Endpoints count what was rendered (service ports with a ClusterIP of
	// the proxier's family, and the endpoints they use).
	ServicePorts, Endpoints int
	// NoLocalEndpointsInternal and NoLocalEndpointsExternal count the service ports with an
	// internal (external) traffic policy of Local whose endpoints are all on other nodes:
	// kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy="internal"|"external"}.
	NoLocalEndpointsInternal, NoLocalEndpointsExternal int
	// LargeCluster is upstream's large-cluster mode: more than 1,000 endpoints, no
	// per-endpoint comments.
	LargeCluster bool
}

// ChainRules is one chain and its rules in order.
type ChainRules struct {
	Chain iptables.Chain
	ruleList
	// Service is the service a per-service chain (KUBE-SVC-, KUBE-SVL-, KUBE-EXT-, KUBE-FW-,
	// KUBE-SEP-) belongs to; zero for the shared chains.
	Service types.NamespacedName
}

// ruleList is a list of rules and, once canonicalised, their text. A port's rules in a
// shared chain are a ruleList without the chain's name: the render cache keeps six of them
// for every service port.
type ruleList struct {
	Rules []iptables.Rule
	// lines are the rules as iptables-save prints them, one per rule; nil when not
	// canonicalised (Render leaves them out, the proxier fills them in). Once a sync wrote a
	// per-service chain, the cache keeps its lines only (Rules nil, portRules.dropChainRules).
	lines []string
}

const (
	commentNodePorts = "kubernetes service nodeports; NOTE: this must be the last rule in this chain"
	commentSNAT      = "kubernetes service traffic requiring SNAT"
)

// sharedSlot is a shared chain that service ports add rules to.
type sharedSlot int

const (
	slotNATServices     sharedSlot = iota // nat KUBE-SERVICES
	slotNATNodePorts                      // nat KUBE-NODEPORTS
	slotFilterServices                    // filter KUBE-SERVICES
	slotFilterExternal                    // filter KUBE-EXTERNAL-SERVICES
	slotFilterNodePorts                   // filter KUBE-NODEPORTS
	slotFilterFirewall                    // filter KUBE-PROXY-FIREWALL
	numSharedSlots
)

var slotTables = [numSharedSlots]iptables.Table{iptables.TableNAT, iptables.TableNAT,
	iptables.TableFilter, iptables.TableFilter, iptables.TableFilter, iptables.TableFilter}

// portRules is everything one service port renders. It depends only on the port, its
// endpoints, the node, the Config and large-cluster mode, so the proxier keeps it between
// syncs and renders again only the ports of the services that changed (cache.go).
type portRules struct {
	clusterIP netip.Addr
	// shared are the port's rules in each shared chain, in order (Chain unset).
	shared [numSharedSlots]ruleList
	// rejectOther is filter KUBE-SERVICES's "port not in use" rule for the ClusterIP, rendered
	// without service CIDRs (renderer.rejects) and used by the first port (in name order) with
	// that ClusterIP.
	rejectOther ruleList
	// chains are the port's own chains (KUBE-EXT, KUBE-FW, KUBE-SVC, KUBE-SVL, KUBE-SEP).
	chains                                      []ChainRules
	endpoints, noLocalInternal, noLocalExternal int
}

// canonicalise fills in the lines of every rule of the port.
func (pr *portRules) canonicalise(fam iptables.Family) {
	for slot := range pr.shared {
		canonicaliseChain(&pr.shared[slot], fam, slotTables[slot])
	}
	canonicaliseChain(&pr.rejectOther, fam, iptables.TableFilter)
	for i := range pr.chains {
		canonicaliseChain(&pr.chains[i].ruleList, fam, iptables.TableNAT)
	}
}

// dropChainRules drops the rendered arguments of the port's own chains once they are
// canonicalised: the cache keeps their lines only, which are what syncs compare with the
// kernel and what writeChain writes. At 10,000 services × 5 endpoints the arguments are about
// 50 MiB; dropping them as each port is rendered, rather than after the sync's write, keeps
// them out of a full sync's high-water mark too. The shared-chain rules stay: sameShared
// compares them.
func (pr *portRules) dropChainRules() {
	for i := range pr.chains {
		pr.chains[i].Rules = nil
	}
}

// canonicaliseChain sets c.lines to the rules as iptables-save prints them. A rule that
// cannot be canonicalised keeps its own text: it will differ from the kernel's, so its chain
// is always rewritten, and the kernel judges it.
func canonicaliseChain(c *ruleList, fam iptables.Family, table iptables.Table) {
	c.lines = make([]string, len(c.Rules))
	for i, r := range c.Rules {
		text, err := iptables.CanonicalRule(fam, table, r...)
		if err != nil {
			text = r.String()
		}
		c.lines[i] = text
	}
}

// renderer renders service ports and assembles the shared chains around them.
type renderer struct {
	cfg   Config
	det   LocalDetector
	mark  string
	large bool
	// serviceCIDRs are the configured service CIDRs of the family (familyServiceCIDRs).
	serviceCIDRs []netip.Prefix
	// port is the service port being rendered.
	port *portRules
}

func newRenderer(cfg Config, large bool) *renderer {
	return &renderer{cfg: cfg, det: cfg.localDetector(), mark: cfg.masqueradeMark(), large: large,
		serviceCIDRs: cfg.familyServiceCIDRs()}
}

// rejects reports whether each ClusterIP gets its own "port not in use" rule
// (portRules.rejectOther): without service CIDRs of the family; one rule per range otherwise.
func (r *renderer) rejects() bool { return len(r.serviceCIDRs) == 0 }

// renders reports whether the service port gets rules in this family.
func (r *renderer) renders(sp *endpoints.ServicePort) bool {
	return r.cfg.ofFamily(sp.ClusterIP) && validPort(sp.Port)
}

// Render computes the rules for a snapshot. It is pure: same input, same output, service
// ports in name order.
func Render(in Input) Rules {
	r := newRenderer(in.Config, countEndpoints(in) > largeClusterEndpoints)
	var ports []*portRules
	for _, name := range sortedServicePorts(in.Services) {
		sp := in.Services[name]
		if r.renders(sp) {
			ports = append(ports, r.servicePort(sp, in.Endpoints[name], in.Node))
		}
	}
	return r.assemble(slices.Values(ports), in.NodePortIPs, assembleOptions{serviceChains: true})
}

// assembleOptions says what assemble returns beyond the shared chains.
type assembleOptions struct {
	// serviceChains: also every port's own chains, after the shared nat chains.
	serviceChains bool
	// canon, when set, canonicalises the fixed rules; the ports' rules must then have been
	// canonicalised (portRules.canonicalise), and every chain comes with its lines.
	canon func(iptables.Table, iptables.Rule) string
}

// assemble puts the service ports' rules, given in service port name order, into the shared
// chains and returns the chains: the shared nat chains, then (with serviceChains) each port's
// own, and the filter chains. Its cost is one append per rule of the shared chains and, with
// serviceChains, one per port's chain.
func (r *renderer) assemble(ports iter.Seq[*portRules], nodePortIPs []netip.Addr, opts assembleOptions) Rules {
	a := &assembly{opts: opts}
	var shared [numSharedSlots]ChainRules
	shared[slotNATServices].Chain = iptables.ChainKubeServices
	shared[slotNATNodePorts].Chain = iptables.ChainKubeNodePorts
	shared[slotFilterServices].Chain = iptables.ChainKubeServices
	shared[slotFilterExternal].Chain = iptables.ChainKubeExternalServices
	shared[slotFilterNodePorts].Chain = iptables.ChainKubeNodePorts
	shared[slotFilterFirewall].Chain = iptables.ChainKubeProxyFirewall
	var out Rules
	out.LargeCluster = r.large
	var perService []ChainRules
	rejects := ruleList{}
	seenIPs := map[netip.Addr]bool{}
	for pr := range ports {
		out.ServicePorts++
		out.Endpoints += pr.endpoints
		out.NoLocalEndpointsInternal += pr.noLocalInternal
		out.NoLocalEndpointsExternal += pr.noLocalExternal
		for slot := range shared {
			a.appendRules(&shared[slot].ruleList, pr.shared[slot])
		}
		if !seenIPs[pr.clusterIP] {
			seenIPs[pr.clusterIP] = true
			a.appendRules(&rejects, pr.rejectOther)
		}
		if opts.serviceChains {
			perService = append(perService, pr.chains...)
		}
	}
	if !r.rejects() {
		a.fixed(iptables.TableFilter, &shared[slotFilterServices], rejectCIDRRules(r.serviceCIDRs)...)
	} else {
		a.appendRules(&shared[slotFilterServices].ruleList, rejects)
	}
	a.fixed(iptables.TableNAT, &shared[slotNATServices], r.nodePortsJump(nodePortIPs)...)
	markMasq := ChainRules{Chain: iptables.ChainKubeMarkMasq}
	a.fixed(iptables.TableNAT, &markMasq, iptables.Rule{"-j", "MARK", "--or-mark", r.mark})
	postrouting := ChainRules{Chain: iptables.ChainKubePostrouting}
	a.fixed(iptables.TableNAT, &postrouting, postroutingRules(r.cfg, r.mark)...)
	forward := ChainRules{Chain: iptables.ChainKubeForward}
	a.fixed(iptables.TableFilter, &forward, forwardRules(r.cfg, r.mark)...)

	out.NAT = append([]ChainRules{shared[slotNATServices], shared[slotNATNodePorts], markMasq, postrouting}, perService...)
	out.Filter = []ChainRules{shared[slotFilterServices], shared[slotFilterExternal], forward,
		shared[slotFilterNodePorts], shared[slotFilterFirewall]}
	if r.localhostNodePorts() {
		firewall := ChainRules{Chain: chainKubeFirewall}
		a.fixed(iptables.TableFilter, &firewall, localnetFirewallRule())
		out.Filter = append(out.Filter, firewall)
	}
	return out
}

// assembly appends rules to chains, with their lines when canonicalising.
type assembly struct{ opts assembleOptions }

// appendRules appends src's rules (and lines) to dst.
func (a *assembly) appendRules(dst *ruleList, src ruleList) {
	dst.Rules = append(dst.Rules, src.Rules...)
	if a.opts.canon != nil {
		if dst.lines == nil {
			dst.lines = []string{}
		}
		dst.lines = append(dst.lines, src.lines...)
	}
}

// fixed appends rules that do not come from a service port, canonicalising them when needed.
func (a *assembly) fixed(table iptables.Table, dst *ChainRules, rules ...iptables.Rule) {
	for _, rule := range rules {
		dst.Rules = append(dst.Rules, rule)
		if a.opts.canon != nil {
			dst.lines = append(dst.lines, a.opts.canon(table, rule))
		}
	}
}

// countEndpoints counts every endpoint of every service port, as upstream does to choose
// large-cluster mode.
func countEndpoints(in Input) int {
	n := 0
	for name := range in.Services {
		n += len(in.Endpoints[name])
	}
	return n
}

func sortedServicePorts(m endpoints.ServiceMap) []endpoints.ServicePortName {
	names := make([]endpoints.ServicePortName, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.SortFunc(names, compareServicePorts)
	return names
}

func validPort(p int32) bool { return p > 0 && p <= 65535 }

func hostPrefix(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

func (r *renderer) localhostNodePorts() bool {
	return r.cfg.LocalhostNodePorts && r.cfg.Family == iptables.IPv4
}

// familyServiceCIDRs are the configured service CIDRs of the proxier's family. Filter
// KUBE-SERVICES ends by rejecting traffic to a service address that no service port captured
// (so was not DNATed), at once instead of letting it time out: with service CIDRs one rule
// per CIDR (which also covers unallocated addresses), without one per ClusterIP
// (portRules.rejectOther).
func (c Config) familyServiceCIDRs() []netip.Prefix {
	var cidrs []netip.Prefix
	for _, p := range c.ServiceCIDRs {
		if p.IsValid() && c.ofFamily(p.Addr()) {
			cidrs = append(cidrs, p.Masked())
		}
	}
	return cidrs
}

func rejectCIDRRules(cidrs []netip.Prefix) []iptables.Rule {
	var out []iptables.Rule
	for _, p := range cidrs {
		out = append(out, iptables.Rule{
			"-m", "comment", "--comment", "kubernetes service CIDR: address or port not in use",
			"-d", p.String(), "-j", "REJECT"})
	}
	return out
}

// nodePortsJump are the rules that end nat KUBE-SERVICES with the jump to KUBE-NODEPORTS: for
// every local address, or for each address NodePorts are restricted to.
func (r *renderer) nodePortsJump(nodePortIPs []netip.Addr) []iptables.Rule {
	comment := iptables.Rule{"-m", "comment", "--comment", commentNodePorts}
	jump := iptables.Rule{"-j", string(iptables.ChainKubeNodePorts)}
	if !r.hasNodePortAddresses() {
		dest := iptables.Rule{"-m", "addrtype", "--dst-type", "LOCAL"}
		switch {
		case r.cfg.Family == iptables.IPv6:
			dest = append(dest, "!", "-d", "::1/128")
		case !r.cfg.LocalhostNodePorts:
			dest = append(dest, "!", "-d", "127.0.0.0/8")
		}
		return []iptables.Rule{slices.Concat(comment, dest, jump)}
	}
	var out []iptables.Rule
	ips := slices.Clone(nodePortIPs)
	slices.SortFunc(ips, netip.Addr.Compare)
	for _, ip := range slices.Compact(ips) {
		if !r.cfg.ofFamily(ip) || (ip.IsLoopback() && !r.localhostNodePorts()) {
			continue
		}
		out = append(out, slices.Concat(comment, iptables.Rule{"-d", hostPrefix(ip)}, jump))
	}
	return out
}

func (r *renderer) hasNodePortAddresses() bool {
	for _, p := range r.cfg.NodePortAddresses {
		if p.IsValid() && r.cfg.ofFamily(p.Addr()) {
			return true
		}
	}
	return false
}

var jumpMarkMasq = iptables.Rule{"-j", string(iptables.ChainKubeMarkMasq)}

// postroutingRules are KUBE-POSTROUTING: masquerade the packets marked for it, clearing the
// mark so that a packet that goes through the node twice is not masqueraded twice.
func postroutingRules(cfg Config, mark string) []iptables.Rule {
	masq := iptables.Rule{"-m", "comment", "--comment", commentSNAT, "-j", "MASQUERADE"}
	if cfg.MasqueradeRandomFully {
		masq = append(masq, "--random-fully")
	}
	return []iptables.Rule{
		{"-m", "mark", "!", "--mark", mark + "/" + mark, "-j", "RETURN"},
		{"-j", "MARK", "--xor-mark", mark},
		masq,
	}
}

// forwardRules are filter KUBE-FORWARD: drop packets conntrack finds INVALID (unless
// nf_conntrack_tcp_be_liberal is set), accept what kube-proxy marked and what belongs to an
// accepted connection, so that services work with a FORWARD policy of DROP.
func forwardRules(cfg Config, mark string) []iptables.Rule {
	var rules []iptables.Rule
	if !cfg.ConntrackTCPBeLiberal {
		rules = append(rules, iptables.Rule{"-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"})
	}
	return append(rules,
		iptables.Rule{"-m", "comment", "--comment", "kubernetes forwarding rules", "-m", "mark", "--mark", mark + "/" + mark, "-j", "ACCEPT"},
		iptables.Rule{"-m", "comment", "--comment", "kubernetes forwarding conntrack rule", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
	)
}

// localnetFirewallRule is filter KUBE-FIREWALL as kube-proxy (and kubelet) write it when
// NodePorts are open on localhost: route_localnet must not let other hosts reach 127.0.0.0/8.
func localnetFirewallRule() iptables.Rule {
	return iptables.Rule{
		"-m", "comment", "--comment", "block incoming localnet connections",
		"-d", "127.0.0.0/8", "!", "-s", "127.0.0.0/8",
		"-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT", "-j", "DROP",
	}
}

// chainKubeFirewall is kubelet's filter chain, which kube-proxy also writes.
const chainKubeFirewall iptables.Chain = "KUBE-FIREWALL"

// Transaction returns the restore that writes every chain of r from scratch.
func (r Rules) Transaction() *iptables.Transaction {
	tx := &iptables.Transaction{}
	for _, t := range []struct {
		table  iptables.Table
		chains []ChainRules
	}{{iptables.TableFilter, r.Filter}, {iptables.TableNAT, r.NAT}} {
		for _, c := range t.chains {
			writeChain(tx, t.table, c)
		}
	}
	return tx
}

// writeChain declares c (creating or flushing it) and appends its rules: as rendered, or, for a
// chain the cache keeps as lines only (portRules.dropChainRules), as iptables-save printed them.
func writeChain(tx *iptables.Transaction, table iptables.Table, c ChainRules) {
	tx.Declare(table, c.Chain)
	if c.Rules == nil {
		for _, l := range c.lines {
			tx.AppendSaved(table, c.Chain, l)
		}
		return
	}
	for _, r := range c.Rules {
		tx.Append(table, c.Chain, r)
	}
}
