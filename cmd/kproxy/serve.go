package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/ipset"
	"github.com/kproxy/kproxy/iptables"
	iptproxy "github.com/kproxy/kproxy/iptables/proxy"
	"github.com/kproxy/kproxy/ipvs"
	"github.com/kproxy/kproxy/proxier"
	"github.com/kproxy/kproxy/proxier/conntrack"
	"github.com/kproxy/kproxy/proxier/healthcheck"
)

// serve wires informers → trackers → reconcilers → backends (one per IP family) and runs
// until ctx ends.
func serve(ctx context.Context, cfg Config) error {
	logger := klog.FromContext(ctx)
	gcPercent, gcSet := setGCPercent(os.Getenv)
	nodeName, err := nodeName(cfg.HostnameOverride)
	if err != nil {
		return err
	}
	clients, err := newClients(cfg)
	if err != nil {
		return err
	}
	client := clients.client
	node := waitForNode(ctx, client, nodeName, 30*time.Second)
	families := ipFamilies(cfg.BindAddress, node)

	broadcaster := events.NewBroadcaster(&events.EventSinkImpl{Interface: client.EventsV1()})
	broadcaster.StartRecordingToSink(ctx.Done())
	defer broadcaster.Shutdown()
	report := proxier.Reporter(ctx, broadcaster.NewRecorder(scheme.Scheme, "kproxy"))

	metrics := proxier.NewMetrics()
	var names []string
	for _, f := range families {
		names = append(names, string(f))
	}
	health := proxier.NewHealth(2*cfg.SyncPeriod, names, nil)
	health.CountRequests(metrics.HealthzTotal, metrics.LivezTotal)
	contact := apiContact(cfg, clients.probe)
	health.AddReadinessCheck("apiserver", contact.Check)
	go contact.Run(ctx)
	hc := healthcheck.NewServer(healthcheck.Options{ProxyHealthy: health.Healthy, Logger: logger})
	defer hc.Close()
	ct, err := conntrack.New(conntrack.Options{})
	if err != nil {
		logger.Error(err, "Conntrack cleanup disabled: cannot open a netlink socket")
	} else {
		defer ct.Close()
	}

	if err := cleanupOtherMode(ctx, cfg.Mode, cfg.IPVSExcludeCIDRs); err != nil {
		logger.Error(err, "Could not remove the other proxy mode's state")
	}
	var stacks []*stack
	collectors := &modeCollectors{}
	for i, family := range families {
		st, err := newStack(ctx, stackOptions{
			cfg: cfg, family: family, node: node, nodeName: nodeName, metrics: metrics,
			health: health, report: report, conntrack: ct,
			healthCheck: hc, primary: i == 0, collectors: collectors,
		})
		if err != nil {
			if i == 0 {
				return err
			}
			logger.Error(err, "Not programming the secondary IP family", "ipFamily", family)
			health.Without(string(family))
			continue
		}
		stacks = append(stacks, st)
	}
	mode := stacks[0].backend.Mode()
	logger.Info("Starting kproxy", "version", version, "mode", mode, "node", nodeName,
		"ipFamilies", names, "clusterCIDRs", cfg.ClusterCIDRs, "syncPeriod", cfg.SyncPeriod,
		"minSyncPeriod", cfg.MinSyncPeriod, "GOGC", gcPercent, "GOGCFromEnvironment", !gcSet)

	agent, err := newDatapathAgent(ctx, cfg, client, nodeName)
	if err != nil {
		return err
	}
	if agent != nil {
		health.AddCheck("datapath", agent.Ready)
	}
	for _, st := range stacks {
		if r, ok := st.backend.(stateReporter); ok && r.HasState(ctx) {
			logger.Info("The kernel holds the rules of a previous run: /healthz answers 200 while the first sync runs",
				"ipFamily", st.family)
			health.Resumed(string(st.family))
		}
	}
	serveHTTP(ctx, "healthz", cfg.HealthzBindAddress, health.Handler())
	serveHTTP(ctx, "metrics", cfg.MetricsBindAddress, metricsHandler(metrics.Handler(mode), cfg.EnableProfiling))

	var trackers proxier.Trackers
	for _, st := range stacks {
		trackers = append(trackers, st.tracker)
	}
	feed := &proxier.Feed{
		Client: client, NodeName: nodeName, Resync: cfg.ConfigSyncPeriod,
		Tracker: trackers, Health: health, Report: report,
		OnNode: func(n endpoints.NodeInfo) {
			for _, st := range stacks {
				st.rec.SetNode(n)
			}
		},
		Request: func() {
			for _, st := range stacks {
				st.request()
			}
		},
	}
	feed.OnServiceCIDRs = serviceCIDRsSink(cfg, stacks)
	if err := feed.Start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	var wg sync.WaitGroup
	for _, st := range stacks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st.runner.Run(ctx)
		}()
	}
	if agent != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := agent.Run(ctx); err != nil {
				logger.Error(err, "Datapath stopped")
			}
		}()
	}
	wg.Wait()
	logger.Info("Stopped kproxy")
	return nil
}

