//go:build vm

package guest

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestKProxyInVMWithRealAPIServer is the end-to-end run inside the VM. The traffic scenarios
// are the same code for every mode (KPVM_MODES, default "ipvs,iptables" from the host half):
// the first mode gets the scenarios, the endpoint changes made on the host, a restart after
// SIGKILL and tampering; each next mode starts over the previous one's state (a mode switch:
// its leftovers must go) and gets the traffic scenarios again; a switch back to the first mode
// follows; then kproxy --cleanup, which must leave only the foreign objects planted at the
// start.
func TestKProxyInVMWithRealAPIServer(t *testing.T) {
	if os.Getenv("KPROXY_IN_VM") != "1" {
		t.Skip("runs inside the IPVS test VM only (e2e/vm/ipvse2e)")
	}
	if _, err := os.Stat("/sys/class/net/eth0"); err != nil {
		t.Fatal("no eth0: boot with run-test.sh -n PORT")
	}
	modes := strings.Split(envOr("KPVM_MODES", "ipvs"), ",")
	svcs := readServices(t)
	t0 := time.Now()
	e := &env{root: t, svcs: svcs, echoEPs: []string{p1.ns, p2.ns}, step: func(format string, args ...any) {
		fmt.Printf("KPVM %6.2fs %s\n", time.Since(t0).Seconds(), fmt.Sprintf(format, args...))
	}}
	setupNode(t)
	if e.sctpErr = sctpAvailable(); e.sctpErr == nil {
		for _, p := range []pod{p1, p2} {
			if err := startSCTPServer(p.ns, p.ns, 8080); err != nil {
				t.Fatal(err)
			}
		}
	}
	plantForeign(t)
	e.step("node ready: cni0 100.64.9.0/24 (this node), cni1 100.64.10.0/24 (\"kpvm-other\"), external client %s (and %s); SCTP echo in %s, %s: %v; foreign IPVS service, set and chain planted",
		extIP, extIP2, p1.ns, p2.ns, errOrOK(e.sctpErr))
	t.Cleanup(func() {
		if t.Failed() {
			dumpState()
		}
	})

	first := modes[0]
	ok := t.Run(first, func(t *testing.T) {
		e.kp = startKProxy(t, e.root, first)
		e.step("kproxy %s: /healthz 200", strings.Join(e.kp.args, " "))
		e.trafficScenarios(t)
		if first == "ipvs" {
			e.ipvsScenarios(t)
		}
		if os.Getenv("KPVM_DYNAMIC") == "1" {
			e.endpointScenarios(t)
		}
		e.reliabilityScenarios(t)
	})
	if !ok {
		return
	}
	var switches []string
	if len(modes) > 1 {
		switches = append(slices.Clone(modes[1:]), first) // and back
	}
	for _, mode := range switches {
		if !t.Run("switch-to-"+mode, func(t *testing.T) { e.switchMode(t, mode) }) {
			return
		}
	}
	if e.kp.mode == "ipvs" && !t.Run("ipvs-flags", e.ipvsFlagScenarios) {
		return
	}
	t.Run("cleanup", e.cleanupScenario)
}

// env is the state the scenarios share.
type env struct {
	root    *testing.T // kproxy processes live until it ends, whichever subtest starts them
	svcs    map[string]service
	kp      *kproxy
	echoEPs []string // echo's endpoints now (the host's steps change them)
	step    func(format string, args ...any)
	sctpErr error // why the kernel has no SCTP sockets (nil: it has)
	// excluded is the foreign virtual server in --ipvs-exclude-cidrs, once planted
	// (ipvsFlagScenarios); kproxy --cleanup is then run with the flag too.
	excluded bool
}

