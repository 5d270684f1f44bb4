package iptables

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
)

// newMatch returns an empty match extension by name.
func newMatch(fam Family, name string) (matchExt, error) {
	switch name {
	case "tcp", "udp", "sctp":
		return &portMatch{proto: name}, nil
	case "comment":
		return &commentMatch{}, nil
	case "mark":
		return &markMatch{}, nil
	case "statistic":
		return &statisticMatch{}, nil
	case "addrtype":
		return &addrtypeMatch{}, nil
	case "conntrack":
		return &conntrackMatch{}, nil
	case "recent":
		return &recentMatch{fam: fam}, nil
	}
	return nil, fmt.Errorf("couldn't load match `%s':No such file or directory", name)
}

func noInvert(opt string, neg bool) error {
	if neg {
		return fmt.Errorf("option %q cannot be inverted", opt)
	}
	return nil
}

// portMatch is -m tcp, -m udp, -m sctp: [!] --sport, [!] --dport, a port or a range lo:hi.
type portMatch struct {
	proto        string
	sport, dport portOpt
}

type portOpt struct {
	set, neg bool
	lo, hi   uint16
}

func (o portOpt) contains(p int) bool {
	return (p >= int(o.lo) && p <= int(o.hi)) != o.neg
}

func (o portOpt) String() string {
	if o.lo == o.hi {
		return strconv.Itoa(int(o.lo))
	}
	return fmt.Sprintf("%d:%d", o.lo, o.hi)
}

func (m *portMatch) name() string { return m.proto }

func (m *portMatch) parse(opt string, neg bool, rd *argReader) (bool, error) {
	var o *portOpt
	switch opt {
	case "--dport", "--destination-port":
		o = &m.dport
	case "--sport", "--source-port":
		o = &m.sport
	default:
		return false, nil
	}
	v, err := rd.value(opt)
	if err != nil {
		return true, err
	}
	if o.set {
		return true, fmt.Errorf("multiple %s flags not allowed", opt)
	}
	lo, hi, err := parsePortRange(v)
	if err != nil {
		return true, err
	}
	*o = portOpt{set: true, neg: neg, lo: lo, hi: hi}
	return true, nil
}

func parsePortRange(v string) (lo, hi uint16, err error) {
	l, h, isRange := strings.Cut(v, ":")
	port := func(s string, def uint16) (uint16, error) {
		if s == "" && isRange {
			return def, nil
		}
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("invalid port/service `%s' specified", s)
		}
		return uint16(n), nil
	}
	if lo, err = port(l, 0); err != nil {
		return 0, 0, err
	}
	if !isRange {
		return lo, lo, nil
	}
	if hi, err = port(h, math.MaxUint16); err != nil {
		return 0, 0, err
	}
	if lo > hi {
		return 0, 0, fmt.Errorf("invalid portrange (min > max) `%s'", v)
	}
	return lo, hi, nil
}

func (m *portMatch) check(r *ruleSpec) error {
	if !r.proto.set || r.proto.neg || r.proto.name != m.proto {
		return fmt.Errorf("%s match requires '-p %s'", strings.ToUpper(m.proto), m.proto)
	}
	return nil
}

func (m *portMatch) format() string {
	s := ""
	if m.sport.set {
		s += negPrefix(m.sport.neg) + " --sport " + m.sport.String()
	}
	if m.dport.set {
		s += negPrefix(m.dport.neg) + " --dport " + m.dport.String()
	}
	return s
}

// commentMatch is -m comment --comment text.
type commentMatch struct {
	text string
	set  bool
}

func (m *commentMatch) name() string { return "comment" }

func (m *commentMatch) parse(opt string, neg bool, rd *argReader) (bool, error) {
	if opt != "--comment" {
		return false, nil
	}
	v, err := rd.value(opt)
	if err != nil {
		return true, err
	}
	if err := noInvert(opt, neg); err != nil {
		return true, err
	}
	if m.set {
		return true, errors.New("comment: --comment can only be used once")
	}
	if len(v) > 255 {
		return true, errors.New("comment may not exceed 255 characters")
	}
	m.text, m.set = v, true
	return true, nil
}

func (m *commentMatch) check(*ruleSpec) error {
	if !m.set {
		return errors.New(`comment: option "--comment" must be specified`)
	}
	return nil
}

func (m *commentMatch) format() string { return " --comment " + saveQuote(m.text) }

// markMatch is -m mark [!] --mark value[/mask].
type markMatch struct {
	set, neg  bool
	val, mask uint32
}

func (m *markMatch) name() string { return "mark" }