// stateReporter is a backend that can tell whether the kernel holds the rules of a proxy that
// ran before (Health.Resumed).
type stateReporter interface{ HasState(context.Context) bool }

// serviceCIDRSetter is a backend that takes the service ranges while running (iptables and IPVS
// modes).
type serviceCIDRSetter interface{ SetServiceCIDRs([]netip.Prefix) }

var (
	_ serviceCIDRSetter = (*iptproxy.Proxier)(nil)
	_ serviceCIDRSetter = (*ipvs.Proxier)(nil)
)

// serviceCIDRsSink is where the ServiceCIDR objects' ranges go: every backend that takes
// them. nil (no ServiceCIDR informer) when --service-cluster-ip-range names the ranges or no
// backend takes them.
func serviceCIDRsSink(cfg Config, stacks []*stack) func([]netip.Prefix) {
	if len(cfg.ServiceCIDRs) > 0 {
		return nil
	}
	var setters []serviceCIDRSetter
	for _, st := range stacks {
		if s, ok := st.backend.(serviceCIDRSetter); ok {
			setters = append(setters, s)
		}
	}
	if len(setters) == 0 {
		return nil
	}
	return func(cidrs []netip.Prefix) {
		for _, s := range setters {
			s.SetServiceCIDRs(cidrs)
		}
	}
}

// ipFamilies returns the families to program: the bind address's first, then the other one
// when the node also has an address of it (dual-stack), as kube-proxy decides.
func ipFamilies(bind netip.Addr, node *v1.Node) []v1.IPFamily {
	primary, secondary := v1.IPv4Protocol, v1.IPv6Protocol
	if bind.Is6() && !bind.Is4In6() {
		primary, secondary = v1.IPv6Protocol, v1.IPv4Protocol
	}
	out := []v1.IPFamily{primary}
	ip, _ := nodeAddresses(node, func(a netip.Addr) bool { return a.Is4() == (secondary == v1.IPv4Protocol) })
	if ip.IsValid() {
		out = append(out, secondary)
	}
	return out
}

// stack is the pipeline of one IP family: tracker → reconciler → backend, driven by a runner.
type stack struct {
	family  v1.IPFamily
	tracker *endpoints.Tracker
	backend proxier.Backend
	rec     *proxier.Reconciler
	runner  *proxier.Runner
	request func()
}

type stackOptions struct {
	cfg         Config
	family      v1.IPFamily
	node        *v1.Node
	nodeName    string
	metrics     *proxier.Metrics
	health      *proxier.Health
	report      func(kind, namespace, name, reason, message string)
	conntrack   conntrack.Interface
	healthCheck *healthcheck.Server
	primary     bool // the health-check node ports are served once, by the primary family
	collectors  *modeCollectors
}

// modeCollectors export the mode's own metrics of every IP family's backend: one collector
// per mode, registered with the first family (a registry refuses a second collector with
// the same descriptors, which a dual-stack node would otherwise register).
type modeCollectors struct {
	ipt  *iptablesCollector
	ipvs *ipvsCollector
}

func (m *modeCollectors) add(reg prometheus.Registerer, b proxier.Backend, family string) {
	switch b := b.(type) {
	case *iptproxy.Proxier:
		if m.ipt == nil {
			m.ipt = newIPTablesCollector()
			reg.MustRegister(m.ipt)
		}
		m.ipt.add(b, family)
	case *ipvs.Proxier:
		if m.ipvs == nil {
			m.ipvs = newIPVSCollector()
			reg.MustRegister(m.ipvs)
		}
		m.ipvs.add(b, family)
	}
}