// trafficScenarios are the same for every mode.
func (e *env) trafficScenarios(t *testing.T) {
	echo, empty := e.svcs["echo"], e.svcs["empty"]
	t.Run("ClusterIP/TCP/FromPod", func(t *testing.T) {
		clients := waitForAll(t, clientNS, "tcp", echo.clusterIP("80"), 30*time.Second, e.echoEPs...)
		if !slices.Equal(clients, []string{clientIP}) {
			t.Errorf("backends saw %v, want the pod's own %s", clients, clientIP)
		}
		e.step("client pod -> %s tcp: answered by %v, source kept (%v)", echo.clusterIP("80"), e.echoEPs, clients)
	})
	t.Run("ClusterIP/UDP/FromPod", func(t *testing.T) {
		waitForAll(t, clientNS, "udp", echo.clusterIP("80"), 30*time.Second, e.echoEPs...)
		e.step("client pod -> %s udp: answered by %v", echo.clusterIP("80"), e.echoEPs)
	})
	t.Run("ClusterIP/TCP/FromNode", func(t *testing.T) {
		waitForAll(t, "", "tcp", echo.clusterIP("80"), 30*time.Second, e.echoEPs...)
	})
	t.Run("NoEndpoints/RejectedAtOnce", func(t *testing.T) {
		for _, from := range []string{clientNS, ""} {
			addr := empty.clusterIP("80")
			start := time.Now()
			_, err := request(from, "tcp", addr)
			if d := time.Since(start); !refused(err) || d > time.Second {
				t.Errorf("%s -> %s (no endpoints): %v after %v, want connection refused at once", nsName(from), addr, err, d)
			}
		}
		_, err := request(clientNS, "tcp", echo.clusterIP("81"))
		if !refused(err) {
			t.Errorf("client pod -> %s (not a service port): %v, want connection refused", echo.clusterIP("81"), err)
		}
		e.step("no endpoints (%s) and a port that is not a service port (%s): refused", empty.clusterIP("80"), echo.clusterIP("81"))
	})
	t.Run("NodePort/ClusterPolicy/FromOutside", func(t *testing.T) {
		np := e.svcs["np-cluster"]
		clients := waitForAll(t, extNS, "tcp", np.nodePort(), 30*time.Second, p1.ns, r1.ns)
		if slices.Contains(clients, extIP) {
			t.Errorf("backends saw %v: the external client %s was not masqueraded", clients, extIP)
		}
		e.step("external %s -> %s (externalTrafficPolicy=Cluster): answered by %s and %s, masqueraded to %v", extIP, np.nodePort(), p1.ns, r1.ns, clients)
	})
	t.Run("NodePort/LocalPolicy/FromOutside", func(t *testing.T) {
		np := e.svcs["np-local"]
		waitForAll(t, extNS, "tcp", np.nodePort(), 30*time.Second, p2.ns)
		names, clients := spread(t, extNS, "tcp", np.nodePort(), 8)
		if len(names) != 1 || names[p2.ns] != 8 || !slices.Equal(clients, []string{extIP}) {
			t.Errorf("8 requests: answered by %v, backends saw %v; want only the local %s, client %s kept", names, clients, p2.ns, extIP)
		}
		e.step("external %s -> %s (externalTrafficPolicy=Local, endpoints %s local and %s remote): 8/8 to %s, client IP kept %v", extIP, np.nodePort(), p2.ns, r1.ns, p2.ns, clients)
	})
	e.etpLocalScenarios(t)
	t.Run("SessionAffinity/ClientIP", func(t *testing.T) {
		aff := e.svcs["affinity"]
		waitFor(t, 30*time.Second, "affinity service answers", func() error {
			_, err := request(clientNS, "tcp", aff.clusterIP("80"))
			return err
		})
		names, _ := spread(t, clientNS, "tcp", aff.clusterIP("80"), 10)
		if len(names) != 1 {
			t.Errorf("10 requests with sessionAffinity ClientIP: %v, want one backend", names)
		}
		other, _ := spread(t, "", "tcp", aff.clusterIP("80"), 6)
		if len(other) != 1 {
			t.Errorf("6 requests from the node: %v, want one backend", other)
		}
		e.step("sessionAffinity ClientIP %s: client pod -> %v, node -> %v", aff.clusterIP("80"), names, other)
	})
	e.featureScenarios(t)
}

