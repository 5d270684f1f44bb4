package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The IPVS mode's kernel reads, inside the VM (the host kernel has no IPVS). "Programmed" is
// read from the IPVS table, never from the proxy: /proc/net/ip_vs (one read of the whole
// table, the same text ipvsadm -Ln prints, in hex) for bulk create, cold start and delete, and
// one IPVS_CMD_GET_DEST netlink dump of one virtual server for the one-change phase.

// ipvsState is the IPv4 part of the IPVS table: virtual server "ip:port" (TCP) → real
// servers "ip:port" → weight.
type ipvsState struct {
	vs map[string]map[string]int
}

// readIPVSProc reads /proc/net/ip_vs.
func readIPVSProc() (ipvsState, error) {
	b, err := os.ReadFile("/proc/net/ip_vs")
	if err != nil {
		return ipvsState{}, err
	}
	return parseIPVSProc(b)
}

// parseIPVSProc parses /proc/net/ip_vs:
//
//	IP Virtual Server version 1.2.1 (size=4096)
//	Prot LocalAddress:Port Scheduler Flags
//	  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
//	TCP  64640001:0050 rr
//	  -> 640A0A00:1F90      Masq    1      0          0
//
// Only IPv4 TCP virtual servers are kept (the load's); the real servers of the others are
// skipped with them.
func parseIPVSProc(b []byte) (ipvsState, error) {
	st := ipvsState{vs: map[string]map[string]int{}}
	var cur map[string]int
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && (f[0] == "TCP" || f[0] == "UDP" || f[0] == "SCTP" || f[0] == "FWM"):
			cur = nil
			if f[0] != "TCP" {
				continue
			}
			ap, ok := hexAddrPort(f[1])
			if !ok {
				continue // IPv6: [....]:PORT
			}
			cur = map[string]int{}
			st.vs[ap] = cur
		case len(f) >= 4 && f[0] == "->" && cur != nil:
			ap, ok := hexAddrPort(f[1])
			if !ok {
				continue
			}
			w, err := strconv.Atoi(f[3])
			if err != nil {
				return ipvsState{}, fmt.Errorf("/proc/net/ip_vs: weight in %q: %w", line, err)
			}
			cur[ap] = w
		}
	}
	return st, sc.Err()
}

// hexAddrPort turns "0A600001:0050" into "10.96.0.1:80".
func hexAddrPort(s string) (string, bool) {
	h, p, ok := strings.Cut(s, ":")
	if !ok || len(h) != 8 {
		return "", false
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		return "", false
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return "", false
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b)), uint16(port)).String(), true
}

// ipvsOK: s's virtual server is there with every endpoint of s as a real server of weight > 0.
func ipvsOK(st ipvsState, s *benchService) bool {
	rs, ok := st.vs[netip.AddrPortFrom(netip.MustParseAddr(s.vip), servicePort).String()]
	if !ok {
		return false
	}
	for _, e := range s.eps {
		if rs[e] <= 0 {
			return false
		}
	}
	return true
}

// ipvsGone: s's virtual server is not there.
func ipvsGone(st ipvsState, s *benchService) bool {
	_, ok := st.vs[netip.AddrPortFrom(netip.MustParseAddr(s.vip), servicePort).String()]
	return !ok
}

// ipvsSnapshot is what a restart may change, per kind, as sets of lines: ipvsadm -Sn,
// ipset save, iptables-save + ip6tables-save (counters stripped), the addresses on kube-ipvs0.
type ipvsSnapshot map[string]map[string]bool

var snapshotKinds = []string{"ipvs", "ipset", "iptables", "addrs"}

var counterRE = regexp.MustCompile(`\[\d+:\d+\]`)

