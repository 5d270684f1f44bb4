package main

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/iptables"
	iptproxy "github.com/kproxy/kproxy/iptables/proxy"
)

// iptablesInspector is kproxy inspect in iptables mode: the chains the renderer would write
// next to iptables-save's, followed from the shared chains' rules whose comment names the
// service port (nat KUBE-SERVICES, KUBE-NODEPORTS; filter KUBE-SERVICES,
// KUBE-EXTERNAL-SERVICES, ...) through the per-service chains they jump to.
type iptablesInspector struct {
	cfg         iptproxy.Config
	ipt         iptables.Interface
	nodePortIPs []netip.Addr
	// local are the node's addresses, for the tracer (-m addrtype LOCAL, INPUT or FORWARD).
	local []netip.Addr

	expected, kernel map[iptables.Table]map[iptables.Chain][]string
	saved            map[iptables.Table][]byte
	trace            *iptables.Fake // the kernel's kproxy chains, loaded on the first Trace
	traceErr         error
}

var inspectTables = []iptables.Table{iptables.TableNAT, iptables.TableFilter}

func (m *iptablesInspector) Name() string { return "iptables" }

func (m *iptablesInspector) Load(ctx context.Context, snap endpoints.Snapshot, node endpoints.NodeInfo) error {
	rules := iptproxy.Render(iptproxy.Input{Services: snap.Services, Endpoints: snap.Endpoints, Node: node,
		Config: m.cfg, NodePortIPs: m.nodePortIPs})
	m.expected = map[iptables.Table]map[iptables.Chain][]string{}
	for table, chains := range map[iptables.Table][]iptproxy.ChainRules{iptables.TableNAT: rules.NAT, iptables.TableFilter: rules.Filter} {
		m.expected[table] = map[iptables.Chain][]string{}
		for _, c := range chains {
			lines := make([]string, 0, len(c.Rules))
			for _, r := range c.Rules {
				text, err := iptables.CanonicalRule(m.cfg.Family, table, r...)
				if err != nil {
					text = r.String()
				}
				lines = append(lines, text)
			}
			m.expected[table][c.Chain] = lines
		}
	}
	m.kernel = map[iptables.Table]map[iptables.Chain][]string{}
	m.saved = map[iptables.Table][]byte{}
	for _, table := range inspectTables {
		data, err := m.ipt.Save(ctx, table)
		if err != nil {
			return fmt.Errorf("read the %s table: %w", table, err)
		}
		chains, err := iptables.ParseSave(data, table)
		if err != nil {
			return fmt.Errorf("read the %s table: %w", table, err)
		}
		m.kernel[table], m.saved[table] = chains, data
	}
	return nil
}

var commentRE = regexp.MustCompile(`--comment ("[^"]*"|\S+)`)

// mentions reports whether a rule's comment names the service port: "ns/name:port" alone or
// followed by a space ("ns/name:port cluster IP").
func mentions(rule, spn string) bool {
	m := commentRE.FindStringSubmatch(rule)
	if m == nil {
		return false
	}
	c := strings.Trim(m[1], `"`)
	return c == spn || strings.HasPrefix(c, spn+" ")
}

// perService reports whether a chain belongs to one service port.
func perService(c iptables.Chain) bool {
	for _, p := range []string{"KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-", "KUBE-XLB-"} {
		if strings.HasPrefix(string(c), p) {
			return true
		}
	}
	return false
}

var jumpRE = regexp.MustCompile(`-[jg] (KUBE-[A-Z0-9-]+)`)

// sections follows one state: the shared chains' rules naming the port, then the per-service
// chains they lead to, then any other per-service chain whose rules name the port (a stale
// one).
func portSections(state map[iptables.Table]map[iptables.Chain][]string, spn string) []section {
	var out []section
	for _, table := range inspectTables {
		chains := state[table]
		var queue []iptables.Chain
		seen := map[iptables.Chain]bool{}
		follow := func(rule string) {
			for _, m := range jumpRE.FindAllStringSubmatch(rule, -1) {
				if c := iptables.Chain(m[1]); perService(c) && !seen[c] {
					seen[c] = true
					queue = append(queue, c)
				}
			}
		}
		for _, c := range slices.Sorted(mapsKeys(chains)) {
			if perService(c) {
				continue
			}
			var lines []string
			for _, r := range chains[c] {
				if mentions(r, spn) {
					lines = append(lines, r)
					follow(r)
				}
			}
			if len(lines) > 0 {
				out = append(out, section{Name: fmt.Sprintf("%s %s", table, c), Lines: lines})
			}
		}
		for _, c := range slices.Sorted(mapsKeys(chains)) {
			if perService(c) && !seen[c] && slices.ContainsFunc(chains[c], func(r string) bool { return mentions(r, spn) }) {
				seen[c] = true
				queue = append(queue, c)
			}
		}
		for i := 0; i < len(queue); i++ {
			c := queue[i]
			rules, ok := chains[c]
			if !ok {
				continue // a jump to a missing chain: the other side shows it
			}
			for _, r := range rules {
				follow(r)
			}
			out = append(out, section{Name: fmt.Sprintf("%s %s", table, c), Lines: rules, Ordered: true})
		}
	}
	return out
}