// etpLocalScenarios: lb-local has externalTrafficPolicy=Local and no endpoint on this node.
// From outside its addresses are not served (no local endpoint); from a pod and from the
// node they reach every endpoint (kubernetes #71596, #93456, #75262 in upstream's IPVS
// mode).
func (e *env) etpLocalScenarios(t *testing.T) {
	lb := e.svcs["lb-local"]
	addrs := map[string]string{"LBIP": lb.LBIP + ":80", "ExternalIP": lb.ExternalIP + ":80"}
	for _, kind := range []string{"LBIP", "ExternalIP"} {
		addr := addrs[kind]
		t.Run("ETPLocal/NoLocalEndpoint/FromPod/"+kind, func(t *testing.T) {
			clients := waitForAll(t, clientNS, "tcp", addr, 30*time.Second, r1.ns, r2.ns)
			if !slices.Equal(clients, []string{clientIP}) {
				t.Errorf("backends saw %v, want the pod's own %s", clients, clientIP)
			}
			e.step("client pod -> %s (%s, Local, no local endpoint): answered by %s and %s, source kept", addr, kind, r1.ns, r2.ns)
		})
		t.Run("ETPLocal/NoLocalEndpoint/FromNode/"+kind, func(t *testing.T) {
			waitForAll(t, "", "tcp", addr, 30*time.Second, r1.ns, r2.ns)
			e.step("node -> %s (%s, Local, no local endpoint): answered by %s and %s", addr, kind, r1.ns, r2.ns)
		})
	}
	t.Run("ETPLocal/NoLocalEndpoint/FromOutside", func(t *testing.T) {
		for _, addr := range []string{addrs["LBIP"], addrs["ExternalIP"], lb.nodePort()} {
			start := time.Now()
			r, err := request(extNS, "tcp", addr)
			if err == nil {
				t.Errorf("external -> %s: answered by %s (client %s), want no answer: no local endpoint", addr, r.name, r.client)
				continue
			}
			e.step("external %s -> %s (Local, no local endpoint): not served (%v after %dms)", extIP, addr, shortErr(err), time.Since(start).Milliseconds())
		}
	})
}

