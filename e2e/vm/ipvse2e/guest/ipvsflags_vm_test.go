//go:build vm

package guest

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The foreign virtual server of the --ipvs-exclude-cidrs scenario: in the service CIDR and
// on kube-ipvs0, so without the flag kproxy would take it for one of its own and delete it
// (and unbind its address). The range lies in the apiserver's static band of the service
// CIDR (the first 256 addresses of a /16), which it allocates from only once the rest is
// full, and leaves out 100.100.0.1 (default/kubernetes): no service of the test gets an
// address in it. (100.100.255.0/24 did: a random ClusterIP there was rightly kept by
// --cleanup and failed the cleanup check about one run in ten.)
const (
	excludedCIDR = "100.100.0.128/25"
	excludedIP   = "100.100.0.200"
	excludedVS   = excludedIP + ":80"
	serviceCIDR  = "100.100.0.0/16"
)

// inspectScenario runs kproxy inspect against the real kernel: it agrees with kproxy's
// state (exit 0); with kproxy stopped (SIGSTOP: no repair meanwhile) and one real server of
// echo deleted by hand, it exits 3 and names the real server; restored by hand, 0 again.
func (e *env) inspectScenario(t *testing.T) {
	vip := e.svcs["echo"].clusterIP("80")
	svc := testNS + "/echo"
	if o, code := e.inspect(svc); code != 0 {
		t.Fatalf("kproxy inspect %s: exit %d, want 0:\n%s", svc, code, o)
	}
	rss := realServers("-t", vip)
	if len(rss) == 0 {
		t.Fatalf("%s has no real server", vip)
	}
	rs := rss[0]
	e.kp.pause()
	defer e.kp.resume()
	sh(t, "ipvsadm", "-d", "-t", vip, "-r", rs)
	o, code := e.inspect(svc)
	want := "missing: " + rs + " w1"
	if code != 3 || !strings.Contains(o, want) {
		t.Errorf("kproxy inspect %s after ipvsadm -d -t %s -r %s: exit %d, want 3 and %q:\n%s", svc, vip, rs, code, want, o)
	}
	var diff []string
	for _, l := range strings.Split(o, "\n") {
		if strings.Contains(l, rs) && (strings.Contains(l, "missing:") || strings.Contains(l, "unexpected:")) {
			diff = append(diff, strings.TrimSpace(l))
		}
	}
	sh(t, "ipvsadm", "-a", "-t", vip, "-r", rs, "-m", "-w", "1")
	if o, code := e.inspect(svc); code != 0 {
		t.Errorf("kproxy inspect %s with %s restored by hand: exit %d, want 0:\n%s", svc, rs, code, o)
	}
	e.step("kproxy inspect %s: exit 0; kproxy stopped, ipvsadm -d -t %s -r %s: exit 3 naming it %q; restored: exit 0", svc, vip, rs, diff)
}

// inspect runs kproxy inspect with the daemon's flags and returns its output and exit code.
func (e *env) inspect(args ...string) (string, int) {
	cmd := exec.Command("/kproxy/kproxy", append(append([]string{"inspect"}, e.kp.args...), args...)...)
	o, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(o), 0
	case errors.As(err, &ee):
		return string(o), ee.ExitCode()
	}
	return fmt.Sprintf("%s%v", o, err), -1
}

