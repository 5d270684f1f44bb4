//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/kproxy/kproxy/e2e/harness"
)

// Headless and ExternalName services, and a service labelled service.kubernetes.io/
// service-proxy-name (another proxy's), get no rules on any node (no line of iptables-save
// mentions them) and the labelled one's ClusterIP is not captured; a plain service next to
// them does get rules and answers. The label service.kubernetes.io/headless is honoured on
// EndpointSlices (the proxy's slice informer filters them out), not on Services (upstream
// v1.37): a service whose only slice has it has no endpoints, so it rejects.
func TestIgnoredServicesGetNoRules(t *testing.T) {
	const ns = "ignored"
	ctx := setup(t, ns)
	client, backend := cluster.Pod(1, 1), cluster.Pod(2, 1)
	eps := harness.Endpoints(backend)
	normal := createService(ctx, t, newService(ns, "normal", corev1.ServiceTypeClusterIP), eps)
	createService(ctx, t, newService(ns, "headless", corev1.ServiceTypeClusterIP, func(s *corev1.Service) {
		s.Spec.ClusterIP = corev1.ClusterIPNone
	}), eps)
	createService(ctx, t, newService(ns, "extname", corev1.ServiceTypeExternalName, func(s *corev1.Service) {
		s.Spec.ExternalName = "echo.example.com"
	}), eps)
	other := createService(ctx, t, newService(ns, "otherproxy", corev1.ServiceTypeNodePort, func(s *corev1.Service) {
		s.Labels = map[string]string{"service.kubernetes.io/service-proxy-name": "other-proxy"}
	}), eps)
	hl := createService(ctx, t, newService(ns, "headlessslice", corev1.ServiceTypeClusterIP), nil)
	hlSlice := harness.EndpointSlice(ns, hl.Name, []discoveryv1.EndpointPort{harness.EndpointPort("tcp", corev1.ProtocolTCP)}, eps)
	hlSlice.Labels[corev1.IsHeadlessService] = ""
	if err := cluster.ApplyEndpointSlice(ctx, hlSlice); err != nil {
		t.Fatal(err)
	}
	firstReply(ctx, t, client.Name, harness.TCP, clusterIPAddr(normal), programTimeout)
	_, err := cluster.Request(ctx, client.Name, harness.TCP, clusterIPAddr(other), requestTimeout)
	if err == nil {
		t.Errorf("%s (%s): answered, want not captured", other.Name, clusterIPAddr(other))
	}
	t.Logf("%s → %s (%s, another proxy's): %v", client.Name, clusterIPAddr(other), other.Name, err)
	err, _ = untilFails(ctx, t, client.Name, harness.TCP, clusterIPAddr(hl), harness.RequestOptions{}, refused, programTimeout)
	t.Logf("%s → %s (%s, its slice labelled %s): %v", client.Name, clusterIPAddr(hl), hl.Name, corev1.IsHeadlessService, err)
	for _, n := range cluster.Nodes {
		dump := iptablesSave(ctx, t, n)
		if len(rulesMentioning(dump, ns+"/normal:tcp")) == 0 {
			t.Errorf("%s: no rule for %s/normal", n.Name, ns)
		}
		for _, name := range []string{"headless", "extname", "otherproxy"} {
			if lines := rulesMentioning(dump, ns+"/"+name+":"); len(lines) > 0 {
				t.Errorf("%s: rules for %s/%s:\n%s", n.Name, ns, name, strings.Join(lines, "\n"))
			}
		}
		t.Logf("%s: %d lines mention %s/normal, none the ignored services", n.Name, len(rulesMentioning(dump, ns+"/normal:")), ns)
	}
}

// restartProxy restarts node n's proxy with extra flags, and with the usual flags again when the
// test ends.
func restartProxy(t *testing.T, n *harness.Node, extra ...string) {
	t.Helper()
	ctx := t.Context()
	if err := cluster.RestartProxy(ctx, n, extra...); err != nil {
		t.Fatal(err)
	}
	if len(extra) > 0 {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := cluster.RestartProxy(ctx, n); err != nil {
				t.Errorf("restart proxy on %s with its usual flags: %v", n.Name, err)
			}
		})
	}
}