func takeIPVSSnapshot() (ipvsSnapshot, error) {
	snap := ipvsSnapshot{}
	lines := func(kind string, name string, args ...string) error {
		out, err := exec.Command(name, args...).Output()
		if err != nil {
			return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
		}
		if snap[kind] == nil {
			snap[kind] = map[string]bool{}
		}
		for _, l := range strings.Split(string(out), "\n") {
			l = strings.TrimSpace(l)
			if l == "" || strings.HasPrefix(l, "#") {
				continue
			}
			snap[kind][counterRE.ReplaceAllString(l, "")] = true
		}
		return nil
	}
	if err := lines("ipvs", "ipvsadm", "-Sn"); err != nil {
		return nil, err
	}
	if err := lines("ipset", "ipset", "save"); err != nil {
		return nil, err
	}
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		if err := lines("iptables", tool); err != nil {
			return nil, err
		}
	}
	snap["addrs"] = map[string]bool{}
	if out, err := exec.Command("/usr/bin/ip", "-o", "addr", "show", "dev", "kube-ipvs0").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			f := strings.Fields(l)
			for i := 0; i+1 < len(f); i++ {
				if f[i] == "inet" || f[i] == "inet6" {
					snap["addrs"][f[i+1]] = true
				}
			}
		}
	}
	return snap, nil
}

// flushIPVSNode removes every proxy object from the VM's kernel: iptables rules and chains of
// both families, IPVS virtual servers, ipsets (after the rules that use them), kube-ipvs0.
func flushIPVSNode() error {
	var errs []string
	for _, tool := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"nat", "filter", "mangle"} {
			for _, op := range []string{"-F", "-X"} {
				// a table that does not exist yet is fine
				_ = exec.Command(tool, "-w", "-t", table, op).Run()
			}
		}
	}
	if out, err := exec.Command("ipvsadm", "-C").CombinedOutput(); err != nil {
		errs = append(errs, fmt.Sprintf("ipvsadm -C: %v %s", err, out))
	}
	if out, err := exec.Command("ipset", "destroy").CombinedOutput(); err != nil {
		errs = append(errs, fmt.Sprintf("ipset destroy: %v %s", err, out))
	}
	_ = exec.Command("/usr/bin/ip", "link", "del", "kube-ipvs0").Run()
	if len(errs) > 0 {
		return fmt.Errorf("flush: %s", strings.Join(errs, "; "))
	}
	return nil
}

// readTimed reads the IPVS table and says when (the read's midpoint) and how long it took.
func readTimed() (ipvsState, time.Time, time.Duration, error) {
	t0 := time.Now()
	st, err := readIPVSProc()
	t1 := time.Now()
	return st, t0.Add(t1.Sub(t0) / 2), t1.Sub(t0), err
}

// nodeExtras are the other objects a ClusterIP needs on an IPVS node: its address on
// kube-ipvs0 (IPVS only sees packets to a local address) and its KUBE-CLUSTER-IP entry (the
// masquerade rule for traffic from outside the cluster CIDR matches that set). Both proxies
// name them alike.
type nodeExtras struct {
	addrs     map[string]bool // "100.100.0.1"
	clusterIP map[string]bool // "100.100.0.1,tcp:80"
}

// readExtras reads them with ip and ipset (a missing device or set reads as empty).
func readExtras() nodeExtras {
	ex := nodeExtras{addrs: map[string]bool{}, clusterIP: map[string]bool{}}
	if out, err := exec.Command("/usr/bin/ip", "-o", "-4", "addr", "show", "dev", "kube-ipvs0").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			f := strings.Fields(l)
			for i := 0; i+1 < len(f); i++ {
				if f[i] == "inet" {
					ex.addrs[strings.TrimSuffix(f[i+1], "/32")] = true
				}
			}
		}
	}
	out, err := exec.Command("ipset", "save", "KUBE-CLUSTER-IP").Output()
	if err != nil {
		return ex // no such set yet: nothing programmed
	}
	for _, l := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(l, "add KUBE-CLUSTER-IP "); ok {
			ex.clusterIP[strings.TrimSpace(rest)] = true
		}
	}
	return ex
}

// fullOK: ipvsOK, and s's ClusterIP is on kube-ipvs0 and in KUBE-CLUSTER-IP.
func fullOK(st ipvsState, ex nodeExtras, s *benchService) bool {
	return ipvsOK(st, s) && ex.addrs[s.vip] && ex.clusterIP[s.vip+",tcp:"+strconv.Itoa(servicePort)]
}
