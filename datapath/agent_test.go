package datapath

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kproxy/kproxy/datapath/cni"
	"github.com/kproxy/kproxy/iptables"
)

// fakeUnderlay answers FindUnderlay with one interface, eth0, holding the node IP.
type fakeUnderlay struct {
	prefix netip.Prefix
	mtu    int
}

func (u fakeUnderlay) FindUnderlay(ifname string, ip netip.Addr) (Underlay, error) {
	if ifname != "" && ifname != "eth0" {
		return Underlay{}, fmt.Errorf("interface %s: not found", ifname)
	}
	if ifname == "" && ip != u.prefix.Addr() {
		return Underlay{}, fmt.Errorf("no interface holds the node IP %s", ip)
	}
	return Underlay{Interface: "eth0", Prefix: u.prefix, MTU: u.mtu}, nil
}

func apiNode(name, podCIDR, ip string, annotations map[string]string) *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations}}
	if podCIDR != "" {
		n.Spec.PodCIDR, n.Spec.PodCIDRs = podCIDR, []string{podCIDR}
	}
	n.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: ip}}
	return n
}

func vtep(ip string) map[string]string {
	return map[string]string{AnnotationVTEPMAC: VTEPMACFor(netip.MustParseAddr(ip)).String()}
}

// versionedTracker gives every object the fake clientset stores a new resourceVersion, as
// the apiserver does (the fake's own tracker keeps whatever the object carries): the agent
// tells by it whether its lister has seen its own patch.
type versionedTracker struct {
	k8stesting.ObjectTracker
	rv atomic.Int64
}

func (t *versionedTracker) version(obj runtime.Object) error {
	m, err := meta.Accessor(obj)
	if err != nil {
		return err
	}
	m.SetResourceVersion(strconv.FormatInt(t.rv.Add(1), 10))
	return nil
}

func (t *versionedTracker) Create(gvr schema.GroupVersionResource, obj runtime.Object, ns string, opts ...metav1.CreateOptions) error {
	if err := t.version(obj); err != nil {
		return err
	}
	return t.ObjectTracker.Create(gvr, obj, ns, opts...)
}

func (t *versionedTracker) Update(gvr schema.GroupVersionResource, obj runtime.Object, ns string, opts ...metav1.UpdateOptions) error {
	if err := t.version(obj); err != nil {
		return err
	}
	return t.ObjectTracker.Update(gvr, obj, ns, opts...)
}

func (t *versionedTracker) Patch(gvr schema.GroupVersionResource, obj runtime.Object, ns string, opts ...metav1.PatchOptions) error {
	if err := t.version(obj); err != nil {
		return err
	}
	return t.ObjectTracker.Patch(gvr, obj, ns, opts...)
}

type agentEnv struct {
	client *fake.Clientset
	kernel *Fake
	ipt    *iptables.Fake
	dir    string
	agent  *Agent
	errc   chan error
}

// startAgent runs an agent for node n1 (192.0.2.11/24, MTU 1500) over fakes until the test ends.
func startAgent(t *testing.T, cfg Config, syncPeriod time.Duration, nodes ...*v1.Node) *agentEnv {
	t.Helper()
	e := &agentEnv{kernel: NewFake(pfx("192.0.2.0/24")), ipt: iptables.NewFake(iptables.IPv4),
		dir: t.TempDir(), errc: make(chan error, 1)}
	e.client = fake.NewClientset()
	vt := &versionedTracker{ObjectTracker: e.client.Tracker()}
	e.client.PrependReactor("*", "*", k8stesting.ObjectReaction(vt))
	for _, n := range nodes {
		if _, err := e.client.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	a, err := NewAgent(AgentOptions{Client: e.client, NodeName: "n1", Config: cfg, CNIConfDir: e.dir,
		IPTables: e.ipt, SyncPeriod: syncPeriod, Writer: e.kernel,
		Underlay: fakeUnderlay{prefix: pfx("192.0.2.11/24"), mtu: 1500}})
	if err != nil {
		t.Fatal(err)
	}
	a.minInterval = 10 * time.Millisecond
	e.agent = a
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); e.errc <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if err := <-e.errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return e
}

