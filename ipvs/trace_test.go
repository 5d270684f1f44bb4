package ipvs

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/ipset"
	"github.com/kproxy/kproxy/iptables"
)

// This file is a packet tracer for the IPVS mode's plan, for tests: the first packet of a
// connection goes through the plan's nat and filter rules (with the plan's set entries),
// then through IPVS (the plan's virtual servers), as the kernel orders the hooks:
//
//	from an interface:  nat PREROUTING → route → filter INPUT → IPVS (LOCAL_IN) →
//	                    filter OUTPUT → nat POSTROUTING
//	from the node:      nat OUTPUT → IPVS (LOCAL_OUT) → filter OUTPUT → nat POSTROUTING
//	                    (no virtual server, local destination: filter INPUT)
//
// It models only the matches and targets the IPVS mode writes; any other is a test error,
// so that a rule the tracer misreads fails loudly instead of passing.

// tracePacket is the first packet of a connection.
type tracePacket struct {
	src, dst netip.Addr
	proto    v1.Protocol
	dport    uint16
	// in is the input interface; "" means the node sends the packet (OUTPUT).
	in string
	// bridged: the packet arrived through a bridge port (-m physdev --physdev-is-in).
	bridged bool
}

// traceEnv is the plan plus the node's local addresses.
type traceEnv struct {
	t     *testing.T
	plan  Plan
	fam   iptables.Family
	local map[netip.Addr]bool
	sets  map[string]ipset.SetState
	rules map[iptables.Table]map[iptables.Chain][]iptables.Rule
	steps int
}

// traceState is what the rules and IPVS change about the packet.
type traceState struct {
	pkt   tracePacket
	mark  uint32
	masq  bool
	vs    *PlannedVS // the virtual server IPVS chose (for -m ipvs)
	dnatd bool
}

func newTraceEnv(t *testing.T, plan Plan, cfg Config, nodeAddrs ...netip.Addr) *traceEnv {
	t.Helper()
	e := &traceEnv{t: t, plan: plan, fam: cfg.Family, local: map[netip.Addr]bool{}, sets: map[string]ipset.SetState{},
		rules: map[iptables.Table]map[iptables.Chain][]iptables.Rule{iptables.TableNAT: {}, iptables.TableFilter: {}}}
	for _, a := range append(slices.Clone(plan.Bind), nodeAddrs...) {
		e.local[a] = true
	}
	e.local[netip.MustParseAddr("127.0.0.1")] = true
	for _, s := range plan.Sets {
		e.sets[s.Set.Name] = s
	}
	for _, c := range plan.Chains {
		e.rules[c.Table][c.Chain] = c.Rules
	}
	// the base jumps are prepended one after the other: the last one ends up first
	for i := len(baseJumps) - 1; i >= 0; i-- {
		j := baseJumps[i]
		e.rules[j.table][j.from] = append(e.rules[j.table][j.from], j.rule())
	}
	return e
}

