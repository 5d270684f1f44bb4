package iptables

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// newTarget returns the target named by -j name (or a chain jump, or a goto).
func newTarget(fam Family, name string, isGoto bool) (targetExt, error) {
	if name == "" || strings.HasPrefix(name, "-") {
		return nil, fmt.Errorf("bad target `%s'", name)
	}
	if isGoto {
		return &chainTarget{chain: Chain(name), isGoto: true}, nil
	}
	switch name {
	case "ACCEPT", "DROP", "RETURN":
		return &verdictTarget{verdict: name}, nil
	case "REJECT":
		return &rejectTarget{fam: fam}, nil
	case "DNAT", "SNAT":
		return &natTarget{kind: name, fam: fam}, nil
	case "MASQUERADE":
		return &masqTarget{}, nil
	case "MARK":
		return &markTarget{}, nil
	}
	return &chainTarget{chain: Chain(name)}, nil
}

// verdictTarget is ACCEPT, DROP or RETURN.
type verdictTarget struct{ verdict string }

func (t *verdictTarget) name() string                                 { return t.verdict }
func (t *verdictTarget) parse(string, bool, *argReader) (bool, error) { return false, nil }
func (t *verdictTarget) format() string                               { return "-j " + t.verdict }

func (t *verdictTarget) check(_ Family, table Table, _ *ruleSpec) error {
	if t.verdict == "DROP" && table == TableNAT {
		return errors.New(`the "nat" table is not intended for filtering, the use of DROP is therefore inhibited`)
	}
	return nil
}

// chainTarget is a jump (-j CHAIN) or a goto (-g CHAIN) to a user chain.
type chainTarget struct {
	chain  Chain
	isGoto bool
}

func (t *chainTarget) name() string                                 { return string(t.chain) }
func (t *chainTarget) parse(string, bool, *argReader) (bool, error) { return false, nil }

func (t *chainTarget) check(Family, Table, *ruleSpec) error { return validChainName(t.chain) }

func (t *chainTarget) format() string {
	if t.isGoto {
		return "-g " + string(t.chain)
	}
	return "-j " + string(t.chain)
}

var rejectTypes = map[Family][]string{
	IPv4: {"icmp-net-unreachable", "icmp-host-unreachable", "icmp-port-unreachable",
		"icmp-proto-unreachable", "icmp-net-prohibited", "icmp-host-prohibited",
		"icmp-admin-prohibited", "tcp-reset"},
	IPv6: {"icmp6-no-route", "icmp6-adm-prohibited", "icmp6-addr-unreachable",
		"icmp6-port-unreachable", "tcp-reset"},
}

// rejectTarget is REJECT [--reject-with type].
type rejectTarget struct {
	fam  Family
	with string
}

func (t *rejectTarget) name() string { return "REJECT" }

func (t *rejectTarget) parse(opt string, neg bool, rd *argReader) (bool, error) {
	if opt != "--reject-with" {
		return false, nil
	}
	v, err := rd.value(opt)
	if err != nil {
		return true, err
	}
	if !contains(rejectTypes[t.fam], v) {
		return true, fmt.Errorf("unknown reject type %q", v)
	}
	t.with = v
	return true, noInvert(opt, neg)
}

func (t *rejectTarget) check(Family, Table, *ruleSpec) error { return nil }

func (t *rejectTarget) format() string {
	with := t.with
	if with == "" {
		with = "icmp-port-unreachable"
		if t.fam == IPv6 {
			with = "icmp6-port-unreachable"
		}
	}
	return "-j REJECT --reject-with " + with
}

// natTarget is DNAT --to-destination or SNAT --to-source, to an address with an optional port.
type natTarget struct {
	kind string
	fam  Family
	addr netip.Addr
	port uint16 // 0: keep the packet's port
}

func (t *natTarget) name() string { return t.kind }

func (t *natTarget) option() string {
	if t.kind == "DNAT" {
		return "--to-destination"
	}
	return "--to-source"
}

func (t *natTarget) parse(opt string, neg bool, rd *argReader) (bool, error) {
	if opt != t.option() {
		return false, nil
	}
	v, err := rd.value(opt)
	if err != nil {
		return true, err
	}
	if t.addr.IsValid() {
		return true, fmt.Errorf("%s: multiple %s not supported", t.kind, opt)
	}
	if t.addr, t.port, err = parseNATAddr(t.fam, v); err != nil {
		return true, err
	}
	return true, noInvert(opt, neg)
}

// parseNATAddr parses "ip", "ip:port", "[ip6]:port" or "ip6".
func parseNATAddr(fam Family, v string) (netip.Addr, uint16, error) {
	bad := fmt.Errorf("bad IP address %q", v)
	if ap, err := netip.ParseAddrPort(v); err == nil {
		if ap.Addr().Is4() != (fam == IPv4) || ap.Port() == 0 {
			return netip.Addr{}, 0, bad
		}
		return ap.Addr(), ap.Port(), nil
	}
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(v, "["), "]"))
	if err != nil || a.Is4() != (fam == IPv4) || a.Zone() != "" {
		return netip.Addr{}, 0, bad
	}
	return a, 0, nil
}