// ipvsScenarios look at the kernel's IPVS state.
func (e *env) ipvsScenarios(t *testing.T) {
	echo, lb := e.svcs["echo"], e.svcs["lb-local"]
	t.Run("IPVS/IpvsadmOneVirtualServerPerServicePort", func(t *testing.T) {
		all := out("ipvsadm", "-Ln")
		fmt.Printf("KPVM ipvsadm -Ln:\n%s", all)
		for _, vs := range []string{"TCP  " + echo.clusterIP("80"), "UDP  " + echo.clusterIP("80"),
			"TCP  " + lb.LBIP + ":80", "TCP  " + lb.ExternalIP + ":80", "TCP  " + lb.nodePort(),
			"TCP  " + e.svcs["lb-src"].LBIP + ":80", "TCP  " + e.svcs["lb-hc"].LBIP + ":80", "SCTP " + e.svcs["sctp"].clusterIP("80"),
			"TCP  " + e.svcs["dual"].clusterIP6("80"), "TCP  " + e.svcs["dual"].nodePort6()} {
			if n := strings.Count(all, vs+" "); n != 1 {
				t.Errorf("ipvsadm -Ln: %d virtual servers %q, want 1", n, vs)
			}
		}
		if rs := realServers("-t", echo.clusterIP("80")); !slices.Equal(rs, []string{p1.ip + ":" + echoPort, p2.ip + ":" + echoPort}) {
			t.Errorf("real servers of %s: %v", echo.clusterIP("80"), rs)
		}
		if rs := realServers("-t", lb.LBIP+":80"); len(rs) != 0 {
			t.Errorf("real servers of %s (Local, no local endpoint): %v, want none", lb.LBIP, rs)
		}
		if aff := out("ipvsadm", "-Ln", "-t", e.svcs["affinity"].clusterIP("80")); !strings.Contains(aff, "persistent 10800") {
			t.Errorf("affinity service is not persistent 10800:\n%s", aff)
		}
	})
	t.Run("IPVS/KubeIPVS0HoldsTheServiceIPs", func(t *testing.T) {
		a := out("ip", "-4", "-o", "addr", "show", "dev", "kube-ipvs0")
		want := 1 // default/kubernetes's ClusterIP
		for name, s := range e.svcs {
			for _, ip := range []string{s.ClusterIP, s.LBIP, s.ExternalIP} {
				if ip == "" {
					continue
				}
				want++
				if !strings.Contains(a, " "+ip+"/32") {
					t.Errorf("kube-ipvs0 lacks %s's %s", name, ip)
				}
			}
		}
		if strings.Contains(a, " "+nodeIP+"/") {
			t.Errorf("kube-ipvs0 holds the node IP:\n%s", a)
		}
		if a6 := out("ip", "-6", "-o", "addr", "show", "dev", "kube-ipvs0"); !strings.Contains(a6, " "+e.svcs["dual"].ClusterIP6+"/128") {
			t.Errorf("kube-ipvs0 lacks dual's IPv6 ClusterIP %s:\n%s", e.svcs["dual"].ClusterIP6, a6)
		}
		if n := strings.Count(a, "\n"); n != want {
			t.Errorf("kube-ipvs0 has %d addresses, want %d:\n%s", n, want, a)
		}
	})
	t.Run("IPVS/InspectFlagsARealServerDeletedByHand", e.inspectScenario)
	t.Run("IPVS/ForeignObjectsUntouched", func(t *testing.T) { checkForeign(t) })
	t.Run("IPVS/Metrics", func(t *testing.T) {
		m := scrape(t)
		for _, want := range []struct {
			re  string
			min float64
		}{
			{`kubeproxy_sync_proxy_rules_duration_seconds_count\{ip_family="IPv4"\} (\S+)`, 1},
			{`kubeproxy_sync_proxy_rules_ipvs_virtual_servers\{ip_family="IPv4"\} (\S+)`, 10},
			{`kubeproxy_sync_proxy_rules_ipvs_real_servers\{ip_family="IPv4"\} (\S+)`, 2},
			// the IPv6 stack (dual's ClusterIP and node port) has metrics of its own
			{`kubeproxy_sync_proxy_rules_ipvs_virtual_servers\{ip_family="IPv6"\} (\S+)`, 2},
			{`kubeproxy_sync_proxy_rules_no_local_endpoints_total\{ip_family="IPv4",traffic_policy="external"\} (\S+)`, 1},
			{`kubeproxy_sync_proxy_rules_iptables_total\{ip_family="IPv4",table="nat"\} (\S+)`, 10},
		} {
			v, line := metric(m, want.re)
			if v < want.min {
				t.Errorf("metric %s = %v, want >= %v", want.re, v, want.min)
			}
			fmt.Printf("KPVM metric %s\n", line)
		}
	})
}

// endpointScenarios: the host rewrites echo's EndpointSlice when the guest asks.
func (e *env) endpointScenarios(t *testing.T) {
	echo := e.svcs["echo"]
	vip := echo.clusterIP("80")
	t.Run("Endpoints/AddedFromHost", func(t *testing.T) {
		t1 := time.Now()
		fmt.Println("KPVM-STEP add-endpoint")
		waitFor(t, 30*time.Second, p3.ns+" answers through "+vip, func() error {
			r, err := request(clientNS, "tcp", vip)
			if err != nil {
				return err
			}
			if r.name != p3.ns {
				return fmt.Errorf("answered by %s", r.name)
			}
			return nil
		})
		e.echoEPs = []string{p1.ns, p2.ns, p3.ns}
		e.step("endpoint %s added on the host: answers after %dms", p3.ip, time.Since(t1).Milliseconds())
	})
	t.Run("Endpoints/GracefulTermination", func(t *testing.T) {
		// a connection held open to p1, which the host then removes
		var held *heldConn
		for i := 0; i < 6 && held == nil; i++ {
			h, name, err := hold(clientNS, vip)
			if err != nil {
				t.Fatal(err)
			}
			if name == p1.ns {
				held = h
			} else {
				h.close()
			}
		}
		if held == nil {
			t.Fatalf("no connection through %s landed on %s in 6 tries", vip, p1.ns)
		}
		defer held.close()
		t1 := time.Now()
		fmt.Println("KPVM-STEP remove-endpoint")
		e.echoEPs = []string{p2.ns, p3.ns}
		rsP1 := p1.ip + ":" + echoPort
		if e.kp.mode == "ipvs" {
			waitFor(t, 30*time.Second, p1.ns+" at weight 0 with its connection", func() error {
				w, active := rsWeight(vip, rsP1)
				if w != "0" || active < 1 {
					return fmt.Errorf("weight %s, active %d", w, active)
				}
				return nil
			})
			e.step("endpoint %s removed on the host: weight 0 after %dms, its connection still active", p1.ip, time.Since(t1).Milliseconds())
		}
		for i := 0; i < 12; i++ {
			r, err := request(clientNS, "tcp", vip)
			if err != nil {
				t.Fatal(err)
			}
			if r.name == p1.ns {
				t.Fatalf("removed endpoint %s got a new connection", p1.ns)
			}
		}
		if name, err := held.ping(); err != nil || name != p1.ns {
			t.Fatalf("the held connection: %q, %v; want %s still answering", name, err, p1.ns)
		}
		e.step("12 new connections, none to %s; the held one still answered by %s", p1.ns, p1.ns)
		held.close()
		if e.kp.mode == "ipvs" {
			t2 := time.Now()
			waitFor(t, 45*time.Second, p1.ns+" deleted once its connection is gone", func() error {
				if w, _ := rsWeight(vip, rsP1); w != "" {
					return fmt.Errorf("still there, weight %s", w)
				}
				return nil
			})
			e.step("held connection reset: real server %s deleted %dms later (IPVS CLOSE state 10 s + a sync)", rsP1, time.Since(t2).Milliseconds())
		}
	})
}

