package iptables

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Hook is where a traced packet enters netfilter.
type Hook string

const (
	// HookPrerouting is a packet arriving on an interface: from a pod on this node, another
	// node or an external client. It goes through nat PREROUTING, then filter INPUT when its
	// destination (after DNAT) is a local address, otherwise filter FORWARD and nat
	// POSTROUTING.
	HookPrerouting Hook = "PREROUTING"
	// HookOutput is a packet the node itself sends: nat OUTPUT, filter OUTPUT, nat
	// POSTROUTING, and filter INPUT when its destination (after DNAT) is a local address.
	HookOutput Hook = "OUTPUT"
)

// Packet is the first packet of a connection, as the tracer sees it.
type Packet struct {
	Src, Dst netip.Addr
	Protocol Protocol
	DstPort  int
	// InIface is the interface the packet arrives on; only needed when a rule on its path
	// matches -i. Packets the node sends (HookOutput) have none.
	InIface string
}

// Verdict is how a packet's trip through the node ends.
type Verdict string

// The verdicts.
const (
	VerdictAccept Verdict = "ACCEPT"
	VerdictDrop   Verdict = "DROP"
	VerdictReject Verdict = "REJECT"
)

// Outcome is one possible end of a packet's trip.
type Outcome struct {
	// DNAT is the "ip:port" the packet was translated to, "" when it was not.
	DNAT string
	// Masquerade says whether nat POSTROUTING masqueraded it.
	Masquerade bool
	Verdict    Verdict
}

// Trace runs pkt through the Fake's nat and filter tables from hook, with local as the node's
// own addresses (for -m addrtype LOCAL and for choosing INPUT or FORWARD), and returns every
// possible outcome, sorted and without duplicates. A rule that may or may not match (-m
// statistic --mode random, -m recent --rcheck) is followed both ways. A match, option or
// target the tracer does not model, on any rule the packet reaches, is an error.
func Trace(f *Fake, pkt Packet, hook Hook, local []netip.Addr) ([]Outcome, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, table := range []Table{TableMangle, TableRaw} {
		if !f.tables[table].pristine() {
			return nil, fmt.Errorf("tracer does not model the %s table", table)
		}
	}
	t := &tracer{tables: f.tables, local: map[netip.Addr]bool{}, output: hook == HookOutput}
	for _, a := range local {
		t.local[a] = true
	}
	var steps []traceStep
	switch hook {
	case HookPrerouting:
		steps = []traceStep{{table: TableNAT, chain: ChainPrerouting}, {route: true}}
	case HookOutput:
		steps = []traceStep{{table: TableNAT, chain: ChainOutput}, {table: TableFilter, chain: ChainOutput}, {table: TableNAT, chain: ChainPostrouting}, {loopback: true}}
	default:
		return nil, fmt.Errorf("unknown hook %q", hook)
	}
	out, err := t.run(steps, traceState{pkt: pkt})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b Outcome) int {
		return cmp.Or(cmp.Compare(a.DNAT, b.DNAT), cmp.Compare(a.Verdict, b.Verdict), boolCompare(a.Masquerade, b.Masquerade))
	})
	return slices.Compact(out), nil
}