// Rules deleted by hand come back. The proxy on node 1 runs with --iptables-sync-period=2s.
// The service's jump in nat KUBE-SERVICES deleted: the proxy restores it at its next sync, here
// triggered by a change to another service (upstream v1.37 syncs only on changes, on a failed
// sync, or when the canary chain is gone; its periodic full sync is hourly). The nat KUBE-SERVICES
// chain flushed and the canary chain KUBE-PROXY-CANARY deleted from mangle, nat and filter (as a
// flush of the tables would): everything is back within the sync period plus slack, with no
// change (upstream polls the mangle canary every sync period, then waits for the other two).
func TestRulesRestoredAfterManualDeletion(t *testing.T) {
	if cluster.Opts.Proxy == harness.ProxyNone {
		t.Skip("no proxy to restart")
	}
	const ns, period = "repair", 2 * time.Second
	ctx := setup(t, ns)
	n1 := cluster.Nodes[0]
	client, backend := cluster.Pod(1, 1), cluster.Pod(2, 1)
	restartProxy(t, n1, fmt.Sprintf("--iptables-sync-period=%v", period))
	svc := createService(ctx, t, newService(ns, "echo", corev1.ServiceTypeClusterIP), harness.Endpoints(backend))
	addr := clusterIPAddr(svc)
	firstReply(ctx, t, client.Name, harness.TCP, addr, programTimeout)

	// 1. The jump to the service chain, deleted.
	var jump string
	for _, l := range rulesMentioning(iptablesSave(ctx, t, n1, "-t", "nat"), "-d "+svc.Spec.ClusterIP+"/32") {
		if strings.HasPrefix(l, "-A KUBE-SERVICES ") {
			jump = l
		}
	}
	if jump == "" {
		t.Fatalf("%s: no KUBE-SERVICES rule for %s", n1.Name, svc.Spec.ClusterIP)
	}
	execSh(t, n1, "iptables -t nat "+strings.Replace(jump, "-A ", "-D ", 1))
	err, _ := untilFails(ctx, t, client.Name, harness.TCP, addr, harness.RequestOptions{}, notAnswered, 2*time.Second)
	t.Logf("deleted %q: %s → %s: %v", jump, client.Name, addr, err)
	t0 := time.Now()
	back := harness.Poll(ctx, 200*time.Millisecond, 3*period, func() error {
		_, err := cluster.Request(ctx, client.Name, harness.TCP, addr, requestTimeout)
		return err
	}) == nil
	t.Logf("jump back without any change within %v: %v", 3*period, back)
	if !back {
		other := createService(ctx, t, newService(ns, "trigger", corev1.ServiceTypeClusterIP), harness.Endpoints(backend))
		firstReply(ctx, t, client.Name, harness.TCP, clusterIPAddr(other), programTimeout)
		_, took := firstReply(ctx, t, client.Name, harness.TCP, addr, period+time.Second)
		t.Logf("after a change to another service (the next sync) the jump is back (%v after the change was programmed, %v after the deletion)", took.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	}

	// 2. The whole nat KUBE-SERVICES chain flushed and the canary deleted.
	execSh(t, n1, "iptables -t nat -F KUBE-SERVICES && for t in mangle nat filter; do iptables -t $t -X KUBE-PROXY-CANARY; done")
	err, _ = untilFails(ctx, t, client.Name, harness.TCP, addr, harness.RequestOptions{}, notAnswered, 2*time.Second)
	t.Logf("flushed nat KUBE-SERVICES, deleted KUBE-PROXY-CANARY in mangle, nat and filter: %v", err)
	_, took := firstReply(ctx, t, client.Name, harness.TCP, addr, 2*period+2*time.Second)
	t.Logf("rules back %v after the flush", took.Round(time.Millisecond))
}

func execSh(t *testing.T, n *harness.Node, script string) {
	t.Helper()
	if out, err := harness.Exec(t.Context(), n.Name, "sh", "-c", script); err != nil {
		t.Fatalf("%s: %s: %v %s", n.Name, script, err, out)
	}
}

// lineDiff returns the lines only in a and those only in b.
func lineDiff(a, b string) (onlyA, onlyB []string) {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	for _, l := range la {
		if !slices.Contains(lb, l) {
			onlyA = append(onlyA, l)
		}
	}
	for _, l := range lb {
		if !slices.Contains(la, l) {
			onlyB = append(onlyB, l)
		}
	}
	return onlyA, onlyB
}

// kproxy reads the cluster's ServiceCIDR objects (the apiserver makes "kubernetes" from its
// --service-cluster-ip-range; the e2e harness gives kproxy no such flag): filter
// KUBE-SERVICES then rejects unused service addresses and ports with one rule per range
// instead of one per ClusterIP, and both an unallocated address and a ClusterIP's other port
// are refused at once.
func TestServiceCIDRObjectsRejectUnused(t *testing.T) {
	const ns = "servicecidr"
	ctx := setup(t, ns)
	client, backend := cluster.Pod(1, 1), cluster.Pod(2, 1)
	svc := createService(ctx, t, newService(ns, "echo", corev1.ServiceTypeClusterIP), harness.Endpoints(backend))
	firstReply(ctx, t, client.Name, harness.TCP, clusterIPAddr(svc), programTimeout)
	want := fmt.Sprintf("-A KUBE-SERVICES -d %s -m comment --comment \"kubernetes service CIDR: address or port not in use\" -j REJECT", harness.ServiceCIDR)
	for _, n := range cluster.Nodes {
		dump := execOut(ctx, t, n, "iptables-save", "-t", "filter")
		if !strings.Contains(dump, want+" --reject-with icmp-port-unreachable") && !strings.Contains(dump, want+"\n") {
			t.Errorf("%s: filter KUBE-SERVICES has no rule %q:\n%s", n.Name, want, strings.Join(rulesMentioning(dump, "KUBE-SERVICES"), "\n"))
		}
		if lines := rulesMentioning(dump, "port not in use\""); len(lines) != 1 {
			t.Errorf("%s: %d \"not in use\" rules, want the one per range:\n%s", n.Name, len(lines), strings.Join(lines, "\n"))
		}
	}
	// 100.100.0.250 lies in the apiserver's static band, which dynamic allocation uses only
	// when the rest of the /16 is full; no test asks for it.
	a := harness.ServiceCIDR.Addr().As4()
	a[3] = 250
	unallocated := hostPort(netip.AddrFrom4(a).String(), 80)
	for _, addr := range []string{unallocated, hostPort(svc.Spec.ClusterIP, 81)} {
		err, _ := untilFails(ctx, t, client.Name, harness.TCP, addr, harness.RequestOptions{}, refused, programTimeout)
		t.Logf("%s → %s: %v", client.Name, addr, err)
	}
}
