//go:build vm

package vmtest

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/internal/netnsutil"
	"github.com/kproxy/kproxy/ipset"
	"github.com/kproxy/kproxy/iptables"
	"github.com/kproxy/kproxy/ipvs"
)

// TestSyncCostInVM says where the time of a sync goes at N services × 5 endpoints against
// the VM's real kernel: every writer call is timed (wall clock) and counted per method, for a
// cold full sync, a full sync with nothing to write (a restart) and a partial sync of one
// changed service. Not a pass/fail test: it runs only with KPV_SYNC_COST_N set, e.g.
//
//	CGO_ENABLED=0 go test -c -tags vm -o /tmp/ipvs-vm.test ./ipvs/vmtest
//	e2e/vm/run-test.sh -e KPV_SYNC_COST_N=1000 /tmp/ipvs-vm.test -test.run SyncCost -test.v
//
// With KPV_SYNC_COST_POLL=1 a goroutine reads /proc/net/ip_vs of the namespace all along, as
// kpbench's poller does (a pause of three times each read's duration between reads), to see
// what the benchmark's instrument costs the proxy.
func TestSyncCostInVM(t *testing.T) {
	requireVM(t)
	n, err := strconv.Atoi(os.Getenv("KPV_SYNC_COST_N"))
	if err != nil || n <= 0 {
		t.Skip("set KPV_SYNC_COST_N to the number of services")
	}
	ctx := context.Background()
	node := nsName(t, "kpv-cost-"+netnsutil.Suffix())
	nsPath := "/run/netns/" + node
	k, sets := openKernel(t, nsPath)
	if os.Getenv("KPV_SYNC_COST_POLL") == "1" {
		// the benchmark's poller: /proc/net/ip_vs read in a loop, pausing 3 × each read
		stop := pollProcIPVS(t, nsPath)
		defer stop()
	}
	tm := &timings{d: map[string]time.Duration{}, n: map[string]int{}}
	w := ipvs.Writers{IPVS: timedIPVS{k, tm}, Links: timedLinks{k, tm}, IPSet: timedSets{sets, tm},
		IPTables: timedIPT{iptables.New(iptables.Options{NetNSPath: nsPath}), tm}}
	cfg := ipvs.Config{
		ClusterCIDR: netip.MustParsePrefix("100.64.0.0/16"), NodeIPs: []netip.Addr{netip.MustParseAddr(nodeIP)},
		NodeIP: netip.MustParseAddr(nodeIP), ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("100.100.0.0/16")},
	}
	svcs, eps := endpoints.ServiceMap{}, endpoints.EndpointsMap{}
	changed := map[types.NamespacedName]struct{}{}
	for i := 0; i < n; i++ {
		name := spn(fmt.Sprintf("svc-%05d", i))
		svcs[name] = &endpoints.ServicePort{Name: name, Port: 80, Protocol: v1.ProtocolTCP,
			ClusterIP: netip.AddrFrom4([4]byte{100, 100, byte(1 + i/250), byte(1 + i%250)})}
		for e := 0; e < 5; e++ {
			k := i*5 + e
			eps[name] = append(eps[name], endpoints.Endpoint{IP: netip.AddrFrom4([4]byte{100, 64, byte(10 + k/250), byte(1 + k%250)}),
				Port: 8080, Ready: true, Serving: true, NodeName: "node-2"})
		}
		changed[name.NamespacedName] = struct{}{}
	}
	nodeInfo := endpoints.NodeInfo{Name: "node-1"}
	run := func(label string, p *ipvs.Proxier, snap endpoints.Snapshot, full bool) {
		tm.reset()
		start := time.Now()
		if err := p.Apply(ctx, snap, nodeInfo, full); err != nil {
			t.Fatalf("%s: %v", label, err)
		}
		total := time.Since(start)
		t.Logf("%s: %v, %d writes\n%s", label, total.Round(time.Millisecond), p.LastSync().Writes(), tm.table(total))
	}
	p, err := ipvs.NewProxier(w, cfg)
	if err != nil {
		t.Fatal(err)
	}
	run(fmt.Sprintf("cold full sync, N=%d", n), p, endpoints.Snapshot{Services: svcs, Endpoints: eps, Changed: changed}, true)
	p2, err := ipvs.NewProxier(w, cfg)
	if err != nil {
		t.Fatal(err)
	}
	run("restart: full sync, nothing to write", p2, endpoints.Snapshot{Services: svcs, Endpoints: eps, Changed: changed}, true)
	one := spn("svc-00007")
	eps[one] = append([]endpoints.Endpoint{{IP: netip.MustParseAddr("100.64.240.1"), Port: 8080, Ready: true, Serving: true,
		NodeName: "node-2"}}, eps[one][1:]...)
	run("partial sync, one service changed", p2, endpoints.Snapshot{Services: svcs, Endpoints: eps,
		Changed: map[types.NamespacedName]struct{}{one.NamespacedName: {}}}, false)
}

// timings accumulates wall time and calls per writer method.
type timings struct {
	mu sync.Mutex
	d  map[string]time.Duration
	n  map[string]int
}

func (t *timings) track(name string) func() {
	start := time.Now()
	return func() {
		t.mu.Lock()
		t.d[name] += time.Since(start)
		t.n[name]++
		t.mu.Unlock()
	}
}

func (t *timings) reset() {
	t.mu.Lock()
	t.d, t.n = map[string]time.Duration{}, map[string]int{}
	t.mu.Unlock()
}