func boolCompare(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

const (
	maxTraceSteps = 1000000 // rules evaluated in one trace: more means a loop between chains
	maxTracePaths = 10000   // branches followed in one trace
	maxTraceDepth = 1000    // nested jumps: more means a loop between chains
)

type tracer struct {
	tables map[Table]*fakeTable
	local  map[netip.Addr]bool
	// output: the packet is sent by the node, so it has no input interface (-i never
	// matches, ! -i always does).
	output bool
	paths  int
	steps  int
}

// traceStep is one built-in chain on the packet's way, or the routing decision.
type traceStep struct {
	table Table
	chain Chain
	route bool
	// loopback: a packet the node sent to one of its own addresses comes back in through
	// filter INPUT (nat PREROUTING is not consulted again: the connection's NAT is decided).
	loopback bool
}

// traceState is what the rules can change about a packet.
type traceState struct {
	pkt  Packet
	mark uint32
	dnat string
	masq bool
}

// end is how a packet left one table's built-in chain.
type end struct {
	st      traceState
	verdict Verdict
}

// run passes the packet through steps in order; an ACCEPT from one table goes on to the next.
func (t *tracer) run(steps []traceStep, st traceState) ([]Outcome, error) {
	if len(steps) == 0 {
		return []Outcome{{DNAT: st.dnat, Masquerade: st.masq, Verdict: VerdictAccept}}, nil
	}
	if steps[0].loopback {
		if t.local[st.pkt.Dst] {
			return t.run([]traceStep{{table: TableFilter, chain: ChainInput}}, st)
		}
		return t.run(nil, st)
	}
	if steps[0].route {
		if t.local[st.pkt.Dst] {
			return t.run([]traceStep{{table: TableFilter, chain: ChainInput}}, st)
		}
		return t.run([]traceStep{{table: TableFilter, chain: ChainForward}, {table: TableNAT, chain: ChainPostrouting}}, st)
	}
	ends, err := t.walk(steps[0], position{chain: steps[0].chain}, nil, st)
	if err != nil {
		return nil, err
	}
	var out []Outcome
	for _, e := range ends {
		if e.verdict != VerdictAccept {
			out = append(out, Outcome{DNAT: e.st.dnat, Masquerade: e.st.masq, Verdict: e.verdict})
			continue
		}
		more, err := t.run(steps[1:], e.st)
		if err != nil {
			return nil, err
		}
		out = append(out, more...)
	}
	return out, nil
}

// position is a rule index in a chain; the call stack holds where RETURN goes back to.
type position struct {
	chain Chain
	idx   int
}

// walk evaluates rules from pos until the packet leaves the hook's built-in chain. A rule that
// may match forks: the matching branch is walked by a recursive call, the other goes on here.
func (t *tracer) walk(hook traceStep, pos position, stack []position, st traceState) ([]end, error) {
	table := t.tables[hook.table]
	var out []end
	for {
		if t.steps++; t.steps > maxTraceSteps || len(stack) > maxTraceDepth {
			return nil, errors.New("trace too long: a loop between chains?")
		}
		ch, ok := table.chains[pos.chain]
		if !ok {
			return nil, fmt.Errorf("chain %s does not exist in table %s", pos.chain, hook.table)
		}
		if pos.idx >= len(ch.rules) {
			if len(stack) == 0 {
				return append(out, end{st: st, verdict: Verdict(table.chains[hook.chain].policy)}), nil
			}
			pos, stack = stack[len(stack)-1], stack[:len(stack)-1]
			continue
		}
		r := ch.rules[pos.idx]
		pos.idx++
		m, err := t.match(r, st)
		if err != nil {
			return nil, fmt.Errorf("%s %s rule %d %q: %w", hook.table, pos.chain, pos.idx, r.text, err)
		}
		switch m {
		case matchNo:
			continue
		case matchMaybe:
			if t.paths++; t.paths > maxTracePaths {
				return nil, errors.New("trace has too many possible paths")
			}
			ends, err := t.branch(hook, r, pos, slices.Clone(stack), st)
			if err != nil {
				return nil, err
			}
			out = append(out, ends...)
			continue
		}
		var e *end
		if pos, stack, e, err = t.step(hook, r, pos, stack, &st); err != nil {
			return nil, err
		}
		if e != nil {
			return append(out, *e), nil
		}
	}
}

// branch follows the branch where r matched.
func (t *tracer) branch(hook traceStep, r *ruleSpec, pos position, stack []position, st traceState) ([]end, error) {
	pos, stack, e, err := t.step(hook, r, pos, stack, &st)
	switch {
	case err != nil:
		return nil, err
	case e != nil:
		return []end{*e}, nil
	}
	return t.walk(hook, pos, stack, st)
}

// step applies a matching rule's target: it returns where the walk goes on, or how the packet
// leaves the hook's chain.
func (t *tracer) step(hook traceStep, r *ruleSpec, pos position, stack []position, st *traceState) (position, []position, *end, error) {
	next, verdict, err := t.apply(hook, r, st)
	if err != nil {
		return pos, stack, nil, fmt.Errorf("%s %s rule %d %q: %w", hook.table, pos.chain, pos.idx, r.text, err)
	}
	switch {
	case verdict != "":
		return pos, stack, &end{st: *st, verdict: verdict}, nil
	case next.kind == actJump:
		return position{chain: next.chain}, append(stack, pos), nil, nil
	case next.kind == actGoto:
		return position{chain: next.chain}, stack, nil, nil
	case next.kind == actReturn && len(stack) == 0:
		return pos, stack, &end{st: *st, verdict: Verdict(t.tables[hook.table].chains[hook.chain].policy)}, nil
	case next.kind == actReturn:
		return stack[len(stack)-1], stack[:len(stack)-1], nil, nil
	}
	return pos, stack, nil, nil
}

type matchResult int

const (
	matchNo matchResult = iota
	matchYes
	matchMaybe
)

// and combines two results of conditions that must all hold.
func (a matchResult) and(b matchResult) matchResult {
	switch {
	case a == matchNo || b == matchNo:
		return matchNo
	case a == matchMaybe || b == matchMaybe:
		return matchMaybe
	}
	return matchYes
}

func boolMatch(b bool) matchResult {
	if b {
		return matchYes
	}
	return matchNo
}

// match evaluates every condition of r, so that one the tracer does not model is an error even
// when an earlier condition already fails.
func (t *tracer) match(r *ruleSpec, st traceState) (matchResult, error) {
	res := matchYes
	if r.src.set {
		res = res.and(boolMatch(r.src.prefix.Contains(st.pkt.Src) != r.src.neg))
	}
	if r.dst.set {
		res = res.and(boolMatch(r.dst.prefix.Contains(st.pkt.Dst) != r.dst.neg))
	}
	if r.in.set {
		switch {
		case t.output:
			res = res.and(boolMatch(r.in.neg))
		case st.pkt.InIface == "":
			return matchNo, errors.New("rule matches -i but the packet has no InIface")
		default:
			res = res.and(boolMatch(ifaceMatches(r.in.name, st.pkt.InIface) != r.in.neg))
		}
	}
	if r.out.set {
		return matchNo, errors.New("tracer does not model -o")
	}
	if r.proto.set {
		res = res.and(boolMatch((r.proto.name == string(st.pkt.Protocol)) != r.proto.neg))
	}
	for _, m := range r.matches {
		mr, err := t.matchExt(m, st)
		if err != nil {
			return matchNo, err
		}
		res = res.and(mr)
	}
	return res, nil
}

func ifaceMatches(pattern, iface string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "+"); ok {
		return strings.HasPrefix(iface, prefix)
	}
	return pattern == iface
}