func (m *iptablesInspector) Port(sp *endpoints.ServicePort) (expected, kernel []section, targets []string) {
	spn := sp.Name.String()
	expected, kernel = portSections(m.expected, spn), portSections(m.kernel, spn)
	return expected, kernel, iptablesTargets(m.kernel, kernel)
}

var (
	probabilityRE = regexp.MustCompile(`--probability (\S+)`)
	toDestRE      = regexp.MustCompile(`--to-destination (\S+)`)
	rejectRE      = regexp.MustCompile(`-j (REJECT|DROP)`)
	targetRE      = regexp.MustCompile(`-[jg] (\S+)`)
)

// iptablesTargets reads where the kernel sends the port's traffic: each service chain's
// endpoint chains with their DNAT destination and probability, and the REJECT or DROP of a
// port without endpoints.
func iptablesTargets(state map[iptables.Table]map[iptables.Chain][]string, secs []section) []string {
	var out []string
	for _, s := range secs {
		table, chain, _ := strings.Cut(s.Name, " ")
		if table == string(iptables.TableFilter) {
			for _, r := range s.Lines {
				if m := rejectRE.FindStringSubmatch(r); m != nil {
					out = append(out, fmt.Sprintf("%s %s: %s", table, chain, m[1]))
				}
			}
			continue
		}
		if !strings.HasPrefix(chain, "KUBE-SVC-") && !strings.HasPrefix(chain, "KUBE-SVL-") {
			continue
		}
		for _, r := range s.Lines {
			m := jumpRE.FindStringSubmatch(r)
			if m == nil || !strings.HasPrefix(m[1], "KUBE-SEP-") || strings.Contains(r, "--rcheck") {
				continue
			}
			dest := "?"
			for _, sr := range state[iptables.TableNAT][iptables.Chain(m[1])] {
				if d := toDestRE.FindStringSubmatch(sr); d != nil {
					dest = d[1]
				}
			}
			p := "the rest"
			if pm := probabilityRE.FindStringSubmatch(r); pm != nil {
				p = "probability " + pm[1]
			}
			out = append(out, fmt.Sprintf("%s → %s → %s (%s)", chain, m[1], dest, p))
		}
	}
	return out
}

// Trace runs a connection from src through the kernel's kproxy chains, loaded into the
// iptables Fake (which models the matches and targets kproxy writes).
func (m *iptablesInspector) Trace(src, dst netip.Addr, port int32, proto v1.Protocol) ([]string, error) {
	if m.trace == nil && m.traceErr == nil {
		m.trace, m.traceErr = loadTraceFake(m.cfg.Family, m.saved)
	}
	if m.traceErr != nil {
		return nil, fmt.Errorf("cannot trace: %w", m.traceErr)
	}
	hook := iptables.HookPrerouting
	if slices.Contains(m.local, src) {
		hook = iptables.HookOutput
	}
	pkt := iptables.Packet{Src: src, Dst: dst, Protocol: iptables.Protocol(strings.ToLower(string(proto))), DstPort: int(port)}
	if hook == iptables.HookPrerouting {
		switch d := m.cfg.LocalDetector; {
		case d.BridgeInterface != "":
			pkt.InIface = d.BridgeInterface
		case d.InterfaceNamePrefix != "":
			pkt.InIface = d.InterfaceNamePrefix + "0"
		}
	}
	outcomes, err := iptables.Trace(m.trace, pkt, hook, m.local)
	if err != nil {
		return nil, err
	}
	var lines []string
	for _, o := range outcomes {
		l := string(o.Verdict)
		if o.DNAT != "" {
			l += ", DNAT to " + o.DNAT
		}
		if o.Masquerade {
			l += ", masqueraded"
		} else if o.Verdict == iptables.VerdictAccept {
			l += ", source kept"
		}
		lines = append(lines, l)
	}
	return lines, nil
}

// loadTraceFake restores into a Fake the KUBE- chains of the saved nat and filter tables and
// the built-in chains' rules that jump to them; other chains (kubelet's, a CNI's, ...) are
// left out, and so are the rules that lead to them.
func loadTraceFake(fam iptables.Family, saved map[iptables.Table][]byte) (*iptables.Fake, error) {
	var b strings.Builder
	for _, table := range inspectTables {
		chains, err := iptables.ParseSave(saved[table], table)
		if err != nil {
			return nil, err
		}
		kube := func(c iptables.Chain) bool { return strings.HasPrefix(string(c), "KUBE-") }
		fmt.Fprintf(&b, "*%s\n", table)
		names := slices.Sorted(mapsKeys(chains))
		for _, c := range names {
			if kube(c) {
				fmt.Fprintf(&b, ":%s - [0:0]\n", c)
			}
		}
		for _, c := range names {
			if !kube(c) && !iptables.IsBuiltin(table, c) {
				continue
			}
			for _, r := range chains[c] {
				var target iptables.Chain
				if m := targetRE.FindStringSubmatch(r); m != nil {
					target = iptables.Chain(m[1])
				}
				if iptables.IsBuiltin(table, c) && !kube(target) {
					continue
				}
				if _, isChain := chains[target]; isChain && !kube(target) {
					continue // a foreign user chain
				}
				fmt.Fprintf(&b, "-A %s %s\n", c, r)
			}
		}
		b.WriteString("COMMIT\n")
	}
	f := iptables.NewFake(fam)
	if err := f.Restore(context.Background(), []byte(b.String())); err != nil {
		return nil, err
	}
	return f, nil
}