func newStack(ctx context.Context, o stackOptions) (*stack, error) {
	backend, err := newBackend(ctx, o.cfg, o.family, o.node)
	if err != nil {
		return nil, err
	}
	fm := o.metrics.For(string(o.family))
	o.collectors.add(o.metrics.Registry, backend, string(o.family))
	after := proxier.AfterSync{Report: o.report, ConntrackDeleted: fm.ConntrackDeleted}
	if o.conntrack != nil {
		after.Conntrack = o.conntrack
	}
	if o.primary {
		after.HealthCheck = o.healthCheck
	}
	tracker := endpoints.NewTracker(endpoints.TrackerOptions{
		IPFamily: o.family, OnInvalid: o.report, StartTime: time.Now(),
	})
	rec := proxier.NewReconciler(tracker, backend, fm, o.health,
		proxier.ReconcilerOptions{Family: o.family, After: after, ReleaseMemory: debug.FreeOSMemory})
	rec.SetNode(endpoints.NodeInfo{Name: o.nodeName})
	runner := proxier.NewRunner("sync-proxy-rules-"+string(o.family), rec.Sync, proxier.RunnerOptions{
		MinInterval: o.cfg.MinSyncPeriod,
		MaxInterval: o.cfg.SyncPeriod,
	})
	return &stack{
		family: o.family, tracker: tracker, backend: backend, rec: rec, runner: runner,
		request: func() {
			fm.LastQueuedTimestamp.SetToCurrentTime()
			runner.Request()
		},
	}, nil
}

func nodeName(override string) (string, error) {
	if override != "" {
		return strings.ToLower(strings.TrimSpace(override)), nil
	}
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("find the node name: %w (set --hostname-override)", err)
	}
	return strings.ToLower(strings.TrimSpace(h)), nil
}

func newBackend(ctx context.Context, cfg Config, family v1.IPFamily, node *v1.Node) (proxier.Backend, error) {
	switch cfg.Mode {
	case "iptables":
		if cfg.LocalhostNodePorts && family == v1.IPv4Protocol {
			if err := os.WriteFile("/proc/sys/net/ipv4/conf/all/route_localnet", []byte("1"), 0o644); err != nil {
				return nil, fmt.Errorf("--iptables-localhost-nodeports needs net.ipv4.conf.all.route_localnet=1: %w", err)
			}
		}
		ipt := iptables.New(iptables.Options{IPv6: family == v1.IPv6Protocol})
		pcfg, err := iptablesConfig(cfg, family, node, ipt)
		if err != nil {
			return nil, err
		}
		klog.FromContext(ctx).Info("iptables mode", "nodeIP", pcfg.NodeIP, "localDetector", pcfg.LocalDetector,
			"nodePortAddresses", pcfg.NodePortAddresses, "serviceCIDRs", cfg.ServiceCIDRs)
		pcfg.Generation = ipt.Generation
		return iptproxy.NewProxier(ipt, pcfg), nil
	case "ipvs":
		return newIPVSBackend(ctx, cfg, family, node)
	}
	return nil, fmt.Errorf("unknown mode %q", cfg.Mode)
}

// iptablesConfig is the iptables mode's configuration for one family: the flags, the node's
// addresses, and what the node's iptables and sysctls say (--random-fully, be_liberal).
// It writes nothing (the daemon and kproxy inspect both use it).
func iptablesConfig(cfg Config, family v1.IPFamily, node *v1.Node, ipt *iptables.Runner) (iptproxy.Config, error) {
	ofFamily := func(a netip.Addr) bool { return a.Is4() == (family == v1.IPv4Protocol) }
	var clusterCIDR netip.Prefix
	for _, p := range cfg.ClusterCIDRs {
		if ofFamily(p.Addr()) {
			clusterCIDR = p
		}
	}
	nodeIP, podCIDR := nodeAddresses(node, ofFamily)
	detector, err := localDetector(cfg, clusterCIDR, podCIDR)
	if err != nil {
		return iptproxy.Config{}, err
	}
	npAddrs := cfg.NodePortAddresses
	if cfg.NodePortPrimary {
		if !nodeIP.IsValid() {
			return iptproxy.Config{}, errors.New("--nodeport-addresses=primary: the Node object has no InternalIP of this family yet")
		}
		npAddrs = []netip.Prefix{netip.PrefixFrom(nodeIP, nodeIP.BitLen())}
	}
	beLiberal, _ := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal")
	fam := iptables.IPv4
	if family == v1.IPv6Protocol {
		fam = iptables.IPv6
	}
	randomFully, err := ipt.HasRandomFully()
	if err != nil {
		return iptproxy.Config{}, fmt.Errorf("detect iptables: %w (is the iptables package installed?)", err)
	}
	return iptproxy.Config{
		MasqueradeRandomFully: randomFully,
		Family:                fam,
		ClusterCIDR:           clusterCIDR,
		LocalDetector:         detector,
		NodeIP:                nodeIP,
		NodePortAddresses:     npAddrs,
		LocalhostNodePorts:    cfg.LocalhostNodePorts,
		ServiceCIDRs:          cfg.ServiceCIDRs,
		ConntrackTCPBeLiberal: strings.TrimSpace(string(beLiberal)) == "1",
		MasqueradeAll:         cfg.MasqueradeAll,
		MasqueradeBit:         int(cfg.MasqueradeBit),
	}, nil
}