// reliabilityScenarios: restart after SIGKILL with a long connection open, and kernel
// state removed by hand.
func (e *env) reliabilityScenarios(t *testing.T) {
	echo := e.svcs["echo"]
	vip := echo.clusterIP("80")
	t.Run("Restart/SIGKILLKeepsConnectionsAndChangesNothing", func(t *testing.T) {
		held, name, err := hold(clientNS, vip)
		if err != nil {
			t.Fatal(err)
		}
		defer held.close()
		waitFor(t, 30*time.Second, "no real server draining", func() error {
			if strings.Contains(out("ipvsadm", "-Sn"), "-w 0") {
				return fmt.Errorf("draining:\n%s", out("ipvsadm", "-Ln"))
			}
			return nil
		})
		before := kernelState()
		mode := e.kp.mode
		e.kp.kill()
		start := time.Now()
		e.kp = startKProxy(t, e.root, mode)
		synced := waitForSyncLogs(t, e.kp, 2) // one per family: the node is dual-stack
		after := kernelState()
		if before != after {
			t.Errorf("the kernel state changed across the restart:\n%s", diffLines(before, after))
		}
		for _, line := range synced {
			if n := writes(line); n != 0 {
				t.Errorf("first sync after the restart wrote %d objects: %s", n, line)
			}
		}
		for i := 0; i < 3; i++ {
			if got, err := held.ping(); err != nil || got != name {
				t.Fatalf("held connection after the restart: %q, %v; want %s", got, err, name)
			}
			time.Sleep(200 * time.Millisecond)
		}
		e.step("kproxy SIGKILLed and restarted (healthy %dms later): first syncs %s; kernel state identical (%d lines: ipvsadm -Sn, ipset save, iptables-save, ip6tables-save, kube-ipvs0); held connection to %s still answers",
			time.Since(start).Milliseconds(), strings.Join(synced, "; "), strings.Count(before, "\n"), name)
	})
	if e.kp.mode != "ipvs" {
		return
	}
	t.Run("Tamper/VirtualServerDeletedByHand", func(t *testing.T) {
		sh(t, "ipvsadm", "-D", "-t", vip)
		d := waitFor(t, 15*time.Second, "virtual server "+vip+" back", func() error {
			if rs := realServers("-t", vip); len(rs) != len(e.echoEPs) {
				return fmt.Errorf("real servers %v", rs)
			}
			_, err := request(clientNS, "tcp", vip)
			return err
		})
		e.step("ipvsadm -D -t %s: back with %d real servers after %dms (sync period 5 s)", vip, len(e.echoEPs), d.Milliseconds())
	})
	t.Run("Tamper/RealServerDeletedByHand", func(t *testing.T) {
		rss := realServers("-t", vip)
		if len(rss) == 0 {
			t.Fatalf("%s has no real server", vip)
		}
		rs := rss[len(rss)-1]
		sh(t, "ipvsadm", "-d", "-t", vip, "-r", rs)
		d := waitFor(t, 15*time.Second, "real server "+rs+" of "+vip+" back", func() error {
			if got := realServers("-t", vip); !slices.Contains(got, rs) {
				return fmt.Errorf("real servers %v", got)
			}
			return nil
		})
		e.step("ipvsadm -d -t %s -r %s: back after %dms (sync period 5 s)", vip, rs, d.Milliseconds())
	})
	t.Run("Tamper/SetFlushedByHand", func(t *testing.T) {
		entries := func() int { return strings.Count(out("ipset", "list", "KUBE-CLUSTER-IP"), "\n100.100.") }
		want := entries()
		sh(t, "ipset", "flush", "KUBE-CLUSTER-IP")
		d := waitFor(t, 15*time.Second, "KUBE-CLUSTER-IP refilled", func() error {
			if n := entries(); n != want {
				return fmt.Errorf("%d entries, want %d", n, want)
			}
			return nil
		})
		e.step("ipset flush KUBE-CLUSTER-IP: %d entries back after %dms", want, d.Milliseconds())
	})
	t.Run("Tamper/ChainFlushedByHand", func(t *testing.T) {
		sh(t, "iptables", "-t", "nat", "-F", "KUBE-SERVICES")
		d := waitFor(t, 15*time.Second, "KUBE-SERVICES rules back", func() error {
			if n := strings.Count(out("iptables", "-t", "nat", "-S", "KUBE-SERVICES"), "-A KUBE-SERVICES"); n < 5 {
				return fmt.Errorf("%d rules", n)
			}
			return nil
		})
		e.step("iptables -t nat -F KUBE-SERVICES: back after %dms", d.Milliseconds())
	})
}

