//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kproxy/kproxy/e2e/harness"
)

// manyAddrs is n distinct IPv4 addresses in 100.64.100.0-100.64.107.255, a part of the cluster
// CIDR no node has: endpoints that are never sent traffic.
func manyAddrs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("100.64.%d.%d", 100+i/250, i%250+1)
	}
	return out
}

// Each bad object the apiserver lets through is reported once by each proxy, however many of
// its parts are bad: one log line "Skipping what cannot be programmed" naming it, and one
// Warning event (reporting controller kproxy) on it, with the first problem's reason. The
// objects: a slice with port 70000, a slice whose only port has no number, a slice with both
// problems, a slice without the kubernetes.io/service-name label. The service they claim to
// belong to keeps answering from its good slice.
func TestBadInputReportedOnceAsEvent(t *testing.T) {
	if cluster.Opts.Proxy != harness.ProxyKProxy {
		t.Skip("kproxy's reports (upstream kube-proxy logs some of these at -v=4 and sends no event)")
	}
	const ns = "bad-report"
	ctx := setup(t, ns)
	client, good := cluster.Pod(1, 1), cluster.Pod(2, 1)
	svc, err := cluster.CreateServiceWithEndpoints(ctx, ns, "svc", tcpOnly, good)
	if err != nil {
		t.Fatal(err)
	}
	firstReply(ctx, t, client.Name, harness.TCP, clusterIPAddr(svc), programTimeout)
	offsets := map[string]int64{}
	for _, n := range cluster.Nodes {
		if st, err := os.Stat(cluster.ProxyLog(n)); err == nil {
			offsets[n.Name] = st.Size()
		}
	}

	ip := good.IP.String()
	both := slice(ns, "svc-both", "svc", discoveryv1.AddressTypeIPv4, ptr.To[int32](70000), ip)
	both.Ports = append(both.Ports, discoveryv1.EndpointPort{Name: ptr.To("other"), Protocol: ptr.To(corev1.ProtocolTCP)})
	noLabel := slice(ns, "no-label", "svc", discoveryv1.AddressTypeIPv4, ptr.To[int32](harness.EchoPort), ip)
	delete(noLabel.Labels, discoveryv1.LabelServiceName)
	bad := []*discoveryv1.EndpointSlice{
		slice(ns, "svc-port-high", "svc", discoveryv1.AddressTypeIPv4, ptr.To[int32](70000), ip),
		slice(ns, "svc-port-unset", "svc", discoveryv1.AddressTypeIPv4, nil, ip),
		both,
		noLabel,
	}
	wantReason := map[string]string{
		"svc-port-high": "InvalidEndpointPort", "svc-port-unset": "InvalidEndpointPort",
		"svc-both": "InvalidEndpointPort", "no-label": "MissingServiceName",
	}
	createSlices(ctx, t, bad)

	// One event per proxy on each object.
	var events []eventsv1.Event
	harness.Eventually(t, 15*time.Second, func() error {
		list, err := cluster.Client.EventsV1().Events(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		events = list.Items
		for name := range wantReason {
			if n := len(eventsFor(events, name)); n < len(cluster.Nodes) {
				return fmt.Errorf("%d events on %s, want one per node (%d)", n, name, len(cluster.Nodes))
			}
		}
		return nil
	})
	time.Sleep(2 * time.Second) // time for a second report, if any
	list, err := cluster.Client.EventsV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	events = list.Items
	for name, reason := range wantReason {
		evs := eventsFor(events, name)
		if len(evs) != len(cluster.Nodes) {
			t.Errorf("%d events on EndpointSlice %s, want %d (one per proxy)", len(evs), name, len(cluster.Nodes))
		}
		for _, e := range evs {
			if e.Reason != reason || e.Type != corev1.EventTypeWarning || e.ReportingController != "kproxy" || e.Regarding.Kind != "EndpointSlice" {
				t.Errorf("event on %s: reason %q type %q controller %q kind %q, want %s Warning kproxy EndpointSlice", name, e.Reason, e.Type, e.ReportingController, e.Regarding.Kind, reason)
			}
		}
		if len(evs) > 0 {
			t.Logf("EndpointSlice %s: %d events, reason %s: %s", name, len(evs), evs[0].Reason, evs[0].Note)
		}
	}
	if evs := eventsFor(events, "svc-both"); len(evs) > 0 && !strings.HasPrefix(evs[0].Note, "2 problems: ") {
		t.Errorf("event on svc-both: note %q, want both problems in one event", evs[0].Note)
	}

	// One log line per proxy for each object.
	for _, n := range cluster.Nodes {
		data, err := os.ReadFile(cluster.ProxyLog(n))
		if err != nil {
			t.Fatal(err)
		}
		logged := string(data[min(offsets[n.Name], int64(len(data))):])
		for name := range wantReason {
			re := regexp.MustCompile(`"Skipping what cannot be programmed".*object="` + ns + "/" + regexp.QuoteMeta(name) + `"`)
			if got := len(re.FindAllString(logged, -1)); got != 1 {
				t.Errorf("%s: %d log lines for %s/%s, want 1", n.Name, got, ns, name)
			}
		}
		t.Logf("%s: one \"Skipping what cannot be programmed\" line for each of the %d objects", n.Name, len(wantReason))
	}
	for range 5 {
		if r, err := cluster.Request(ctx, client.Name, harness.TCP, clusterIPAddr(svc), requestTimeout); err != nil || r.Name != good.Name {
			t.Fatalf("%s with bad slices beside its good one: %q %v, want %s", clusterIPAddr(svc), r.Raw, err, good.Name)
		}
	}
	checkProxiesHealthy(ctx, t)
}

func eventsFor(events []eventsv1.Event, name string) []eventsv1.Event {
	var out []eventsv1.Event
	for _, e := range events {
		if e.Regarding.Name == name {
			out = append(out, e)
		}
	}
	return out
}

// A service with 2,000 endpoints (two slices of 1,000: the apiserver takes no more in one)
// is programmed on every node, and a service created right after it is programmed too; an
// endpoint listed in two slices of one service is used once (one KUBE-SEP chain, both
// backends answer).
func TestLargeAndDuplicateEndpointSlices(t *testing.T) {
	const ns = "bad-large"
	ctx := setup(t, ns)
	client := cluster.Pod(1, 1)
	big, err := cluster.CreateService(ctx, ns, "big", harness.ServicePort("tcp", corev1.ProtocolTCP, 80))
	if err != nil {
		t.Fatal(err)
	}
	addrs := manyAddrs(2000)
	t0 := time.Now()
	createSlices(ctx, t, []*discoveryv1.EndpointSlice{
		slice(ns, "big-1", "big", discoveryv1.AddressTypeIPv4, ptr.To[int32](harness.EchoPort), addrs[:1000]...),
		slice(ns, "big-2", "big", discoveryv1.AddressTypeIPv4, ptr.To[int32](harness.EchoPort), addrs[1000:]...),
	})
	for _, n := range cluster.Nodes {
		var count int
		harness.Eventually(t, 60*time.Second, func() error {
			count = endpointJumps(ctx, t, n, big.Spec.ClusterIP)
			if count != len(addrs) {
				return fmt.Errorf("%s: %d endpoint rules for %s, want %d", n.Name, count, big.Name, len(addrs))
			}
			return nil
		})
		t.Logf("%s: %d endpoints of %s/big programmed %v after the slices were created", n.Name, count, ns, time.Since(t0).Round(time.Millisecond))
	}
	after, err := cluster.CreateServiceWithEndpoints(ctx, ns, "after", tcpOnly, cluster.Pod(2, 1))
	if err != nil {
		t.Fatal(err)
	}
	_, took := firstReply(ctx, t, client.Name, harness.TCP, clusterIPAddr(after), programTimeout)
	t.Logf("a service created next to the 2,000 endpoints answered after %v", took.Round(time.Millisecond))

	dup, err := cluster.CreateService(ctx, ns, "dup", harness.ServicePort("tcp", corev1.ProtocolTCP, 80))
	if err != nil {
		t.Fatal(err)
	}
	p21, p22 := cluster.Pod(2, 1), cluster.Pod(2, 2)
	createSlices(ctx, t, []*discoveryv1.EndpointSlice{
		slice(ns, "dup-a", "dup", discoveryv1.AddressTypeIPv4, ptr.To[int32](harness.EchoPort), p21.IP.String(), p22.IP.String()),
		slice(ns, "dup-b", "dup", discoveryv1.AddressTypeIPv4, ptr.To[int32](harness.EchoPort), p22.IP.String()),
	})
	got, _ := untilAllSeen(ctx, t, client.Name, harness.TCP, clusterIPAddr(dup), names(p21, p22), programTimeout)
	t.Logf("%s/dup (%s in both slices): [%s]", ns, p22.Name, got)
	for _, n := range cluster.Nodes {
		if count := endpointJumps(ctx, t, n, dup.Spec.ClusterIP); count != 2 {
			t.Errorf("%s: %d endpoint rules for %s/dup, want 2 (the duplicate once)", n.Name, count, ns)
		}
	}
	checkProxiesHealthy(ctx, t)
}

// endpointJumps counts the rules of the service chain that the nat KUBE-SERVICES rule for
// clusterIP jumps to that lead to an endpoint chain.
func endpointJumps(ctx context.Context, t *testing.T, n *harness.Node, clusterIP string) int {
	t.Helper()
	dump := iptablesSave(ctx, t, n, "-t", "nat")
	var svcChain string
	for _, l := range rulesMentioning(dump, "-d "+clusterIP+"/32") {
		f := strings.Fields(l)
		if len(f) > 1 && f[1] == "KUBE-SERVICES" && strings.Contains(l, "-j KUBE-SVC-") {
			svcChain = f[len(f)-1]
		}
	}
	if svcChain == "" {
		return 0
	}
	count := 0
	for _, l := range strings.Split(dump, "\n") {
		if strings.HasPrefix(l, "-A "+svcChain+" ") && strings.Contains(l, "-j KUBE-SEP-") {
			count++
		}
	}
	return count
}