func (t *timings) table(total time.Duration) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	names := make([]string, 0, len(t.d))
	var sum time.Duration
	for k, d := range t.d {
		names = append(names, k)
		sum += d
	}
	sort.Slice(names, func(i, j int) bool { return t.d[names[i]] > t.d[names[j]] })
	var b strings.Builder
	for _, k := range names {
		fmt.Fprintf(&b, "    %-28s %6d calls %10v\n", k, t.n[k], t.d[k].Round(time.Millisecond))
	}
	fmt.Fprintf(&b, "    %-28s %17v (outside the writers: %v)\n", "writers, total", sum.Round(time.Millisecond),
		(total - sum).Round(time.Millisecond))
	return b.String()
}

type timedIPVS struct {
	ipvs.IPVS
	t *timings
}

func (x timedIPVS) ListVirtualServers(ctx context.Context) ([]ipvs.VirtualServer, error) {
	defer x.t.track("ipvs.ListVirtualServers")()
	return x.IPVS.ListVirtualServers(ctx)
}

func (x timedIPVS) AddVirtualServer(ctx context.Context, vs ipvs.VirtualServer) error {
	defer x.t.track("ipvs.AddVirtualServer")()
	return x.IPVS.AddVirtualServer(ctx, vs)
}

func (x timedIPVS) ListRealServers(ctx context.Context, key ipvs.VSKey) ([]ipvs.RealServer, error) {
	defer x.t.track("ipvs.ListRealServers")()
	return x.IPVS.ListRealServers(ctx, key)
}

func (x timedIPVS) ListAllRealServers(ctx context.Context) (map[ipvs.VSKey][]ipvs.RealServer, error) {
	defer x.t.track("ipvs.ListAllRealServers")()
	return x.IPVS.ListAllRealServers(ctx)
}

func (x timedIPVS) AddRealServer(ctx context.Context, key ipvs.VSKey, rs ipvs.RealServer) error {
	defer x.t.track("ipvs.AddRealServer")()
	return x.IPVS.AddRealServer(ctx, key, rs)
}

func (x timedIPVS) DeleteRealServer(ctx context.Context, key ipvs.VSKey, addr netip.AddrPort) error {
	defer x.t.track("ipvs.DeleteRealServer")()
	return x.IPVS.DeleteRealServer(ctx, key, addr)
}

type timedLinks struct {
	ipvs.Links
	t *timings
}

func (x timedLinks) EnsureDummy(ctx context.Context, name string) (bool, error) {
	defer x.t.track("links.EnsureDummy")()
	return x.Links.EnsureDummy(ctx, name)
}

func (x timedLinks) ListAddrs(ctx context.Context, name string) ([]netip.Addr, error) {
	defer x.t.track("links.ListAddrs")()
	return x.Links.ListAddrs(ctx, name)
}

func (x timedLinks) AddAddr(ctx context.Context, name string, ip netip.Addr) error {
	defer x.t.track("links.AddAddr")()
	return x.Links.AddAddr(ctx, name, ip)
}

type timedSets struct {
	ipset.Interface
	t *timings
}

func (x timedSets) EnsureSet(ctx context.Context, set ipset.Set) error {
	defer x.t.track("ipset.EnsureSet")()
	return x.Interface.EnsureSet(ctx, set)
}

func (x timedSets) ListEntries(ctx context.Context, name string) ([]ipset.Entry, error) {
	defer x.t.track("ipset.ListEntries")()
	return x.Interface.ListEntries(ctx, name)
}

func (x timedSets) AddEntries(ctx context.Context, name string, entries []ipset.Entry) error {
	defer x.t.track("ipset.AddEntries")()
	return x.Interface.AddEntries(ctx, name, entries)
}

type timedIPT struct {
	iptables.Interface
	t *timings
}

func (x timedIPT) Save(ctx context.Context, table iptables.Table) ([]byte, error) {
	defer x.t.track("iptables.Save")()
	return x.Interface.Save(ctx, table)
}

func (x timedIPT) Restore(ctx context.Context, data []byte) error {
	defer x.t.track("iptables.Restore")()
	return x.Interface.Restore(ctx, data)
}

func (x timedIPT) EnsureRule(ctx context.Context, pos iptables.RulePosition, table iptables.Table, chain iptables.Chain, args ...string) (bool, error) {
	defer x.t.track("iptables.EnsureRule")()
	return x.Interface.EnsureRule(ctx, pos, table, chain, args...)
}

// pollProcIPVS reads /proc/net/ip_vs of the namespace at nsPath until stopped, pausing three
// times each read's duration between reads; stop logs how many reads it made and how long
// they took.
func pollProcIPVS(t *testing.T, nsPath string) (stop func()) {
	done, finished := make(chan struct{}), make(chan struct{})
	var reads int
	var busy time.Duration
	go func() {
		defer close(finished)
		runtime.LockOSThread() // the thread stays in the namespace and dies with the goroutine
		target, err := netns.GetFromPath(nsPath)
		if err != nil {
			t.Errorf("poller: %v", err)
			return
		}
		defer func() { _ = target.Close() }()
		if err := netns.Set(target); err != nil {
			t.Errorf("poller: setns: %v", err)
			return
		}
		for {
			select {
			case <-done:
				return
			default:
			}
			t0 := time.Now()
			if _, err := os.ReadFile("/proc/thread-self/net/ip_vs"); err != nil {
				t.Errorf("poller: %v", err)
				return
			}
			d := time.Since(t0)
			reads, busy = reads+1, busy+d
			time.Sleep(max(25*time.Millisecond, 3*d))
		}
	}()
	return func() {
		close(done)
		<-finished
		t.Logf("poller: %d reads of /proc/net/ip_vs, %v reading", reads, busy.Round(time.Millisecond))
	}
}