// newIPVSBackend builds the IPVS mode: IPVS and kube-ipvs0 over netlink, ipsets over netlink,
// the fixed iptables rules through iptables-restore, and the sysctls IPVS needs.
func newIPVSBackend(ctx context.Context, cfg Config, family v1.IPFamily, node *v1.Node) (proxier.Backend, error) {
	logger := klog.FromContext(ctx)
	ipvsCfg, err := ipvsConfig(cfg, family, node)
	if err != nil {
		return nil, err
	}
	for _, sc := range ipvs.RequiredSysctls(ipvsCfg, connReuseZero()) {
		if err := os.WriteFile("/proc/sys/"+sc.Path, []byte(sc.Value), 0o644); err != nil {
			return nil, fmt.Errorf("ipvs mode needs sysctl %s=%s: %w (is the ip_vs module loaded? modprobe ip_vs)", sc.Path, sc.Value, err)
		}
	}
	kernel, err := ipvs.NewKernel("")
	if err != nil {
		return nil, fmt.Errorf("open IPVS: %w (is the ip_vs module loaded? modprobe ip_vs)", err)
	}
	if cfg.IPVSTCPTimeout > 0 || cfg.IPVSTCPFinTimeout > 0 || cfg.IPVSUDPTimeout > 0 {
		if err := kernel.SetTimeouts(ctx, cfg.IPVSTCPTimeout, cfg.IPVSTCPFinTimeout, cfg.IPVSUDPTimeout); err != nil {
			kernel.Close()
			return nil, fmt.Errorf("set IPVS timeouts: %w", err)
		}
	}
	sets, err := ipset.New(ipset.Options{})
	if err != nil {
		kernel.Close()
		return nil, fmt.Errorf("open ipset netlink: %w (modprobe ip_set)", err)
	}
	p, err := ipvs.NewProxier(ipvs.Writers{
		IPVS: kernel, Links: kernel, IPSet: sets,
		IPTables: iptables.New(iptables.Options{IPv6: family == v1.IPv6Protocol}),
	}, ipvsCfg)
	if err != nil {
		kernel.Close()
		sets.Close()
		return nil, err
	}
	logger.Info("ipvs mode", "scheduler", cfg.IPVSScheduler, "nodeIPs", ipvsCfg.NodeIPs,
		"localDetector", ipvsCfg.LocalDetector, "strictARP", cfg.IPVSStrictARP, "excludeCIDRs", cfg.IPVSExcludeCIDRs)
	return p, nil
}

// ipvsConfig is the IPVS mode's configuration for one family (the daemon and kproxy inspect
// both use it).
func ipvsConfig(cfg Config, family v1.IPFamily, node *v1.Node) (ipvs.Config, error) {
	ofFamily := func(a netip.Addr) bool { return a.Is4() == (family == v1.IPv4Protocol) }
	var clusterCIDR netip.Prefix
	for _, p := range cfg.ClusterCIDRs {
		if ofFamily(p.Addr()) {
			clusterCIDR = p
		}
	}
	nodeIP, podCIDR := nodeAddresses(node, ofFamily)
	detector, err := localDetector(cfg, clusterCIDR, podCIDR)
	if err != nil {
		return ipvs.Config{}, err
	}
	fam := iptables.IPv4
	if family == v1.IPv6Protocol {
		fam = iptables.IPv6
	}
	return ipvs.Config{
		Family: fam, Scheduler: cfg.IPVSScheduler,
		NodeIPs: nodePortIPs(node, ofFamily, cfg.NodePortAddresses, cfg.NodePortPrimary), NodeIP: nodeIP,
		ClusterCIDR: clusterCIDR, LocalDetector: ipvs.LocalDetector(detector),
		MasqueradeAll: cfg.MasqueradeAll, MasqueradeBit: int(cfg.MasqueradeBit),
		StrictARP: cfg.IPVSStrictARP, ExcludeCIDRs: cfg.IPVSExcludeCIDRs, ServiceCIDRs: cfg.ServiceCIDRs,
		// Idle, syncs come one sync period apart: each lists every real server (one deleted
		// by hand is back within a period, as upstream); syncs made for changes in between do
		// so at most once per half period.
		KernelCheckInterval: cfg.SyncPeriod / 2,
	}, nil
}

