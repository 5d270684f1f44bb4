package iptables

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ruleSpec is one parsed rule: the generic matches, the match extensions in order, the target,
// and the canonical text (what iptables-save prints after "-A CHAIN ").
type ruleSpec struct {
	src, dst addrMatch
	in, out  ifaceMatch
	proto    protoMatch
	matches  []matchExt
	target   targetExt // nil when the rule has no -j or -g
	text     string
}

type addrMatch struct {
	set, neg bool
	prefix   netip.Prefix
}

type ifaceMatch struct {
	set, neg bool
	name     string
}

type protoMatch struct {
	set, neg bool
	name     string
}

// matchExt is a match extension (-m name ...).
type matchExt interface {
	name() string
	// parse consumes opt (and its values) when the extension knows it.
	parse(opt string, neg bool, rd *argReader) (bool, error)
	// check validates the extension once the whole rule is parsed.
	check(r *ruleSpec) error
	// format prints the options in iptables-save order, each with a leading space.
	format() string
}

// targetExt is a target (-j NAME ...) or a jump to a user chain (-j CHAIN, -g CHAIN).
type targetExt interface {
	name() string
	parse(opt string, neg bool, rd *argReader) (bool, error)
	check(fam Family, table Table, r *ruleSpec) error
	// format prints "-j NAME" (or "-g CHAIN") and the options in iptables-save order.
	format() string
}

// argReader walks a rule's arguments.
type argReader struct {
	args []string
	i    int
}

func (rd *argReader) more() bool { return rd.i < len(rd.args) }

func (rd *argReader) next() string {
	a := rd.args[rd.i]
	rd.i++
	return a
}

// value returns the argument of option opt.
func (rd *argReader) value(opt string) (string, error) {
	if !rd.more() {
		return "", fmt.Errorf("option %q requires an argument", opt)
	}
	return rd.next(), nil
}

// CanonicalRule returns the rule as iptables-save prints it (without "-A CHAIN "), for the
// matches and targets kproxy writes, or an error for a rule iptables would reject or that uses
// something this package does not know. The table matters for what it accepts (no DROP in nat,
// DNAT only in nat).
func CanonicalRule(fam Family, table Table, args ...string) (string, error) {
	r, err := parseRule(fam, table, args)
	if err != nil {
		return "", err
	}
	return r.text, nil
}

func parseRule(fam Family, table Table, args []string) (*ruleSpec, error) {
	r := &ruleSpec{}
	rd := &argReader{args: args}
	neg := false
	for rd.more() {
		a := rd.next()
		if a == "!" {
			if neg {
				return nil, errors.New("multiple consecutive ! not allowed")
			}
			neg = true
			continue
		}
		if err := r.parseArg(fam, a, neg, rd); err != nil {
			return nil, err
		}
		neg = false
	}
	if neg {
		return nil, errors.New("! at the end of the rule")
	}
	for _, m := range r.matches {
		if err := m.check(r); err != nil {
			return nil, err
		}
	}
	if r.target != nil {
		if err := r.target.check(fam, table, r); err != nil {
			return nil, err
		}
	}
	r.text = r.format()
	return r, nil
}

func (r *ruleSpec) parseArg(fam Family, a string, neg bool, rd *argReader) error {
	switch a {
	case "-s", "--source", "--src":
		return parseAddrOpt(&r.src, fam, a, neg, rd)
	case "-d", "--destination", "--dst":
		return parseAddrOpt(&r.dst, fam, a, neg, rd)
	case "-i", "--in-interface":
		return parseIfaceOpt(&r.in, a, neg, rd)
	case "-o", "--out-interface":
		return parseIfaceOpt(&r.out, a, neg, rd)
	case "-p", "--protocol":
		return r.parseProto(fam, a, neg, rd)
	case "-m", "--match":
		name, err := rd.value(a)
		if err != nil {
			return err
		}
		if neg {
			return errors.New("unexpected ! before -m")
		}
		m, err := newMatch(fam, name)
		if err != nil {
			return err
		}
		r.matches = append(r.matches, m)
		return nil
	case "-j", "--jump", "-g", "--goto":
		name, err := rd.value(a)
		if err != nil {
			return err
		}
		if neg {
			return fmt.Errorf("cannot have ! before %s", a)
		}
		if r.target != nil {
			return errors.New("multiple -j flags not allowed")
		}
		r.target, err = newTarget(fam, name, a == "-g" || a == "--goto")
		return err
	}
	if !strings.HasPrefix(a, "-") {
		return fmt.Errorf("bad argument `%s'", a)
	}
	return r.parseExtOpt(fam, a, neg, rd)
}

// parseExtOpt gives an option to the target, then to the loaded matches from the last one
// back, then to the protocol's implicit match (-p tcp --dport 80 loads "-m tcp").
func (r *ruleSpec) parseExtOpt(fam Family, opt string, neg bool, rd *argReader) error {
	if r.target != nil {
		if ok, err := r.target.parse(opt, neg, rd); ok || err != nil {
			return err
		}
	}
	for i := len(r.matches) - 1; i >= 0; i-- {
		if ok, err := r.matches[i].parse(opt, neg, rd); ok || err != nil {
			return err
		}
	}
	if r.proto.set && !r.proto.neg && isPortProto(r.proto.name) {
		m, err := newMatch(fam, r.proto.name)
		if err != nil {
			return err
		}
		ok, err := m.parse(opt, neg, rd)
		if err != nil {
			return err
		}
		if ok {
			r.matches = append(r.matches, m)
			return nil
		}
	}
	return fmt.Errorf("unknown option %q", opt)
}

