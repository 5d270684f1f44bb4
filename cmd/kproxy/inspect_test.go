package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/ipset"
	"github.com/kproxy/kproxy/iptables"
	iptproxy "github.com/kproxy/kproxy/iptables/proxy"
	"github.com/kproxy/kproxy/ipvs"
)

var updateInspect = flag.Bool("update-inspect", false, "rewrite testdata/inspect-*.golden")

// inspectWorld is two services as the API returns them: web (a ready endpoint on this node,
// a serving-terminating one on another, so unused) and noeps (no endpoints), and a bad slice.
func inspectWorld() ([]*v1.Service, []*discovery.EndpointSlice) {
	svc := func(name, ip string) *v1.Service {
		return &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, ResourceVersion: "1"},
			Spec: v1.ServiceSpec{Type: v1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip},
				Ports: []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80}}}}
	}
	ep := func(ip, node string, ready, terminating bool) discovery.Endpoint {
		return discovery.Endpoint{Addresses: []string{ip}, NodeName: ptr.To(node),
			Conditions: discovery.EndpointConditions{Ready: ptr.To(ready), Serving: ptr.To(true), Terminating: ptr.To(terminating)}}
	}
	port := []discovery.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(v1.ProtocolTCP), Port: ptr.To[int32](8080)}}
	slice := func(name, svc string, eps ...discovery.Endpoint) *discovery.EndpointSlice {
		return &discovery.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, ResourceVersion: "1",
			Labels: map[string]string{discovery.LabelServiceName: svc}},
			AddressType: discovery.AddressTypeIPv4, Ports: port, Endpoints: eps}
	}
	bad := slice("web-bad", "web")
	bad.Ports = []discovery.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(v1.ProtocolTCP), Port: ptr.To[int32](70000)}}
	return []*v1.Service{svc("web", "100.100.0.10"), svc("noeps", "100.100.0.20")},
		[]*discovery.EndpointSlice{slice("web-1", "web", ep("100.64.1.11", "n1", true, false), ep("100.64.2.11", "n2", false, true)), bad}
}

var inspectNode = endpoints.NodeInfo{Name: "n1", Zone: "zone-1"}

func snapshotOf(svcs []*v1.Service, sls []*discovery.EndpointSlice) endpoints.Snapshot {
	tr := endpoints.NewTracker(endpoints.TrackerOptions{})
	for _, s := range svcs {
		tr.OnServiceAdd(s)
	}
	for _, s := range sls {
		tr.OnEndpointSliceAdd(s)
	}
	return tr.Checkout()
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *updateInspect {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update-inspect)", err)
	}
	if d := cmp.Diff(string(want), got); d != "" {
		t.Errorf("%s (-want +got):\n%s", path, d)
	}
}