// switchMode restarts kproxy in another mode over the current one's state.
func (e *env) switchMode(t *testing.T, mode string) {
	prev := e.kp.mode
	e.kp.kill()
	start := time.Now()
	e.kp = startKProxy(t, e.root, mode)
	e.step("kproxy --mode=%s started over --mode=%s's state: healthy after %dms", mode, prev, time.Since(start).Milliseconds())
	t.Run("PreviousModeRemoved", func(t *testing.T) {
		waitFor(t, 20*time.Second, "the "+prev+" mode's objects gone", func() error {
			return leftovers(prev, e.svcs)
		})
		checkForeign(t)
		e.step("--mode=%s's objects gone, foreign ones kept", prev)
	})
	e.trafficScenarios(t)
}

// cleanupScenario: kproxy --cleanup removes every object of both modes and leaves the
// foreign ones.
func (e *env) cleanupScenario(t *testing.T) {
	e.kp.kill()
	args := []string{"--cleanup", "-v=2"}
	if e.excluded {
		args = append(args, "--ipvs-exclude-cidrs="+excludedCIDR)
	}
	o, err := runOut("/kproxy/kproxy", args...)
	if err != nil {
		t.Fatalf("kproxy --cleanup: %v\n%s", err, o)
	}
	fmt.Printf("KPVM kproxy %s:\n%s", strings.Join(args, " "), o)
	for _, mode := range []string{"ipvs", "iptables"} {
		if err := leftovers(mode, e.svcs); err != nil {
			t.Error(err)
		}
	}
	a := out("ip", "-4", "-o", "addr", "show", "dev", "kube-ipvs0")
	switch {
	case !e.excluded && !strings.Contains(a, "does not exist"):
		t.Errorf("kube-ipvs0 still there:\n%s", a)
	case e.excluded && (strings.Count(a, "\n") != 1 || !strings.Contains(a, " "+excludedIP+"/32")):
		t.Errorf("kube-ipvs0 after --cleanup --ipvs-exclude-cidrs=%s: want only %s:\n%s", excludedCIDR, excludedIP, a)
	}
	if sets := strings.Fields(out("ipset", "list", "-n")); !slices.Equal(sets, []string{foreignSet}) {
		t.Errorf("sets after --cleanup: %v, want only %s", sets, foreignSet)
	}
	if chains := ourChains(); len(chains) > 0 {
		t.Errorf("chains of kproxy's left: %v", chains)
	}
	checkForeign(t)
	if e.excluded {
		checkExcluded(t)
	}
	e.step("kproxy %s: no virtual server, set, chain or kube-ipvs0 address of kproxy's left; the foreign IPVS services, set and chain kept\nipvsadm -Ln:\n%s",
		strings.Join(args, " "), out("ipvsadm", "-Ln"))
}