func parseAddrOpt(m *addrMatch, fam Family, opt string, neg bool, rd *argReader) error {
	v, err := rd.value(opt)
	if err != nil {
		return err
	}
	if m.set {
		return fmt.Errorf("multiple %s flags not allowed", opt)
	}
	p, err := parseFamilyPrefix(fam, v)
	if err != nil {
		return err
	}
	*m = addrMatch{set: p.Bits() > 0 || neg, neg: neg, prefix: p}
	return nil
}

// parseFamilyPrefix parses "addr" or "addr/bits" of family fam, masked as the kernel keeps it.
func parseFamilyPrefix(fam Family, v string) (netip.Prefix, error) {
	var p netip.Prefix
	var err error
	if strings.Contains(v, "/") {
		p, err = netip.ParsePrefix(v)
	} else {
		var a netip.Addr
		a, err = netip.ParseAddr(v)
		if err == nil {
			p = netip.PrefixFrom(a, a.BitLen())
		}
	}
	if err != nil || p.Addr().Zone() != "" || p.Addr().Is4() != (fam == IPv4) || p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("host/network `%s' not found", v)
	}
	return p.Masked(), nil
}

func parseIfaceOpt(m *ifaceMatch, opt string, neg bool, rd *argReader) error {
	v, err := rd.value(opt)
	if err != nil {
		return err
	}
	if m.set {
		return fmt.Errorf("multiple %s flags not allowed", opt)
	}
	if v == "" || len(v) > 15 || strings.ContainsAny(v, " /") {
		return fmt.Errorf("interface name `%s' must be shorter than 16 characters", v)
	}
	*m = ifaceMatch{set: true, neg: neg, name: v}
	return nil
}

// protoNumbers maps the protocol numbers iptables-save prints by name.
var protoNumbers = map[string]string{
	"0": "all", "1": "icmp", "6": "tcp", "17": "udp", "50": "esp", "51": "ah", "58": "ipv6-icmp", "132": "sctp",
}

var protoNames = map[string]bool{
	"all": true, "icmp": true, "tcp": true, "udp": true, "esp": true, "ah": true, "ipv6-icmp": true,
	"sctp": true, "udplite": true,
}

func (r *ruleSpec) parseProto(fam Family, opt string, neg bool, rd *argReader) error {
	v, err := rd.value(opt)
	if err != nil {
		return err
	}
	if r.proto.set {
		return fmt.Errorf("multiple %s flags not allowed", opt)
	}
	name := strings.ToLower(v)
	if n, ok := protoNumbers[name]; ok {
		name = n
	}
	if name == "icmpv6" && fam == IPv6 {
		name = "ipv6-icmp"
	}
	if !protoNames[name] {
		return fmt.Errorf("unknown protocol `%s' specified", v)
	}
	r.proto = protoMatch{set: name != "all" || neg, neg: neg, name: name}
	return nil
}

func isPortProto(p string) bool { return p == "tcp" || p == "udp" || p == "sctp" }

// format prints the rule as iptables-save does: -s, -d, -i, -o, -p, the match extensions in
// the order given, the target.
func (r *ruleSpec) format() string {
	var parts []string
	add := func(set, neg bool, flag, v string) {
		if !set {
			return
		}
		if neg {
			parts = append(parts, "!")
		}
		parts = append(parts, flag, v)
	}
	add(r.src.set, r.src.neg, "-s", r.src.prefix.String())
	add(r.dst.set, r.dst.neg, "-d", r.dst.prefix.String())
	add(r.in.set, r.in.neg, "-i", r.in.name)
	add(r.out.set, r.out.neg, "-o", r.out.name)
	add(r.proto.set, r.proto.neg, "-p", r.proto.name)
	for _, m := range r.matches {
		parts = append(parts, "-m "+m.name()+m.format())
	}
	if r.target != nil {
		parts = append(parts, r.target.format())
	}
	return strings.Join(parts, " ")
}

// jumpTarget returns the user chain the rule jumps or goes to, if any.
func (r *ruleSpec) jumpTarget() (Chain, bool) {
	if t, ok := r.target.(*chainTarget); ok {
		return t.chain, true
	}
	return "", false
}

// parseUint32 parses a decimal or 0x-prefixed 32-bit value.
func parseUint32(v string) (uint32, error) {
	n, err := strconv.ParseUint(v, 0, 32)
	if err != nil {
		return 0, fmt.Errorf("bad value %q", v)
	}
	return uint32(n), nil
}

// parseValueMask parses "value[/mask]"; the mask is 0xffffffff when absent.
func parseValueMask(v string) (val, mask uint32, err error) {
	s, m, hasMask := strings.Cut(v, "/")
	if val, err = parseUint32(s); err != nil {
		return 0, 0, err
	}
	mask = 0xffffffff
	if hasMask {
		if mask, err = parseUint32(m); err != nil {
			return 0, 0, err
		}
	}
	return val, mask, nil
}

func negPrefix(neg bool) string {
	if neg {
		return " !"
	}
	return ""
}