func textOf(t *testing.T, rep inspectReport, verbose bool) string {
	t.Helper()
	var b bytes.Buffer
	if err := writeText(&b, []inspectReport{rep}, verbose); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// In iptables mode, over an iptables Fake the proxier synced: the chain path and DNAT target
// of each port, the REJECT of the port without endpoints, no difference; then, with the
// kernel tampered with, every difference; and traces from a pod and from the node.
func TestInspectIPTables(t *testing.T) {
	ctx := context.Background()
	svcs, sls := inspectWorld()
	cfg := iptproxy.Config{Family: iptables.IPv4, ClusterCIDR: netip.MustParsePrefix("100.64.0.0/16"),
		NodeIP: netip.MustParseAddr("192.0.2.11")}
	fake := iptables.NewFake(iptables.IPv4)
	if err := iptproxy.NewProxier(fake, cfg).Apply(ctx, snapshotOf(svcs, sls), inspectNode, true); err != nil {
		t.Fatal(err)
	}
	mode := &iptablesInspector{cfg: cfg, ipt: fake, local: []netip.Addr{netip.MustParseAddr("192.0.2.11")}}
	in := inspectInput{Services: svcs, Slices: sls, Node: inspectNode, Family: v1.IPv4Protocol, Mode: mode}
	rep, err := buildReport(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "inspect-iptables.golden", textOf(t, rep, true))
	for _, p := range rep.Ports {
		if len(p.Diff) > 0 {
			t.Errorf("%s: differences right after a sync: %q", p.Name, p.Diff)
		}
	}

	// The service chain flushed and a stale endpoint chain added by hand.
	web := rep.Ports[1]
	var svcChain string
	for _, s := range web.Kernel {
		if strings.HasPrefix(s.Name, "nat KUBE-SVC-") {
			svcChain = strings.TrimPrefix(s.Name, "nat ")
		}
	}
	tamper := "*nat\n:" + svcChain + " - [0:0]\n:KUBE-SEP-STALE0000000000 - [0:0]\n" +
		"-A KUBE-SEP-STALE0000000000 -m comment --comment default/web:http -p tcp -m tcp -j DNAT --to-destination 100.64.9.9:8080\nCOMMIT\n"
	if err := fake.Restore(ctx, []byte(tamper)); err != nil {
		t.Fatal(err)
	}
	rep, err = buildReport(ctx, inspectInput{Services: svcs, Slices: sls, Node: inspectNode, Family: v1.IPv4Protocol,
		Selectors: []selector{{Service: types.NamespacedName{Namespace: "default", Name: "web"}}}, Mode: mode})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Ports) != 1 {
		t.Fatalf("%d ports for default/web, want 1", len(rep.Ports))
	}
	checkGolden(t, "inspect-iptables-tampered.golden", textOf(t, rep, false))
	if len(rep.Ports[0].Diff) < 2 || len(rep.Problems) != 1 {
		t.Errorf("tampered: diff %q, problems %v; want the flushed chain, the stale one and the bad slice", rep.Ports[0].Diff, rep.Problems)
	}

	// Traces (the kernel as synced again).
	if err := iptproxy.NewProxier(fake, cfg).Apply(ctx, snapshotOf(svcs, sls), inspectNode, true); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		src  string
		want []string
	}{
		{"100.64.1.50", []string{"ACCEPT, DNAT to 100.64.1.11:8080, source kept"}},
		{"192.0.2.11", []string{"ACCEPT, DNAT to 100.64.1.11:8080, masqueraded"}},
		{"198.51.100.10", []string{"ACCEPT, DNAT to 100.64.1.11:8080, masqueraded"}},
	} {
		mode := &iptablesInspector{cfg: cfg, ipt: fake, local: []netip.Addr{netip.MustParseAddr("192.0.2.11")}}
		rep, err := buildReport(ctx, inspectInput{Services: svcs, Slices: sls, Node: inspectNode, Family: v1.IPv4Protocol,
			Source: netip.MustParseAddr(tc.src), Selectors: []selector{{Addr: netip.MustParseAddr("100.100.0.10"), AddrPort: 80, Protocol: v1.ProtocolTCP}}, Mode: mode})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Ports) != 1 || len(rep.Ports[0].Traces) != 1 {
			t.Fatalf("from %s: %+v, want one port with one trace", tc.src, rep.Ports)
		}
		tr := rep.Ports[0].Traces[0]
		if d := cmp.Diff(tc.want, tr.Outcomes); d != "" || tr.Error != "" {
			t.Errorf("trace from %s to %s (-want +got):\n%s%s", tc.src, tr.Destination, d, tr.Error)
		}
	}
}

// stubIPT accepts every iptables write: the IPVS inspector does not look at iptables.
type stubIPT struct{}

func (stubIPT) Restore(context.Context, []byte) error                { return nil }
func (stubIPT) Save(context.Context, iptables.Table) ([]byte, error) { return nil, nil }
func (stubIPT) HasChain(context.Context, iptables.Table, iptables.Chain) (bool, error) {
	return true, nil
}

func (stubIPT) EnsureChain(context.Context, iptables.Table, iptables.Chain) (bool, error) {
	return true, nil
}
func (stubIPT) EnsureRule(context.Context, iptables.RulePosition, iptables.Table, iptables.Chain, ...string) (bool, error) {
	return true, nil
}