// ipvsFlagScenarios restart kproxy (IPVS mode) with --ipvs-scheduler=sh, --ipvs-strict-arp
// and --ipvs-exclude-cidrs, with a foreign virtual server planted in the excluded range.
func (e *env) ipvsFlagScenarios(t *testing.T) {
	vip := e.svcs["echo"].clusterIP("80")
	arpBefore := arpSysctls()
	excluded := netip.MustParsePrefix(excludedCIDR)
	for name, s := range e.svcs {
		for _, ip := range []string{s.ClusterIP, s.LBIP, s.ExternalIP} {
			if a, err := netip.ParseAddr(ip); err == nil && excluded.Contains(a) {
				t.Fatalf("service %s has %s inside the excluded %s: kproxy would rightly keep it on --cleanup; pick an excluded range the apiserver does not allocate from", name, ip, excludedCIDR)
			}
		}
	}
	e.kp.kill()
	sh(t, "ipvsadm", "-A", "-t", excludedVS, "-s", "wrr")
	sh(t, "ipvsadm", "-a", "-t", excludedVS, "-r", p1.ip+":"+echoPort, "-m", "-w", "2")
	sh(t, "ip", "addr", "add", excludedIP+"/32", "dev", "kube-ipvs0")
	e.excluded = true
	flags := []string{"--ipvs-scheduler=sh", "--ipvs-strict-arp", "--ipvs-exclude-cidrs=" + excludedCIDR, "--service-cluster-ip-range=" + serviceCIDR}
	e.kp = startKProxy(t, e.root, "ipvs", flags...)
	// two syncs per family (dual-stack): the first ones, and periodic ones 5 s later
	waitForSyncLogs(t, e.kp, 4)
	e.step("kproxy restarted with %s, a foreign virtual server %s (in the service CIDR, its address on kube-ipvs0) planted; two syncs per family done",
		strings.Join(flags, " "), excludedVS)
	t.Run("IPVS/Scheduler/sh", func(t *testing.T) {
		var notSH []string
		for _, line := range strings.Split(out("ipvsadm", "-Sn"), "\n") {
			if strings.HasPrefix(line, "-A ") && !strings.Contains(line, foreignVS) && !strings.Contains(line, excludedVS) &&
				!strings.HasSuffix(line, " -s sh") && !strings.Contains(line, " -s sh ") {
				notSH = append(notSH, line)
			}
		}
		if len(notSH) > 0 {
			t.Errorf("virtual servers not on sh: %v", notSH)
		}
		fmt.Printf("KPVM ipvsadm -Ln -t %s:\n%s", vip, out("ipvsadm", "-Ln", "-t", vip))
		pod, _ := spread(t, clientNS, "tcp", vip, 10)
		node, _ := spread(t, "", "tcp", vip, 6)
		if len(pod) != 1 || len(node) != 1 {
			t.Errorf("sh scheduler: client pod -> %v, node -> %v; want one backend per client", pod, node)
		}
		e.step("--ipvs-scheduler=sh: every virtual server of kproxy's on sh; 10 requests from the client pod -> %v, 6 from the node -> %v", pod, node)
	})
	t.Run("IPVS/StrictARP", func(t *testing.T) {
		got := arpSysctls()
		if want := []string{"1", "2"}; !slices.Equal(got, want) {
			t.Errorf("arp_ignore, arp_announce = %v, want %v", got, want)
		}
		e.step("--ipvs-strict-arp: net.ipv4.conf.all.arp_ignore, arp_announce %v before, %v now", arpBefore, got)
	})
	t.Run("IPVS/ExcludeCIDRs/ForeignVirtualServerKept", func(t *testing.T) {
		checkExcluded(t)
		checkForeign(t)
		e.step("--ipvs-exclude-cidrs=%s: the foreign %s (wrr, real server weight 2) and its kube-ipvs0 address kept over the syncs", excludedCIDR, excludedVS)
	})
}

// checkExcluded checks the foreign virtual server in the excluded range and its kube-ipvs0
// address.
func checkExcluded(t *testing.T) {
	t.Helper()
	if vs := out("ipvsadm", "-Sn"); !strings.Contains(vs, "-A -t "+excludedVS+" -s wrr") ||
		!strings.Contains(vs, "-a -t "+excludedVS+" -r "+p1.ip+":"+echoPort+" -m -w 2") {
		t.Errorf("the excluded foreign virtual server %s changed:\n%s", excludedVS, vs)
	}
	if a := out("ip", "-4", "-o", "addr", "show", "dev", "kube-ipvs0"); !strings.Contains(a, " "+excludedIP+"/32") {
		t.Errorf("kube-ipvs0 lost the excluded %s:\n%s", excludedIP, a)
	}
}

// arpSysctls are net.ipv4.conf.all.arp_ignore and arp_announce.
func arpSysctls() []string {
	var v []string
	for _, n := range []string{"arp_ignore", "arp_announce"} {
		b, err := os.ReadFile("/proc/sys/net/ipv4/conf/all/" + n)
		if err != nil {
			v = append(v, err.Error())
			continue
		}
		v = append(v, strings.TrimSpace(string(b)))
	}
	return v
}