// trace returns every possible outcome of pkt, sorted: "RS masq" or "RS" for a packet
// that reaches the real server RS (masqueraded or not), "REJECT", "DROP", or "LOCAL" for
// a packet delivered to a socket of the node.
func (e *traceEnv) trace(pkt tracePacket) []string {
	e.t.Helper()
	st := &traceState{pkt: pkt}
	if pkt.in != "" {
		if v := e.chain(iptables.TableNAT, iptables.ChainPrerouting, st); ends(v) {
			return []string{v}
		}
		if !e.local[st.pkt.dst] {
			return []string{"FORWARD"}
		}
		if v := e.chain(iptables.TableFilter, iptables.ChainInput, st); ends(v) {
			return []string{v}
		}
	} else if v := e.chain(iptables.TableNAT, iptables.ChainOutput, st); ends(v) {
		return []string{v}
	}
	vs := e.virtualServer(st.pkt)
	switch {
	case vs == nil && pkt.in == "" && e.local[st.pkt.dst]:
		if v := e.chain(iptables.TableFilter, iptables.ChainInput, st); ends(v) {
			return []string{v}
		}
		return []string{"LOCAL"}
	case vs == nil:
		return []string{"LOCAL"}
	case len(vs.RealServers) == 0:
		return []string{"REJECT"} // ip_vs_leave: ICMP port unreachable
	}
	var out []string
	for _, rs := range vs.RealServers {
		s := *st
		s.vs = vs
		s.pkt.dst, s.pkt.dport = rs.Addr(), rs.Port()
		if v := e.chain(iptables.TableFilter, iptables.ChainOutput, &s); ends(v) {
			out = append(out, v)
			continue
		}
		e.chain(iptables.TableNAT, iptables.ChainPostrouting, &s)
		o := rs.String()
		if s.masq {
			o += " masq"
		}
		out = append(out, o)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// ends reports whether a table's verdict ends the packet's trip.
func ends(verdict string) bool { return verdict == "DROP" || verdict == "REJECT" }

func (e *traceEnv) virtualServer(p tracePacket) *PlannedVS {
	for i, vs := range e.plan.VirtualServers {
		if vs.IP == p.dst && vs.Port == p.dport && vs.Protocol == p.proto {
			return &e.plan.VirtualServers[i]
		}
	}
	return nil
}

// chain runs one chain and returns the verdict that ended the packet's trip through the
// table ("" when the chain ran out or returned: the built-in chains' policy is ACCEPT).
func (e *traceEnv) chain(t iptables.Table, c iptables.Chain, st *traceState) string {
	e.t.Helper()
	for _, r := range e.rules[t][c] {
		if e.steps++; e.steps > 10000 {
			e.t.Fatalf("trace: loop in %s %s", t, c)
		}
		target, targs, ok := e.match(r, st)
		if !ok {
			continue
		}
		switch target {
		case targetReturn:
			return ""
		case targetAccept, "DROP", "REJECT":
			return target
		case "MARK":
			e.mark(targs, st)
		case "DNAT":
			ap := netip.MustParseAddrPort(targs[1])
			st.pkt.dst, st.pkt.dport, st.dnatd = ap.Addr(), ap.Port(), true
			return targetAccept
		case targetMasquerade:
			st.masq = true
			return targetAccept
		default:
			if _, ok := e.rules[t][iptables.Chain(target)]; !ok {
				e.t.Fatalf("trace: rule %q jumps to unknown chain %s", r, target)
			}
			if v := e.chain(t, iptables.Chain(target), st); v != "" {
				return v
			}
		}
	}
	return ""
}

func (e *traceEnv) mark(args []string, st *traceState) {
	v, err := strconv.ParseUint(strings.Split(args[1], "/")[0], 0, 32)
	if err != nil {
		e.t.Fatalf("trace: MARK %v: %v", args, err)
	}
	switch args[0] {
	case "--or-mark":
		st.mark |= uint32(v)
	case "--xor-mark":
		st.mark ^= uint32(v)
	default:
		e.t.Fatalf("trace: MARK %v not modelled", args)
	}
}

// match evaluates the rule's matches and returns its target and the target's options.
func (e *traceEnv) match(r iptables.Rule, st *traceState) (string, []string, bool) {
	e.t.Helper()
	ok, neg := true, false
	p := st.pkt
	for i := 0; i < len(r); i++ {
		a := r[i]
		next := func() string {
			i++
			if i >= len(r) {
				e.t.Fatalf("trace: rule %q ends after %s", r, a)
			}
			return r[i]
		}
		res := true
		switch a {
		case "!":
			neg = true
			continue
		case "-j":
			return next(), r[i+1:], ok
		case "-s":
			res = netip.MustParsePrefix(withBits(next())).Contains(p.src)
		case "-d":
			res = netip.MustParsePrefix(withBits(next())).Contains(p.dst)
		case "-i":
			name := next()
			res = p.in != "" && (p.in == name || strings.HasSuffix(name, "+") && strings.HasPrefix(p.in, strings.TrimSuffix(name, "+")))
		case "-p":
			res = strings.EqualFold(next(), string(p.proto))
		case "--dport":
			res = next() == strconv.Itoa(int(p.dport))
		case "-m":
			switch m := next(); m {
			case "tcp", "udp", "sctp", "set", "addrtype", "physdev", "mark", "conntrack", "ipvs":
			case "comment":
				next()
				next()
			default:
				e.t.Fatalf("trace: match %s not modelled (%q)", m, r)
			}
			continue
		case "--match-set":
			res = e.inSet(next(), next(), p)
		case "--src-type", "--dst-type":
			addr := p.src
			if a == "--dst-type" {
				addr = p.dst
			}
			if next() != "LOCAL" {
				e.t.Fatalf("trace: addrtype in %q not modelled", r)
			}
			res = e.local[addr]
		case "--physdev-is-in":
			res = p.bridged
		case "--mark":
			vm := strings.Split(next(), "/")
			v, _ := strconv.ParseUint(vm[0], 0, 32)
			m, _ := strconv.ParseUint(vm[1], 0, 32)
			res = st.mark&uint32(m) == uint32(v)
		case "--ctstate":
			res = slices.Contains(strings.Split(next(), ","), "NEW")
		case "--vaddr":
			res = st.vs != nil && st.vs.IP.String() == next()
		case "--vport":
			res = st.vs != nil && strconv.Itoa(int(st.vs.Port)) == next()
		case "--vproto":
			res = st.vs != nil && strings.EqualFold(string(st.vs.Protocol), next())
		default:
			e.t.Fatalf("trace: option %s not modelled (%q)", a, r)
		}
		if res == neg {
			ok = false
		}
		neg = false
	}
	e.t.Fatalf("trace: rule %q has no target", r)
	return "", nil, false
}

func withBits(s string) string {
	if strings.Contains(s, "/") {
		return s
	}
	if strings.Contains(s, ":") {
		return s + "/128"
	}
	return s + "/32"
}

// inSet is ipset's match: flags say, per dimension of the set's type, whether it is
// compared with the packet's source or destination (address, then port, then address or
// network).
func (e *traceEnv) inSet(name, flags string, p tracePacket) bool {
	e.t.Helper()
	st, ok := e.sets[name]
	if !ok {
		e.t.Fatalf("trace: no set %s", name)
	}
	dims := strings.Split(flags, ",")
	pick := func(d int) (netip.Addr, uint16) {
		if dims[d] == "src" {
			return p.src, 0 // sources have no port the rules look at
		}
		return p.dst, p.dport
	}
	for _, en := range st.Entries {
		var hit bool
		switch st.Set.Type {
		case ipset.BitmapPort:
			_, port := pick(0)
			hit = en.Port == port
		case ipset.HashIP:
			a, _ := pick(0)
			hit = en.IP == a
		default: // hash:ip,port[,ip|,net]
			a, _ := pick(0)
			_, port := pick(1)
			if dims[1] == "src" {
				e.t.Fatalf("trace: source port match in set %s not modelled", name)
			}
			hit = en.IP == a && en.Port == port && strings.EqualFold(en.Protocol, string(p.proto))
			if hit && len(dims) == 3 {
				third, _ := pick(2)
				if en.Net.IsValid() {
					hit = en.Net.Contains(third)
				} else {
					hit = en.IP2 == third
				}
			}
		}
		if hit {
			return true
		}
	}
	return false
}

// String prints a packet for test names.
func (p tracePacket) String() string {
	from := "node"
	if p.in != "" {
		from = p.in
	}
	return fmt.Sprintf("%s %s -> %s:%d from %s", p.proto, p.src, p.dst, p.dport, from)
}