func (m *markMatch) parse(opt string, neg bool, rd *argReader) (bool, error) {
	if opt != "--mark" {
		return false, nil
	}
	v, err := rd.value(opt)
	if err != nil {
		return true, err
	}
	val, mask, err := parseValueMask(v)
	if err != nil {
		return true, err
	}
	*m = markMatch{set: true, neg: neg, val: val, mask: mask}
	return true, nil
}

func (m *markMatch) check(*ruleSpec) error {
	if !m.set {
		return errors.New(`mark: option "--mark" must be specified`)
	}
	return nil
}

func (m *markMatch) format() string {
	s := negPrefix(m.neg) + fmt.Sprintf(" --mark %#x", m.val)
	if m.mask != 0xffffffff {
		s += fmt.Sprintf("/%#x", m.mask)
	}
	return s
}

func (m *markMatch) matches(mark uint32) bool { return (mark&m.mask == m.val) != m.neg }

// statisticMatch is -m statistic --mode random --probability p, or --mode nth --every n
// [--packet p].
type statisticMatch struct {
	mode          string
	probability   uint32 // quantised as the kernel keeps it: p * 2^31
	probSet       bool
	every, packet uint32
	everySet      bool
}

func (m *statisticMatch) name() string { return "statistic" }

func (m *statisticMatch) parse(opt string, neg bool, rd *argReader) (bool, error) {
	if opt != "--mode" && opt != "--probability" && opt != "--every" && opt != "--packet" {
		return false, nil
	}
	v, err := rd.value(opt)
	if err != nil {
		return true, err
	}
	if err := noInvert(opt, neg); err != nil {
		return true, err
	}
	switch opt {
	case "--mode":
		if v != "random" && v != "nth" {
			return true, fmt.Errorf("statistic: bad mode %q", v)
		}
		m.mode = v
	case "--probability":
		p, err := strconv.ParseFloat(v, 64)
		if err != nil || p < 0 || p > 1 {
			return true, fmt.Errorf("statistic: invalid --probability %q", v)
		}
		m.probability, m.probSet = uint32(math.Round(p*0x80000000)), true
	case "--every":
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 0 {
			return true, fmt.Errorf("statistic: invalid --every %q", v)
		}
		m.every, m.everySet = uint32(n), true
	case "--packet":
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return true, fmt.Errorf("statistic: invalid --packet %q", v)
		}
		m.packet = uint32(n)
	}
	return true, nil
}

func (m *statisticMatch) check(*ruleSpec) error {
	switch {
	case m.mode == "random" && (!m.probSet || m.everySet):
		return errors.New("statistic: --mode random needs --probability only")
	case m.mode == "nth" && (!m.everySet || m.probSet || m.packet >= m.every):
		return errors.New("statistic: --mode nth needs --every n and --packet below n")
	case m.mode == "":
		return errors.New("statistic: no --mode specified")
	}
	return nil
}

func (m *statisticMatch) format() string {
	if m.mode == "nth" {
		return fmt.Sprintf(" --mode nth --every %d --packet %d", m.every, m.packet)
	}
	return fmt.Sprintf(" --mode random --probability %.11f", float64(m.probability)/0x80000000)
}

// addrTypes lists the address types in the order iptables-save prints them.
var addrTypes = []string{"UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST",
	"BLACKHOLE", "UNREACHABLE", "PROHIBIT", "THROW", "NAT", "XRESOLVE"}

// flagList is an option whose value is a comma-separated set of names from a fixed list.
type flagList struct {
	set, neg bool
	names    map[string]bool
}

func parseFlagList(valid []string, v string, neg bool) (flagList, error) {
	l := flagList{set: true, neg: neg, names: map[string]bool{}}
	for _, n := range strings.Split(v, ",") {
		if !contains(valid, n) {
			return flagList{}, fmt.Errorf("bad value %q", n)
		}
		l.names[n] = true
	}
	return l, nil
}