// In IPVS mode, over fakes the IPVS proxier synced: the virtual server with its real server,
// the kube-ipvs0 address and the set entries of each port, no difference; then a real server
// deleted by hand and another drained to weight 0.
func TestInspectIPVS(t *testing.T) {
	ctx := context.Background()
	svcs, sls := inspectWorld()
	cfg := ipvs.Config{Family: iptables.IPv4, ClusterCIDR: netip.MustParsePrefix("100.64.0.0/16"),
		NodeIP: netip.MustParseAddr("192.0.2.11"), NodeIPs: []netip.Addr{netip.MustParseAddr("192.0.2.11")}}
	fipvs, links, sets := ipvs.NewFakeIPVS(), ipvs.NewFakeLinks(), ipset.NewFake()
	p, err := ipvs.NewProxier(ipvs.Writers{IPVS: fipvs, Links: links, IPSet: sets, IPTables: stubIPT{}}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(ctx, snapshotOf(svcs, sls), inspectNode, true); err != nil {
		t.Fatal(err)
	}
	mode := &ipvsInspector{cfg: cfg, ipvs: fipvs, links: links, sets: sets}
	rep, err := buildReport(ctx, inspectInput{Services: svcs, Slices: sls, Node: inspectNode, Family: v1.IPv4Protocol, Mode: mode})
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "inspect-ipvs.golden", textOf(t, rep, true))
	for _, p := range rep.Ports {
		if len(p.Diff) > 0 {
			t.Errorf("%s: differences right after a sync: %q", p.Name, p.Diff)
		}
	}

	key := ipvs.VSKey{IP: netip.MustParseAddr("100.100.0.10"), Port: 80, Protocol: v1.ProtocolTCP}
	if err := fipvs.DeleteRealServer(ctx, key, netip.MustParseAddrPort("100.64.1.11:8080")); err != nil {
		t.Fatal(err)
	}
	if err := fipvs.AddRealServer(ctx, key, ipvs.RealServer{Addr: netip.MustParseAddrPort("100.64.3.3:8080"), Weight: 0}); err != nil {
		t.Fatal(err)
	}
	rep, err = buildReport(ctx, inspectInput{Services: svcs, Slices: sls, Node: inspectNode, Family: v1.IPv4Protocol,
		Selectors: []selector{{Service: types.NamespacedName{Namespace: "default", Name: "web"}, Port: "http", HasPort: true}}, Mode: mode})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"IPVS TCP 100.100.0.10:80: missing: 100.64.1.11:8080 w1"}
	if len(rep.Ports) != 1 {
		t.Fatalf("%d ports, want 1", len(rep.Ports))
	}
	if d := cmp.Diff(want, rep.Ports[0].Diff); d != "" {
		t.Errorf("diff after a real server deleted (-want +got):\n%s", d)
	}
	if !slices.ContainsFunc(rep.Ports[0].Targets, func(s string) bool { return strings.Contains(s, "100.64.3.3:8080 weight 0: draining") }) {
		t.Errorf("targets %q: want the weight-0 real server as draining", rep.Ports[0].Targets)
	}
	var b bytes.Buffer
	if err := writeJSON(&b, []inspectReport{rep}); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Reports []struct {
			Ports []struct {
				Name string   `json:"name"`
				Diff []string `json:"diff"`
			} `json:"servicePorts"`
		} `json:"reports"`
	}
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil || len(doc.Reports) != 1 || doc.Reports[0].Ports[0].Name != "default/web:http" || len(doc.Reports[0].Ports[0].Diff) != 1 {
		t.Errorf("-o json: %v\n%s", err, b.String())
	}
}

func TestParseSelector(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    selector
		wantErr bool
	}{
		{in: "default/web", want: selector{Service: types.NamespacedName{Namespace: "default", Name: "web"}}},
		{in: "default/web:http", want: selector{Service: types.NamespacedName{Namespace: "default", Name: "web"}, Port: "http", HasPort: true}},
		{in: "default/web:", want: selector{Service: types.NamespacedName{Namespace: "default", Name: "web"}, HasPort: true}},
		{in: "100.100.0.10:80", want: selector{Addr: netip.MustParseAddr("100.100.0.10"), AddrPort: 80, Protocol: v1.ProtocolTCP}},
		{in: "100.100.0.10:53/udp", want: selector{Addr: netip.MustParseAddr("100.100.0.10"), AddrPort: 53, Protocol: v1.ProtocolUDP}},
		{in: "[2001:db8:2::a]:443/SCTP", want: selector{Addr: netip.MustParseAddr("2001:db8:2::a"), AddrPort: 443, Protocol: v1.ProtocolSCTP}},
		{in: "100.100.0.10:80/icmp", wantErr: true},
		{in: "web", wantErr: true},
		{in: "/web", wantErr: true},
		{in: "a/b/c", wantErr: true},
	} {
		got, err := parseSelector(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("%q: error %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if d := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); !tc.wantErr && d != "" {
			t.Errorf("%q (-want +got):\n%s", tc.in, d)
		}
	}
}

// The command line: inspect's own flags next to the daemon's, and its usage errors.
func TestInspectCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"inspect", "--help"}, inspectOK},
		{[]string{"inspect", "-o", "yaml"}, inspectUsage},
		{[]string{"inspect", "--source", "nope"}, inspectUsage},
		{[]string{"inspect", "web"}, inspectUsage},
		{[]string{"inspect", "--no-such-flag"}, inspectUsage},
	} {
		var out, errOut bytes.Buffer
		if got := run(tc.args, &out, &errOut); got != tc.want {
			t.Errorf("kproxy %s: exit %d, want %d (%s)", strings.Join(tc.args, " "), got, tc.want, errOut.String())
		}
	}
}