// eventually polls cond every 10 ms for up to 5 s.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *agentEnv) wantKernel(t *testing.T, want ...string) {
	t.Helper()
	eventually(t, "kernel", func() error {
		if d := cmp.Diff(strings.Join(want, "\n"), e.kernel.Dump()); d != "" {
			return fmt.Errorf("(-want +got):\n%s", d)
		}
		return nil
	})
}

func (e *agentEnv) patches() int {
	n := 0
	for _, a := range e.client.Actions() {
		if a.GetVerb() == "patch" && a.GetResource().Resource == "nodes" {
			n++
		}
	}
	return n
}

var (
	vxlanCfg      = Config{Backend: BackendVXLAN, ClusterCIDRs: []netip.Prefix{pfx("100.64.0.0/16")}}
	n1Device      = "device kproxy.1 vxlan vni=1 port=8472 local=192.0.2.11 mtu=1450 mac=0e:6b:c0:00:02:0b addrs=[100.64.1.0/32]"
	n2Entries     = []string{"fdb 0e:6b:c0:00:02:0c dev kproxy.1 dst 192.0.2.12", "neigh 100.64.2.0 lladdr 0e:6b:c0:00:02:0c dev kproxy.1", "route 100.64.2.0/24 via 100.64.2.0 dev kproxy.1 onlink proto 107"}
	n3FDB         = "fdb 0e:6b:c0:00:02:0d dev kproxy.1 dst 192.0.2.13"
	n3Neigh       = "neigh 100.64.3.0 lladdr 0e:6b:c0:00:02:0d dev kproxy.1"
	n3Route       = "route 100.64.3.0/24 via 100.64.3.0 dev kproxy.1 onlink proto 107"
	masqueradeNAT = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KPROXY-POSTROUTING - [0:0]
-A POSTROUTING -m comment --comment "kproxy datapath egress masquerade" -j KPROXY-POSTROUTING
-A KPROXY-POSTROUTING -s 100.64.0.0/16 -d 100.64.0.0/16 -m comment --comment "pod to pod keeps its source" -j RETURN
-A KPROXY-POSTROUTING -s 100.64.0.0/16 -d 192.0.2.11/32 -m comment --comment "pod to node keeps its source" -j RETURN
-A KPROXY-POSTROUTING -s 100.64.0.0/16 -d 192.0.2.12/32 -m comment --comment "pod to node keeps its source" -j RETURN
-A KPROXY-POSTROUTING -s 100.64.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "pod egress leaves as the node" -j MASQUERADE --random-fully
COMMIT
`
)

// The agent programs the VXLAN peer, publishes this node's VTEP MAC and IP once, writes the
// conflist with the VXLAN MTU and the egress masquerade chain, and reports ready.
func TestAgentProgramsNodeAndPublishesOnce(t *testing.T) {
	e := startAgent(t, vxlanCfg, time.Hour,
		apiNode("n1", "100.64.1.0/24", "192.0.2.11", nil),
		apiNode("n2", "100.64.2.0/24", "192.0.2.12", vtep("192.0.2.12")))
	e.wantKernel(t, append([]string{n1Device}, n2Entries...)...)
	eventually(t, "ready", e.agent.Ready)

	n1, err := e.client.CoreV1().Nodes().Get(context.Background(), "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{AnnotationPublicIP: "192.0.2.11", AnnotationVTEPMAC: "0e:6b:c0:00:02:0b"}
	if d := cmp.Diff(want, n1.Annotations); d != "" {
		t.Errorf("n1 annotations (-want +got):\n%s", d)
	}
	// The patch's own update event and later syncs find nothing to change, also those that
	// run before the informer has delivered the patch.
	e.agent.runner.Request()
	time.Sleep(100 * time.Millisecond)
	if got := e.patches(); got != 1 {
		t.Errorf("%d node patches, want 1", got)
	}

	got, err := os.ReadFile(filepath.Join(e.dir, cni.ConflistName))
	if err != nil {
		t.Fatal(err)
	}
	wantConf, err := cni.RenderConflist(cni.Config{PodCIDRs: []netip.Prefix{pfx("100.64.1.0/24")}, MTU: 1450})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(string(wantConf), string(got)); d != "" {
		t.Errorf("conflist (-want +got):\n%s", d)
	}
	nat, err := e.ipt.Save(context.Background(), iptables.TableNAT)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(masqueradeNAT, string(nat)); d != "" {
		t.Errorf("nat table (-want +got):\n%s", d)
	}
	// A sync with the chain as planned does not rewrite it (a restart changes nothing).
	restores := e.ipt.RestoreCount()
	e.agent.runner.Request()
	time.Sleep(100 * time.Millisecond)
	if n := e.ipt.RestoreCount() - restores; n != 0 {
		t.Errorf("%d restores of an unchanged masquerade chain, want 0:\n%s", n, e.ipt.LastRestore())
	}
}

// A joining node is added and a departed node removed; the masquerade chain follows the
// node IPs.
func TestAgentFollowsNodesJoiningAndLeaving(t *testing.T) {
	e := startAgent(t, vxlanCfg, time.Hour,
		apiNode("n1", "100.64.1.0/24", "192.0.2.11", nil),
		apiNode("n2", "100.64.2.0/24", "192.0.2.12", vtep("192.0.2.12")))
	e.wantKernel(t, append([]string{n1Device}, n2Entries...)...)

	ctx := context.Background()
	if _, err := e.client.CoreV1().Nodes().Create(ctx, apiNode("n3", "100.64.3.0/24", "192.0.2.13", vtep("192.0.2.13")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.wantKernel(t, n1Device, n2Entries[0], n3FDB, n2Entries[1], n3Neigh, n2Entries[2], n3Route)
	if err := e.client.CoreV1().Nodes().Delete(ctx, "n2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.wantKernel(t, n1Device, n3FDB, n3Neigh, n3Route)
	eventually(t, "masquerade", func() error {
		nat, err := e.ipt.Save(ctx, iptables.TableNAT)
		if err != nil {
			return err
		}
		if !strings.Contains(string(nat), "-d 192.0.2.13/32") || strings.Contains(string(nat), "-d 192.0.2.12/32") {
			return fmt.Errorf("nat table does not follow the node IPs:\n%s", nat)
		}
		return nil
	})
}

// A route deleted by hand and a flushed masquerade chain come back within the sync period.
func TestAgentRepairsDriftWithinSyncPeriod(t *testing.T) {
	e := startAgent(t, vxlanCfg, 200*time.Millisecond,
		apiNode("n1", "100.64.1.0/24", "192.0.2.11", nil),
		apiNode("n2", "100.64.2.0/24", "192.0.2.12", vtep("192.0.2.12")))
	all := append([]string{n1Device}, n2Entries...)
	e.wantKernel(t, all...)
	eventually(t, "ready", e.agent.Ready)
	time.Sleep(50 * time.Millisecond) // the sync the annotation patch requests has run
	if err := e.kernel.DeleteRoute(Route{Dst: pfx("100.64.2.0/24")}); err != nil {
		t.Fatal(err)
	}
	if err := e.ipt.Restore(context.Background(), []byte("*nat\n:KPROXY-POSTROUTING - [0:0]\nCOMMIT\n")); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	e.wantKernel(t, all...)
	eventually(t, "masquerade chain", func() error {
		nat, _ := e.ipt.Save(context.Background(), iptables.TableNAT)
		if string(nat) != masqueradeNAT {
			return fmt.Errorf("nat:\n%s", nat)
		}
		return nil
	})
	if d := time.Since(t0); d > time.Second {
		t.Errorf("drift repaired after %v, want within the 200ms sync period (+ slack)", d)
	}
}

// Without a podCIDR the agent is not ready, says why, and writes nothing; once the
// controller manager assigns one it programs the node.
func TestAgentWaitsForPodCIDR(t *testing.T) {
	e := startAgent(t, vxlanCfg, time.Hour,
		apiNode("n1", "", "192.0.2.11", nil),
		apiNode("n2", "100.64.2.0/24", "192.0.2.12", vtep("192.0.2.12")))
	eventually(t, "not ready", func() error {
		if err := e.agent.Ready(); !errors.Is(err, ErrNoPodCIDR) {
			return fmt.Errorf("Ready() = %w, want ErrNoPodCIDR", err)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(e.dir, cni.ConflistName)); !os.IsNotExist(err) {
		t.Errorf("conflist written without a podCIDR (stat: %v)", err)
	}
	if d := e.kernel.Dump(); d != "" {
		t.Errorf("kernel programmed without a podCIDR:\n%s", d)
	}
	ctx := context.Background()
	n1, err := e.client.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n1.Spec.PodCIDR, n1.Spec.PodCIDRs = "100.64.1.0/24", []string{"100.64.1.0/24"}
	if _, err := e.client.CoreV1().Nodes().Update(ctx, n1, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.wantKernel(t, append([]string{n1Device}, n2Entries...)...)
	eventually(t, "ready", e.agent.Ready)
	eventually(t, "conflist", func() error {
		_, err := os.Stat(filepath.Join(e.dir, cni.ConflistName))
		return err
	})
}

// host-gw: a peer on the underlay subnet gets a route via its node IP; one off the subnet
// is skipped (not an error: the agent stays ready) and a peer with a bad annotation is left
// out while the others work.
func TestAgentHostGWSkipsUnreachablePeers(t *testing.T) {
	e := startAgent(t, Config{Backend: BackendHostGW, ClusterCIDRs: []netip.Prefix{pfx("100.64.0.0/16")}}, time.Hour,
		apiNode("n1", "100.64.1.0/24", "192.0.2.11", nil),
		apiNode("n2", "100.64.2.0/24", "192.0.2.12", nil),
		apiNode("n3", "100.64.3.0/24", "198.18.0.13", nil),
		apiNode("n4", "100.64.4.0/24", "192.0.2.14", map[string]string{AnnotationPublicIP: "not-an-ip"}))
	e.wantKernel(t, "route 100.64.2.0/24 via 192.0.2.12 proto 107")
	eventually(t, "ready", e.agent.Ready)
	if got := e.patches(); got != 0 {
		t.Errorf("host-gw patched the node %d times; it publishes no annotations", got)
	}
}

// An agent for a node without a Node object is not ready and retries.
func TestAgentWithoutNodeObjectIsNotReady(t *testing.T) {
	e := startAgent(t, vxlanCfg, time.Hour, apiNode("n2", "100.64.2.0/24", "192.0.2.12", vtep("192.0.2.12")))
	eventually(t, "not ready", func() error {
		err := e.agent.Ready()
		if err == nil || errors.Is(err, ErrNotSynced) {
			return fmt.Errorf("Ready() = %w, want the missing Node", err)
		}
		return nil
	})
}

// NewAgent refuses incomplete options.
func TestNewAgentValidates(t *testing.T) {
	client := fake.NewClientset()
	for _, tc := range []struct {
		name string
		opts AgentOptions
	}{
		{"no client", AgentOptions{NodeName: "n1"}},
		{"no node name", AgentOptions{Client: client}},
		{"writer without underlay", AgentOptions{Client: client, NodeName: "n1", Writer: NewFake()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewAgent(tc.opts); err == nil {
				t.Error("NewAgent accepted it")
			}
		})
	}
}

// Only the fields the datapath reads request a sync: not a status heartbeat or a label.
func TestNodeChanged(t *testing.T) {
	base := apiNode("n2", "100.64.2.0/24", "192.0.2.12", vtep("192.0.2.12"))
	for _, tc := range []struct {
		name string
		mut  func(*v1.Node)
		want bool
	}{
		{"heartbeat", func(n *v1.Node) {
			n.Status.Conditions = []v1.NodeCondition{{Type: v1.NodeReady, LastHeartbeatTime: metav1.Now()}}
		}, false},
		{"label", func(n *v1.Node) { n.Labels = map[string]string{"zone": "b"} }, false},
		{"other annotation", func(n *v1.Node) { n.Annotations["example.com/x"] = "y" }, false},
		{"podCIDR", func(n *v1.Node) { n.Spec.PodCIDRs = []string{"100.64.9.0/24"} }, true},
		{"address", func(n *v1.Node) { n.Status.Addresses[0].Address = "192.0.2.99" }, true},
		{"vtep mac", func(n *v1.Node) { n.Annotations[AnnotationVTEPMAC] = "0e:6b:00:00:00:01" }, true},
		{"public ip", func(n *v1.Node) { n.Annotations[AnnotationPublicIP] = "198.18.0.1" }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cur := base.DeepCopy()
			tc.mut(cur)
			if got := nodeChanged(base, cur); got != tc.want {
				t.Errorf("nodeChanged = %v, want %v", got, tc.want)
			}
		})
	}
}

// savesCounted counts the table reads of an iptables Fake.
type savesCounted struct {
	*iptables.Fake
	saves int
}

func (s *savesCounted) Save(ctx context.Context, table iptables.Table) ([]byte, error) {
	s.saves++
	return s.Fake.Save(ctx, table)
}

// The masquerade chain is looked for in the nat table only when the nf_tables generation
// moved since it was last found or written as planned: an idle sync reads nothing (at 10,000
// services the nat table takes 1.4 s to read), a change by hand is still found and repaired.
func TestMasqueradeReadsOnlyWhenTheGenerationMoved(t *testing.T) {
	ctx := context.Background()
	plan, err := ComputePlan(vxlanCfg, self1, []Node{n2})
	if err != nil {
		t.Fatal(err)
	}
	ipt := &savesCounted{Fake: iptables.NewFake(iptables.IPv4)}
	a := &Agent{opts: AgentOptions{IPTables: ipt}}
	sync := func(step string, wantSaves int) {
		t.Helper()
		before := ipt.saves
		if err := a.writeMasquerade(ctx, plan); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if got := ipt.saves - before; got != wantSaves {
			t.Errorf("%s: %d nat reads, want %d", step, got, wantSaves)
		}
	}
	sync("first sync", 1)
	want := ipt.Dump()
	sync("idle sync", 0)
	sync("another idle sync", 0)
	if err := ipt.Restore(ctx, []byte("*nat\n:"+MasqueradeChain+" - [0:0]\nCOMMIT\n")); err != nil {
		t.Fatal(err)
	}
	sync("after a flush by hand", 1)
	if d := cmp.Diff(want, ipt.Dump()); d != "" {
		t.Errorf("after the repair (-want +got):\n%s", d)
	}
	sync("idle sync after the repair", 0)
}

// A sync that runs before the node informer has delivered the agent's own annotation patch
// (the lister still shows the node at the resourceVersion the patch was computed from) does
// not send the patch again; once the node is at another version and still lacks the
// annotations (someone removed them), it does.
func TestPublishSkipsWhileTheListerIsBehind(t *testing.T) {
	client := fake.NewClientset(apiNode("n1", "100.64.1.0/24", "192.0.2.11", nil))
	a := &Agent{opts: AgentOptions{Client: client}}
	ip := netip.MustParseAddr("192.0.2.11")
	plan := Plan{Device: &Device{Kind: KindVXLAN, Local: ip, MAC: VTEPMACFor(ip)}}
	stale := apiNode("n1", "100.64.1.0/24", "192.0.2.11", nil)
	stale.ResourceVersion = "5"
	patches := func() int {
		n := 0
		for _, act := range client.Actions() {
			if act.GetVerb() == "patch" {
				n++
			}
		}
		return n
	}
	ctx := context.Background()
	for i, tc := range []struct {
		rv   string
		want int
	}{{"5", 1}, {"5", 1}, {"6", 2}, {"6", 2}} {
		stale.ResourceVersion = tc.rv
		if err := a.publish(ctx, stale, plan); err != nil {
			t.Fatal(err)
		}
		if got := patches(); got != tc.want {
			t.Errorf("publish %d (node at version %s): %d patches in all, want %d", i+1, tc.rv, got, tc.want)
		}
	}
}