// The foreign objects: another program's IPVS service (with a real server of weight 3),
// set and chain (with a jump from PREROUTING). kproxy must never touch them.
const (
	foreignVS    = "10.99.0.1:80"
	foreignSet   = "FOREIGN-SET"
	foreignChain = "CNI-FOREIGN"
)

func plantForeign(t *testing.T) {
	t.Helper()
	sh(t, "ipvsadm", "-A", "-t", foreignVS, "-s", "wrr")
	sh(t, "ipvsadm", "-a", "-t", foreignVS, "-r", p1.ip+":"+echoPort, "-m", "-w", "3")
	sh(t, "ipset", "create", foreignSet, "hash:ip")
	sh(t, "ipset", "add", foreignSet, "10.99.0.2")
	sh(t, "iptables", "-t", "nat", "-N", foreignChain)
	sh(t, "iptables", "-t", "nat", "-A", foreignChain, "-d", "10.99.0.3/32", "-j", "RETURN")
	sh(t, "iptables", "-t", "nat", "-A", "PREROUTING", "-j", foreignChain)
}

func checkForeign(t *testing.T) {
	t.Helper()
	if vs := out("ipvsadm", "-Sn"); !strings.Contains(vs, "-A -t "+foreignVS+" -s wrr") ||
		!strings.Contains(vs, "-a -t "+foreignVS+" -r "+p1.ip+":"+echoPort+" -m -w 3") {
		t.Errorf("foreign virtual server changed:\n%s", vs)
	}
	if s := out("ipset", "list", foreignSet); !strings.Contains(s, "10.99.0.2") {
		t.Errorf("foreign set changed:\n%s", s)
	}
	nat := out("iptables-save", "-t", "nat")
	if !strings.Contains(nat, "-A "+foreignChain+" -d 10.99.0.3/32 -j RETURN") || !strings.Contains(nat, "-A PREROUTING -j "+foreignChain) {
		t.Errorf("foreign chain or its jump changed:\n%s", nat)
	}
}