// String prints the names in the order of valid.
func (l flagList) format(valid []string) string {
	var out []string
	for _, n := range valid {
		if l.names[n] {
			out = append(out, n)
		}
	}
	return strings.Join(out, ",")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// addrtypeMatch is -m addrtype [!] --src-type TYPES [!] --dst-type TYPES.
type addrtypeMatch struct {
	src, dst flagList
}

func (m *addrtypeMatch) name() string { return "addrtype" }

func (m *addrtypeMatch) parse(opt string, neg bool, rd *argReader) (bool, error) {
	var l *flagList
	switch opt {
	case "--src-type":
		l = &m.src
	case "--dst-type":
		l = &m.dst
	default:
		return false, nil
	}
	v, err := rd.value(opt)
	if err != nil {
		return true, err
	}
	*l, err = parseFlagList(addrTypes, v, neg)
	return true, err
}

func (m *addrtypeMatch) check(*ruleSpec) error {
	if !m.src.set && !m.dst.set {
		return errors.New("addrtype: you must specify --src-type or --dst-type")
	}
	return nil
}

func (m *addrtypeMatch) format() string {
	s := ""
	if m.src.set {
		s += negPrefix(m.src.neg) + " --src-type " + m.src.format(addrTypes)
	}
	if m.dst.set {
		s += negPrefix(m.dst.neg) + " --dst-type " + m.dst.format(addrTypes)
	}
	return s
}

// ctStates lists the conntrack states in the order iptables-save prints them.
var ctStates = []string{"INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED", "SNAT", "DNAT"}

// conntrackMatch is -m conntrack [!] --ctstate STATES.
type conntrackMatch struct {
	state flagList
}

func (m *conntrackMatch) name() string { return "conntrack" }

func (m *conntrackMatch) parse(opt string, neg bool, rd *argReader) (bool, error) {
	if opt != "--ctstate" {
		return false, nil
	}
	v, err := rd.value(opt)
	if err != nil {
		return true, err
	}
	m.state, err = parseFlagList(ctStates, v, neg)
	return true, err
}

func (m *conntrackMatch) check(*ruleSpec) error {
	if !m.state.set {
		return errors.New("conntrack: --ctstate must be specified")
	}
	return nil
}

func (m *conntrackMatch) format() string {
	return negPrefix(m.state.neg) + " --ctstate " + m.state.format(ctStates)
}

// recentMatch is -m recent, as session affinity uses it: one of --set, --rcheck, --update,
// --remove, with --seconds, --reap, --hitcount, --rttl, --name, --mask, --rsource/--rdest.
type recentMatch struct {
	fam      Family
	command  string
	seconds  uint32
	reap     bool
	hitcount uint32
	rttl     bool
	listName string
	mask     netip.Addr
	side     string
}

func (m *recentMatch) name() string { return "recent" }

func (m *recentMatch) parse(opt string, neg bool, rd *argReader) (bool, error) {
	switch opt {
	case "--set", "--rcheck", "--update", "--remove":
		if m.command != "" {
			return true, errors.New("recent: only one of --set, --rcheck, --update or --remove")
		}
		m.command = opt
		return true, noInvert(opt, neg)
	case "--reap":
		m.reap = true
	case "--rttl":
		m.rttl = true
	case "--rsource", "--rdest":
		m.side = opt
	case "--seconds", "--hitcount", "--name", "--mask":
		return true, m.parseValue(opt, rd)
	default:
		return false, nil
	}
	return true, noInvert(opt, neg)
}

func (m *recentMatch) parseValue(opt string, rd *argReader) error {
	v, err := rd.value(opt)
	if err != nil {
		return err
	}
	switch opt {
	case "--name":
		m.listName = v
	case "--mask":
		a, err := netip.ParseAddr(v)
		if err != nil || a.Is4() != (m.fam == IPv4) {
			return fmt.Errorf("recent: bad --mask %q", v)
		}
		m.mask = a
	default:
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return fmt.Errorf("recent: bad %s %q", opt, v)
		}
		if opt == "--seconds" {
			m.seconds = uint32(n)
		} else {
			m.hitcount = uint32(n)
		}
	}
	return nil
}

func (m *recentMatch) check(*ruleSpec) error {
	switch {
	case m.command == "":
		return errors.New("recent: you must specify one of --set, --rcheck, --update or --remove")
	case (m.seconds != 0 || m.hitcount != 0 || m.reap) && m.command != "--rcheck" && m.command != "--update":
		return errors.New("recent: --seconds, --hitcount and --reap only go with --rcheck or --update")
	case m.reap && m.seconds == 0:
		return errors.New("recent: --reap needs --seconds")
	}
	return nil
}

func (m *recentMatch) format() string {
	s := " " + m.command
	if m.seconds != 0 {
		s += fmt.Sprintf(" --seconds %d", m.seconds)
	}
	if m.reap {
		s += " --reap"
	}
	if m.hitcount != 0 {
		s += fmt.Sprintf(" --hitcount %d", m.hitcount)
	}
	if m.rttl {
		s += " --rttl"
	}
	name := m.listName
	if name == "" {
		name = "DEFAULT"
	}
	mask := m.mask
	if !mask.IsValid() {
		mask = netip.AddrFrom4([4]byte{255, 255, 255, 255})
		if m.fam == IPv6 {
			mask = netip.AddrFrom16([16]byte{255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255})
		}
	}
	side := m.side
	if side == "" {
		side = "--rsource"
	}
	return s + " --name " + name + " --mask " + mask.String() + " " + side
}