func (t *natTarget) check(_ Family, table Table, r *ruleSpec) error {
	switch {
	case table != TableNAT:
		return fmt.Errorf("%s: only valid in the nat table", t.kind)
	case !t.addr.IsValid():
		return fmt.Errorf("%s: option %q must be specified", t.kind, t.option())
	case t.port != 0 && (!r.proto.set || r.proto.neg || !isPortProto(r.proto.name)):
		return errors.New("need TCP, UDP, SCTP or DCCP with port specification")
	}
	return nil
}

// dest is the address the target translates to, as "ip:port" when it has a port.
func (t *natTarget) dest() string {
	if t.port == 0 {
		return t.addr.String()
	}
	return netip.AddrPortFrom(t.addr, t.port).String()
}

func (t *natTarget) format() string { return "-j " + t.kind + " " + t.option() + " " + t.dest() }

// masqTarget is MASQUERADE [--to-ports p[-q]] [--random] [--random-fully].
type masqTarget struct {
	toPorts             string
	random, randomFully bool
}

func (t *masqTarget) name() string { return "MASQUERADE" }

func (t *masqTarget) parse(opt string, neg bool, rd *argReader) (bool, error) {
	switch opt {
	case "--random":
		t.random = true
	case "--random-fully":
		t.randomFully = true
	case "--to-ports":
		v, err := rd.value(opt)
		if err != nil {
			return true, err
		}
		lo, hi, ok := strings.Cut(v, "-")
		for _, p := range []string{lo, hi} {
			if n, err := strconv.ParseUint(p, 10, 16); (p != "" || !ok) && (err != nil || n == 0) {
				return true, fmt.Errorf("MASQUERADE: bad --to-ports %q", v)
			}
		}
		t.toPorts = v
	default:
		return false, nil
	}
	return true, noInvert(opt, neg)
}

func (t *masqTarget) check(_ Family, table Table, r *ruleSpec) error {
	switch {
	case table != TableNAT:
		return errors.New("MASQUERADE: only valid in the nat table")
	case t.toPorts != "" && (!r.proto.set || r.proto.neg || !isPortProto(r.proto.name)):
		return errors.New("need TCP, UDP, SCTP or DCCP with port specification")
	}
	return nil
}

func (t *masqTarget) format() string {
	s := "-j MASQUERADE"
	if t.toPorts != "" {
		s += " --to-ports " + t.toPorts
	}
	if t.random {
		s += " --random"
	}
	if t.randomFully {
		s += " --random-fully"
	}
	return s
}

// markTarget is MARK with one of --set-xmark, --set-mark, --or-mark, --and-mark, --xor-mark.
// The kernel keeps every form as (value, mask) meaning mark = (mark & ^mask) ^ value, and
// iptables-save prints it as --set-xmark value/mask.
type markTarget struct {
	set       bool
	val, mask uint32
}

func (t *markTarget) name() string { return "MARK" }

func (t *markTarget) parse(opt string, neg bool, rd *argReader) (bool, error) {
	switch opt {
	case "--set-xmark", "--set-mark", "--or-mark", "--and-mark", "--xor-mark":
	default:
		return false, nil
	}
	v, err := rd.value(opt)
	if err != nil {
		return true, err
	}
	if t.set {
		return true, errors.New("MARK: only one of --set-xmark, --set-mark, --or-mark, --and-mark, --xor-mark")
	}
	val, mask, err := parseValueMask(v)
	if err != nil {
		return true, err
	}
	if opt != "--set-xmark" && opt != "--set-mark" && strings.Contains(v, "/") {
		return true, fmt.Errorf("MARK: %s takes no mask", opt)
	}
	switch opt {
	case "--set-mark":
		mask |= val
	case "--or-mark":
		mask = val
	case "--and-mark":
		val, mask = 0, ^val
	case "--xor-mark":
		mask = 0
	}
	*t = markTarget{set: true, val: val, mask: mask}
	return true, noInvert(opt, neg)
}

func (t *markTarget) check(Family, Table, *ruleSpec) error {
	if !t.set {
		return errors.New("MARK: one of --set-xmark, --set-mark, --or-mark, --and-mark or --xor-mark is required")
	}
	return nil
}

func (t *markTarget) format() string {
	return fmt.Sprintf("-j MARK --set-xmark %#x/%#x", t.val, t.mask)
}

func (t *markTarget) apply(mark uint32) uint32 { return mark&^t.mask ^ t.val }

// validChainName checks a user chain name as iptables does.
func validChainName(c Chain) error {
	switch {
	case c == "":
		return errors.New("empty chain name")
	case len(c) > maxChainNameLen:
		return fmt.Errorf("chain name `%s' too long (must be under %d chars)", c, maxChainNameLen+1)
	case strings.HasPrefix(string(c), "-") || strings.HasPrefix(string(c), "!") || strings.ContainsAny(string(c), " \t\"'"):
		return fmt.Errorf("invalid chain name `%s'", c)
	}
	switch c {
	case "ACCEPT", "DROP", "RETURN", "QUEUE", "REJECT", "DNAT", "SNAT", "MASQUERADE", "MARK":
		return fmt.Errorf("invalid chain name `%s'", c)
	}
	return nil
}