// leftovers returns an error naming what is left of a mode's objects.
func leftovers(mode string, svcs map[string]service) error {
	var left []string
	switch mode {
	case "ipvs":
		for _, line := range strings.Split(out("ipvsadm", "-Sn"), "\n") {
			if strings.HasPrefix(line, "-A ") && !strings.Contains(line, foreignVS) && !strings.Contains(line, excludedVS) {
				left = append(left, line)
			}
		}
		for _, line := range strings.Split(out("ip", "-o", "addr", "show", "dev", "kube-ipvs0"), "\n") {
			if strings.Contains(line, "inet") && !strings.Contains(line, " "+excludedIP+"/32") {
				left = append(left, "kube-ipvs0 addresses")
				break
			}
		}
		for _, s := range strings.Fields(out("ipset", "list", "-n")) {
			if strings.HasPrefix(s, "KUBE-") {
				left = append(left, "set "+s)
			}
		}
		for _, c := range []string{"KUBE-IPVS-FILTER", "KUBE-LOAD-BALANCER", "KPROXY-EXT-SHORTCUT"} {
			if strings.Contains(saveBoth(), ":"+c+" ") {
				left = append(left, "chain "+c)
			}
		}
	case "iptables":
		for _, line := range strings.Split(saveBoth(), "\n") {
			for _, prefix := range []string{":KUBE-SVC-", ":KUBE-SEP-", ":KUBE-EXT-", ":KUBE-NODEPORTS ", ":KUBE-EXTERNAL-SERVICES "} {
				if strings.HasPrefix(line, prefix) {
					left = append(left, strings.Fields(line)[0])
				}
			}
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("--mode=%s leftovers: %v", mode, left)
	}
	return nil
}

// saveBoth is iptables-save's and ip6tables-save's output.
func saveBoth() string { return out("iptables-save") + out("ip6tables-save") }

// ourChains lists the chains of kproxy's (KUBE-, KPROXY-) in iptables-save and
// ip6tables-save, but kubelet's.
func ourChains() []string {
	var chains []string
	for _, line := range strings.Split(saveBoth(), "\n") {
		if c, ok := strings.CutPrefix(line, ":"); ok && (strings.HasPrefix(c, "KUBE-") || strings.HasPrefix(c, "KPROXY-")) &&
			!strings.HasPrefix(c, "KUBE-FIREWALL ") && !strings.HasPrefix(c, "KUBE-KUBELET-CANARY ") {
			chains = append(chains, strings.Fields(c)[0])
		}
	}
	return chains
}

// kernelState is what a restart must not change: the IPVS table (without counters), the
// sets, the rules of both families (without counters), kube-ipvs0's addresses.
func kernelState() string {
	var b strings.Builder
	b.WriteString(out("ipvsadm", "-Sn"))
	sets := strings.Split(out("ipset", "save"), "\n")
	slices.Sort(sets)
	b.WriteString(strings.Join(sets, "\n") + "\n")
	counters := regexp.MustCompile(`\[\d+:\d+\]`)
	for _, line := range strings.Split(saveBoth(), "\n") {
		if !strings.HasPrefix(line, "#") {
			b.WriteString(counters.ReplaceAllString(line, "") + "\n")
		}
	}
	b.WriteString(out("ip", "-o", "addr", "show", "dev", "kube-ipvs0"))
	return b.String()
}

func diffLines(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var d []string
	for _, l := range al {
		if !slices.Contains(bl, l) {
			d = append(d, "- "+l)
		}
	}
	for _, l := range bl {
		if !slices.Contains(al, l) {
			d = append(d, "+ "+l)
		}
	}
	return strings.Join(d, "\n")
}

var syncLogRE = regexp.MustCompile(`"Synced (IPVS|iptables) rules".*`)
var writesRE = regexp.MustCompile(`(?:writes|restores)=(\d+)`)

// waitForSyncLogs waits for the first n sync summaries of k and returns them.
func waitForSyncLogs(t *testing.T, k *kproxy, n int) []string {
	t.Helper()
	var lines []string
	waitFor(t, 30*time.Second, fmt.Sprintf("%d sync summaries in kproxy's log", n), func() error {
		lines = syncLogRE.FindAllString(k.log.String(), n)
		if len(lines) < n {
			return fmt.Errorf("%d so far", len(lines))
		}
		return nil
	})
	return lines
}

// writes is the writes=N (IPVS mode) or restores=N (iptables mode) of a sync summary (-1
// when absent).
func writes(line string) int {
	m := writesRE.FindStringSubmatch(line)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// realServers lists the real servers (IP:port) of one virtual server ("-t", "IP:PORT").
func realServers(kind, vip string) []string {
	var rs []string
	for _, line := range strings.Split(out("ipvsadm", "-Ln", kind, vip), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "->" && f[1] != "RemoteAddress:Port" {
			rs = append(rs, f[1])
		}
	}
	slices.Sort(rs)
	return rs
}

// rsWeight is the weight and active connections of a TCP real server ("" when absent).
func rsWeight(vip, rs string) (string, int) {
	for _, line := range strings.Split(out("ipvsadm", "-Ln", "-t", vip), "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && f[0] == "->" && f[1] == rs {
			n, _ := strconv.Atoi(f[4])
			return f[3], n
		}
	}
	return "", 0
}

func scrape(t *testing.T) string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 3 * time.Second}).Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// metric returns the value of the first line matching re (with the value as its group).
func metric(text, re string) (float64, string) {
	m := regexp.MustCompile(`(?m)^` + re + `$`).FindStringSubmatch(text)
	if m == nil {
		return -1, re + ": absent"
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v, m[0]
}

func runOut(name string, args ...string) (string, error) {
	o, err := exec.Command(name, args...).CombinedOutput()
	return string(o), err
}

func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