func (t *tracer) matchExt(m matchExt, st traceState) (matchResult, error) {
	switch m := m.(type) {
	case *commentMatch:
		return matchYes, nil
	case *portMatch:
		if m.sport.set {
			return matchNo, errors.New("tracer does not model --sport")
		}
		return boolMatch(!m.dport.set || m.dport.contains(st.pkt.DstPort)), nil
	case *markMatch:
		return boolMatch(m.matches(st.mark)), nil
	case *statisticMatch:
		switch {
		case m.mode == "random" && m.probability == 0:
			return matchNo, nil
		case m.mode == "random" && m.probability >= 0x80000000:
			return matchYes, nil
		}
		return matchMaybe, nil
	case *addrtypeMatch:
		return t.matchAddrtype(m, st)
	case *conntrackMatch:
		// The traced packet opens a connection: NEW, and DNAT once nat PREROUTING or OUTPUT
		// translated it.
		have := map[string]bool{"NEW": true, "DNAT": st.dnat != ""}
		found := false
		for s := range m.state.names {
			found = found || have[s]
		}
		return boolMatch(found != m.state.neg), nil
	case *recentMatch:
		if m.command == "--set" {
			return matchYes, nil
		}
		return matchMaybe, nil
	}
	return matchNo, fmt.Errorf("tracer does not model -m %s", m.name())
}

func (t *tracer) matchAddrtype(m *addrtypeMatch, st traceState) (matchResult, error) {
	res := matchYes
	for _, c := range []struct {
		l    flagList
		addr netip.Addr
	}{{m.src, st.pkt.Src}, {m.dst, st.pkt.Dst}} {
		if !c.l.set {
			continue
		}
		if len(c.l.names) != 1 || !c.l.names["LOCAL"] {
			return matchNo, fmt.Errorf("tracer only models addrtype LOCAL, not %s", c.l.format(addrTypes))
		}
		res = res.and(boolMatch(t.local[c.addr] != c.l.neg))
	}
	return res, nil
}

type actionKind int

const (
	actContinue actionKind = iota
	actJump
	actGoto
	actReturn
)

type action struct {
	kind  actionKind
	chain Chain
}

// apply runs r's target on st. It returns where to go on, or the verdict that ends the walk
// of this hook's table (ACCEPT for DNAT and MASQUERADE, which end the nat chain traversal).
func (t *tracer) apply(hook traceStep, r *ruleSpec, st *traceState) (action, Verdict, error) {
	switch tg := r.target.(type) {
	case nil:
		return action{}, "", nil
	case *verdictTarget:
		if tg.verdict == "RETURN" {
			return action{kind: actReturn}, "", nil
		}
		return action{}, Verdict(tg.verdict), nil
	case *rejectTarget:
		return action{}, VerdictReject, nil
	case *chainTarget:
		if _, ok := t.tables[hook.table].chains[tg.chain]; !ok {
			return action{}, "", fmt.Errorf("jump to missing chain %s", tg.chain)
		}
		if tg.isGoto {
			return action{kind: actGoto, chain: tg.chain}, "", nil
		}
		return action{kind: actJump, chain: tg.chain}, "", nil
	case *markTarget:
		st.mark = tg.apply(st.mark)
		return action{}, "", nil
	case *natTarget:
		if tg.kind != "DNAT" || (hook.chain != ChainPrerouting && hook.chain != ChainOutput) {
			return action{}, "", fmt.Errorf("tracer does not model %s in %s", tg.kind, hook.chain)
		}
		port := tg.port
		if port == 0 {
			port = uint16(st.pkt.DstPort)
		}
		st.pkt.Dst, st.pkt.DstPort = tg.addr, int(port)
		st.dnat = netip.AddrPortFrom(tg.addr, port).String()
		return action{}, VerdictAccept, nil
	case *masqTarget:
		if hook.chain != ChainPostrouting {
			return action{}, "", fmt.Errorf("MASQUERADE outside POSTROUTING (in %s)", hook.chain)
		}
		st.masq = true
		return action{}, VerdictAccept, nil
	}
	return action{}, "", fmt.Errorf("tracer does not model target %s", r.target.name())
}