// nodePortIPs are the node addresses of the family NodePorts answer on: every address of
// the Node object, narrowed by --nodeport-addresses ("primary": the first).
func nodePortIPs(n *v1.Node, ofFamily func(netip.Addr) bool, within []netip.Prefix, primary bool) []netip.Addr {
	if n == nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type != v1.NodeInternalIP && a.Type != v1.NodeExternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil || !ofFamily(ip) {
			continue
		}
		if len(within) > 0 && !slices.ContainsFunc(within, func(p netip.Prefix) bool { return p.Contains(ip) }) {
			continue
		}
		out = append(out, ip)
		if primary {
			break
		}
	}
	return out
}

// connReuseZero says whether net.ipv4.vs.conn_reuse_mode must be 0: on kernels 4.1 to 5.8,
// as kube-proxy decides (later kernels fixed the bug it works around).
func connReuseZero() bool {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return false
	}
	var major, minor int
	if _, err := fmt.Sscanf(string(b), "%d.%d", &major, &minor); err != nil {
		return false
	}
	v := major*1000 + minor
	return v >= 4001 && v < 5009
}

// waitForNode reads this node's Node object, waiting up to timeout for it to exist (a
// kproxy may start before its kubelet registers the node). nil when it never appears: the
// node IP and pod CIDR are then unknown.
func waitForNode(ctx context.Context, client kubernetes.Interface, name string, timeout time.Duration) *v1.Node {
	logger := klog.FromContext(ctx)
	deadline := time.Now().Add(timeout)
	for {
		// Bounded: the client's dial waits for an apiserver that refuses connections.
		gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		n, err := client.CoreV1().Nodes().Get(gctx, name, metav1.GetOptions{})
		cancel()
		if err == nil {
			return n
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			logger.Error(err, "Cannot read this node's Node object; continuing without its IP and pod CIDR", "node", name)
			return nil
		}
		logger.V(2).Info("Waiting for the Node object", "node", name, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// nodeAddresses returns the node's first InternalIP (else ExternalIP) and pod CIDR of the
// family.
func nodeAddresses(n *v1.Node, ofFamily func(netip.Addr) bool) (netip.Addr, netip.Prefix) {
	var ip netip.Addr
	var cidr netip.Prefix
	if n == nil {
		return ip, cidr
	}
	for _, typ := range []v1.NodeAddressType{v1.NodeInternalIP, v1.NodeExternalIP} {
		for _, a := range n.Status.Addresses {
			if a.Type != typ || ip.IsValid() {
				continue
			}
			if p, err := netip.ParseAddr(a.Address); err == nil && ofFamily(p) {
				ip = p
			}
		}
	}
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil && ofFamily(p.Addr()) && !cidr.IsValid() {
			cidr = p.Masked()
		}
	}
	return ip, cidr
}

func localDetector(cfg Config, clusterCIDR, podCIDR netip.Prefix) (iptproxy.LocalDetector, error) {
	switch cfg.DetectLocalMode {
	case "NodeCIDR":
		if !podCIDR.IsValid() {
			return iptproxy.LocalDetector{}, errors.New("--detect-local-mode=NodeCIDR: the Node object has no spec.podCIDR of this family")
		}
		return iptproxy.LocalDetector{CIDR: podCIDR}, nil
	case "BridgeInterface":
		return iptproxy.LocalDetector{BridgeInterface: cfg.PodBridgeInterface}, nil
	case "InterfaceNamePrefix":
		return iptproxy.LocalDetector{InterfaceNamePrefix: cfg.PodInterfaceNamePrefix}, nil
	}
	return iptproxy.LocalDetector{CIDR: clusterCIDR}, nil
}

// serveHTTP serves h on addr until ctx ends. A bind failure is logged, not fatal, as
// kube-proxy does without --bind-address-hard-fail.
func serveHTTP(ctx context.Context, name, addr string, h http.Handler) {
	if addr == "" {
		return
	}
	logger := klog.FromContext(ctx).WithValues("server", name, "address", addr)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		logger.Error(err, "Cannot listen; the server is disabled")
		return
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error(err, "Server stopped")
		}
	}()
	logger.Info("Serving")
}

// metricsHandler is the metrics server's handler: h, and with profiling the Go profiler
// under /debug/pprof/ (as kube-proxy's --profiling).
func metricsHandler(h http.Handler, profiling bool) http.Handler {
	if !profiling {
		return h
	}
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
