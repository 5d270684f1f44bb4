package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/kproxy/kproxy/ipvs"
	"k8s.io/klog/v2"
	kpv1alpha1 "k8s.io/kube-proxy/config/v1alpha1"
	"sigs.k8s.io/yaml"
)

// Config is kproxy's resolved configuration: defaults, then the --config file, then the
// flags that were set on the command line (flags win, as kube-proxy does since KEP-2157).
type Config struct {
	Mode             string
	Kubeconfig       string
	Master           string
	HostnameOverride string
	ClusterCIDRs     []netip.Prefix
	BindAddress      netip.Addr

	HealthzBindAddress string
	MetricsBindAddress string
	// EnableProfiling serves net/http/pprof under /debug/pprof/ on the metrics address
	// (kube-proxy's --profiling, enableProfiling).
	EnableProfiling bool

	SyncPeriod       time.Duration
	MinSyncPeriod    time.Duration
	ConfigSyncPeriod time.Duration

	MasqueradeAll bool
	MasqueradeBit int32

	DetectLocalMode        string // ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix
	PodBridgeInterface     string
	PodInterfaceNamePrefix string
	// NodePortAddresses are CIDRs; Primary means the node's primary IP ("primary").
	NodePortAddresses  []netip.Prefix
	NodePortPrimary    bool
	LocalhostNodePorts bool
	ServiceCIDRs       []netip.Prefix

	IPVSScheduler    string
	IPVSStrictARP    bool
	IPVSExcludeCIDRs []netip.Prefix
	// IPVSTimeouts are --ipvs-tcp-timeout, --ipvs-tcpfin-timeout, --ipvs-udp-timeout (0: keep).
	IPVSTCPTimeout, IPVSTCPFinTimeout, IPVSUDPTimeout time.Duration

	APIQPS   float32
	APIBurst int32

	// Cleanup is --cleanup: remove kproxy's iptables chains and exit.
	Cleanup bool

	// Datapath is the pod network between nodes: none, vxlan, host-gw or ipip.
	Datapath                  string
	VXLANDirectRouting        bool
	CNIConfDir                string
	DatapathUnderlayInterface string
}

// usageError is a bad flag, flag value or config file: kproxy prints it and exits 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func defaultConfig() Config {
	return Config{
		Mode:               "iptables",
		BindAddress:        netip.IPv4Unspecified(),
		HealthzBindAddress: "0.0.0.0:10256",
		MetricsBindAddress: "127.0.0.1:10249",
		SyncPeriod:         30 * time.Second,
		MinSyncPeriod:      time.Second,
		ConfigSyncPeriod:   15 * time.Minute,
		MasqueradeBit:      14,
		DetectLocalMode:    "ClusterCIDR",
		IPVSScheduler:      "rr",
		APIQPS:             5,
		APIBurst:           10,
		Datapath:           "none",
		CNIConfDir:         "/etc/cni/net.d",
	}
}

// flagValues holds the raw command line.
type flagValues struct {
	configFile       string
	mode             string
	kubeconfig       string
	master           string
	hostnameOverride string
	clusterCIDR      string
	bindAddress      string
	healthzBind      string
	metricsBind      string
	iptSync          time.Duration
	iptMinSync       time.Duration
	ipvsSync         time.Duration
	ipvsMinSync      time.Duration
	configSync       time.Duration
	masqueradeAll    bool
	profiling        bool
	masqueradeBit    int32
	apiQPS           float32
	apiBurst         int32
	version          bool
	cleanup          bool
	detectLocalMode  string
	podBridge        string
	podIfPrefix      string
	nodePortAddrs    []string
	localhostNP      bool
	serviceCIDRs     string
	ipvsScheduler    string
	ipvsStrictARP    bool
	ipvsExclude      []string
	ipvsTCP          time.Duration
	ipvsTCPFin       time.Duration
	ipvsUDP          time.Duration
	datapath         string
	directRouting    bool
	cniConfDir       string
	underlayIface    string
}

func newFlagSet(fv *flagValues) *pflag.FlagSet {
	d := defaultConfig()
	fs := pflag.NewFlagSet("kproxy", pflag.ContinueOnError)
	// Errors are returned and printed as one line by run; usage only on --help.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&fv.configFile, "config", "", "The path to a KubeProxyConfiguration file (kubeproxy.config.k8s.io/v1alpha1). Flags set on the command line override its values.")
	fs.StringVar(&fv.mode, "mode", d.Mode, "Which proxy mode to use: 'iptables' or 'ipvs'.")
	fs.StringVar(&fv.mode, "proxy-mode", d.Mode, "Alias of --mode, as kube-proxy spells it.")
	fs.StringVar(&fv.kubeconfig, "kubeconfig", "", "Path to a kubeconfig file. In-cluster configuration when neither this nor --master is given.")
	fs.StringVar(&fv.master, "master", "", "The address of the Kubernetes API server (overrides any value in kubeconfig).")
	fs.StringVar(&fv.hostnameOverride, "hostname-override", "", "The name of this node, as the Node object calls it. Default: the host name.")
	fs.StringVar(&fv.clusterCIDR, "cluster-cidr", "", "The CIDR range of the pods in the cluster (comma-separated, one per family). Traffic to services from outside it is masqueraded.")
	fs.StringVar(&fv.bindAddress, "bind-address", d.BindAddress.String(), "An IP address of this node; its family (IPv4 or IPv6) is the family kproxy programs.")
	fs.StringVar(&fv.healthzBind, "healthz-bind-address", d.HealthzBindAddress, "The address:port of the health check server (/healthz, /livez). Empty disables it.")
	fs.StringVar(&fv.metricsBind, "metrics-bind-address", d.MetricsBindAddress, "The address:port of the metrics server (/metrics, /proxyMode). Empty disables it.")
	fs.DurationVar(&fv.iptSync, "iptables-sync-period", d.SyncPeriod, "The longest time between two syncs of the rules in iptables mode (e.g. '5s', '1m').")
	fs.DurationVar(&fv.iptMinSync, "iptables-min-sync-period", d.MinSyncPeriod, "The shortest time between two syncs of the rules in iptables mode; changes within it are batched.")
	fs.DurationVar(&fv.ipvsSync, "ipvs-sync-period", d.SyncPeriod, "The longest time between two syncs in ipvs mode.")
	fs.DurationVar(&fv.ipvsMinSync, "ipvs-min-sync-period", d.MinSyncPeriod, "The shortest time between two syncs in ipvs mode.")
	fs.DurationVar(&fv.configSync, "config-sync-period", d.ConfigSyncPeriod, "How often the informers resync from their caches.")
	fs.BoolVar(&fv.masqueradeAll, "masquerade-all", false, "Masquerade all traffic sent to service IPs, also from pods.")
	fs.BoolVar(&fv.profiling, "profiling", false, "Serve the Go profiler (net/http/pprof) under /debug/pprof/ on the metrics address.")
	fs.Int32Var(&fv.masqueradeBit, "iptables-masquerade-bit", d.MasqueradeBit, "The bit of the fwmark space that marks packets for SNAT, in [0, 31].")
	fs.Float32Var(&fv.apiQPS, "kube-api-qps", d.APIQPS, "QPS to use while talking with the API server.")
	fs.Int32Var(&fv.apiBurst, "kube-api-burst", d.APIBurst, "Burst to use while talking with the API server.")
	fs.StringVar(&fv.detectLocalMode, "detect-local-mode", d.DetectLocalMode, "How to tell pod traffic from other traffic: ClusterCIDR, NodeCIDR (the node's spec.podCIDR), BridgeInterface or InterfaceNamePrefix.")
	fs.StringVar(&fv.podBridge, "pod-bridge-interface", "", "The bridge pods hang off, with --detect-local-mode=BridgeInterface.")
	fs.StringVar(&fv.podIfPrefix, "pod-interface-name-prefix", "", "The name prefix of pod interfaces, with --detect-local-mode=InterfaceNamePrefix.")
	fs.StringSliceVar(&fv.nodePortAddrs, "nodeport-addresses", nil, "CIDRs of the node addresses NodePorts answer on, or 'primary' for the node's primary IP. Default: every local address.")
	fs.BoolVar(&fv.localhostNP, "iptables-localhost-nodeports", false, "Also answer NodePorts on 127.0.0.0/8 (sets net.ipv4.conf.all.route_localnet=1). Off by default in kproxy (on in kube-proxy).")
	fs.StringVar(&fv.serviceCIDRs, "service-cluster-ip-range", "", "The service CIDRs (comma-separated, kproxy only), instead of the cluster's ServiceCIDR objects. Traffic to an address in them that no service port captures is rejected with one rule per range.")
	fs.StringVar(&fv.ipvsScheduler, "ipvs-scheduler", "rr", "The IPVS scheduler: rr, wrr, lc, wlc, lblc, lblcr, sh, dh, sed, nq or mh.")
	fs.BoolVar(&fv.ipvsStrictARP, "ipvs-strict-arp", false, "Set arp_ignore=1 and arp_announce=2 so service IPs on kube-ipvs0 are not answered by ARP.")
	fs.StringSliceVar(&fv.ipvsExclude, "ipvs-exclude-cidrs", nil, "CIDRs whose IPVS virtual servers kproxy never touches (owned by someone else).")
	fs.DurationVar(&fv.ipvsTCP, "ipvs-tcp-timeout", 0, "IPVS timeout of idle TCP connections (0: leave the kernel's value).")
	fs.DurationVar(&fv.ipvsTCPFin, "ipvs-tcpfin-timeout", 0, "IPVS timeout of TCP connections after FIN (0: leave the kernel's value).")
	fs.DurationVar(&fv.ipvsUDP, "ipvs-udp-timeout", 0, "IPVS timeout of UDP flows (0: leave the kernel's value).")
	fs.StringVar(&fv.datapath, "datapath", d.Datapath, "The pod network kproxy programs between nodes: none (a pure service proxy), vxlan, host-gw or ipip.")
	fs.BoolVar(&fv.directRouting, "vxlan-direct-routing", false, "With --datapath=vxlan, route to peers on this node's L2 subnet directly, without encapsulation.")
	fs.StringVar(&fv.cniConfDir, "cni-conf-dir", d.CNIConfDir, "Where the datapath writes its CNI network configuration (10-kproxy.conflist).")
	fs.StringVar(&fv.underlayIface, "datapath-underlay-interface", "", "The interface peers reach this node by; its address is published to them. Default: the interface holding the node IP.")
	fs.BoolVar(&fv.version, "version", false, "Print the version and exit.")
	fs.BoolVar(&fv.cleanup, "cleanup", false, "Remove the iptables chains and jumps of kproxy's iptables and ipvs modes (not IPVS virtual servers, kube-ipvs0 or ipsets) and exit.")

	// klog's flags (-v, --vmodule, ...), as kube-proxy has them.
	gfs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(gfs)
	fs.AddGoFlagSet(gfs)
	return fs
}

// parseConfig turns the command line into a Config. Every error is a usageError.
func parseConfig(args []string, stdout io.Writer) (Config, bool, error) {
	var fv flagValues
	fs := newFlagSet(&fv)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			_, _ = fmt.Fprintf(stdout, "Usage: kproxy [flags]\n\nkproxy is a Kubernetes service proxy, a drop-in replacement for kube-proxy.\n\n%s", fs.FlagUsages())
			return Config{}, false, err
		}
		return Config{}, false, usageError{err}
	}
	if fv.version {
		return Config{}, true, nil
	}
	if fs.NArg() > 0 {
		return Config{}, false, usagef("unexpected argument %q", fs.Arg(0))
	}
	cfg, err := resolveConfig(fs, &fv)
	return cfg, false, err
}

// resolveConfig builds the Config from parsed flags: defaults, then the --config file, then
// the flags set on the command line, validated.
func resolveConfig(fs *pflag.FlagSet, fv *flagValues) (Config, error) {
	cfg := defaultConfig()
	if fv.configFile != "" {
		if err := applyConfigFile(&cfg, fv.configFile); err != nil {
			return Config{}, err
		}
	}
	if err := applyFlags(&cfg, fs, fv); err != nil {
		return Config{}, err
	}
	if err := validate(&cfg); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// applyConfigFile loads a KubeProxyConfiguration. Unknown fields are an error, as in
// kube-proxy's strict decoding, so a typo does not silently fall back to a default.
func applyConfigFile(cfg *Config, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return usagef("read --config %s: %w", path, err)
	}
	var kc kpv1alpha1.KubeProxyConfiguration
	if err := yaml.UnmarshalStrict(data, &kc); err != nil {
		return usagef("parse --config %s: %w", path, err)
	}
	const wantAPIVersion = "kubeproxy.config.k8s.io/v1alpha1"
	if kc.APIVersion != wantAPIVersion || kc.Kind != "KubeProxyConfiguration" {
		return usagef("parse --config %s: want apiVersion %s, kind KubeProxyConfiguration; got apiVersion %q, kind %q",
			path, wantAPIVersion, kc.APIVersion, kc.Kind)
	}
	if kc.Mode != "" {
		cfg.Mode = string(kc.Mode)
	}
	if kc.ClientConnection.Kubeconfig != "" {
		cfg.Kubeconfig = kc.ClientConnection.Kubeconfig
	}
	if kc.ClientConnection.QPS != 0 {
		cfg.APIQPS = kc.ClientConnection.QPS
	}
	if kc.ClientConnection.Burst != 0 {
		cfg.APIBurst = kc.ClientConnection.Burst
	}
	cfg.HostnameOverride = kc.HostnameOverride
	if kc.ClusterCIDR != "" {
		p, err := parseCIDRs(kc.ClusterCIDR)
		if err != nil {
			return usagef("--config %s: clusterCIDR: %w", path, err)
		}
		cfg.ClusterCIDRs = p
	}
	if kc.BindAddress != "" {
		a, err := netip.ParseAddr(kc.BindAddress)
		if err != nil {
			return usagef("--config %s: bindAddress: %w", path, err)
		}
		cfg.BindAddress = a
	}
	if kc.HealthzBindAddress != "" {
		cfg.HealthzBindAddress = kc.HealthzBindAddress
	}
	if kc.MetricsBindAddress != "" {
		cfg.MetricsBindAddress = kc.MetricsBindAddress
	}
	cfg.EnableProfiling = kc.EnableProfiling
	if kc.ConfigSyncPeriod.Duration != 0 {
		cfg.ConfigSyncPeriod = kc.ConfigSyncPeriod.Duration
	}
	sync, minSync := kc.IPTables.SyncPeriod.Duration, kc.IPTables.MinSyncPeriod.Duration
	if cfg.Mode == "ipvs" {
		sync, minSync = kc.IPVS.SyncPeriod.Duration, kc.IPVS.MinSyncPeriod.Duration
	}
	if sync != 0 {
		cfg.SyncPeriod = sync
	}
	if minSync != 0 {
		cfg.MinSyncPeriod = minSync
	}
	cfg.MasqueradeAll = kc.IPTables.MasqueradeAll
	if kc.IPTables.MasqueradeBit != nil {
		cfg.MasqueradeBit = *kc.IPTables.MasqueradeBit
	}
	if kc.DetectLocalMode != "" {
		cfg.DetectLocalMode = string(kc.DetectLocalMode)
	}
	cfg.PodBridgeInterface = kc.DetectLocal.BridgeInterface
	cfg.PodInterfaceNamePrefix = kc.DetectLocal.InterfaceNamePrefix
	if len(kc.NodePortAddresses) > 0 {
		p, primary, err := parseNodePortAddresses(kc.NodePortAddresses)
		if err != nil {
			return usagef("--config %s: nodePortAddresses: %w", path, err)
		}
		cfg.NodePortAddresses, cfg.NodePortPrimary = p, primary
	}
	if kc.IPVS.Scheduler != "" {
		cfg.IPVSScheduler = kc.IPVS.Scheduler
	}
	cfg.IPVSStrictARP = kc.IPVS.StrictARP
	cfg.IPVSTCPTimeout = kc.IPVS.TCPTimeout.Duration
	cfg.IPVSTCPFinTimeout = kc.IPVS.TCPFinTimeout.Duration
	cfg.IPVSUDPTimeout = kc.IPVS.UDPTimeout.Duration
	if len(kc.IPVS.ExcludeCIDRs) > 0 {
		p, err := parseCIDRs(strings.Join(kc.IPVS.ExcludeCIDRs, ","))
		if err != nil {
			return usagef("--config %s: ipvs.excludeCIDRs: %w", path, err)
		}
		cfg.IPVSExcludeCIDRs = p
	}
	if kc.IPTables.LocalhostNodePorts != nil {
		cfg.LocalhostNodePorts = *kc.IPTables.LocalhostNodePorts
	}
	return nil
}

func parseNodePortAddresses(in []string) ([]netip.Prefix, bool, error) {
	var (
		out     []netip.Prefix
		primary bool
	)
	for _, a := range in {
		a = strings.TrimSpace(a)
		if a == "primary" {
			primary = true
			continue
		}
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return nil, false, fmt.Errorf("%q is neither a CIDR nor 'primary'", a)
		}
		out = append(out, p.Masked())
	}
	if primary && len(out) > 0 {
		return nil, false, fmt.Errorf("'primary' cannot be combined with CIDRs")
	}
	return out, primary, nil
}

// applyFlags copies the flags that were set on the command line over cfg.
func applyFlags(cfg *Config, fs *pflag.FlagSet, fv *flagValues) error {
	set := func(name string) bool { return fs.Changed(name) }
	if set("mode") || set("proxy-mode") {
		cfg.Mode = fv.mode
	}
	if set("kubeconfig") {
		cfg.Kubeconfig = fv.kubeconfig
	}
	if set("master") {
		cfg.Master = fv.master
	}
	if set("hostname-override") {
		cfg.HostnameOverride = fv.hostnameOverride
	}
	if set("cluster-cidr") {
		p, err := parseCIDRs(fv.clusterCIDR)
		if err != nil {
			return usagef("invalid --cluster-cidr %q: %w", fv.clusterCIDR, err)
		}
		cfg.ClusterCIDRs = p
	}
	if set("bind-address") {
		a, err := netip.ParseAddr(fv.bindAddress)
		if err != nil {
			return usagef("invalid --bind-address %q: not an IP address", fv.bindAddress)
		}
		cfg.BindAddress = a
	}
	if set("healthz-bind-address") {
		cfg.HealthzBindAddress = fv.healthzBind
	}
	if set("metrics-bind-address") {
		cfg.MetricsBindAddress = fv.metricsBind
	}
	ipvs := cfg.Mode == "ipvs"
	if ipvs && set("ipvs-sync-period") || !ipvs && set("iptables-sync-period") {
		cfg.SyncPeriod = pick(ipvs, fv.ipvsSync, fv.iptSync)
	}
	if ipvs && set("ipvs-min-sync-period") || !ipvs && set("iptables-min-sync-period") {
		cfg.MinSyncPeriod = pick(ipvs, fv.ipvsMinSync, fv.iptMinSync)
	}
	if set("config-sync-period") {
		cfg.ConfigSyncPeriod = fv.configSync
	}
	if set("masquerade-all") {
		cfg.MasqueradeAll = fv.masqueradeAll
	}
	if set("profiling") {
		cfg.EnableProfiling = fv.profiling
	}
	if set("iptables-masquerade-bit") {
		cfg.MasqueradeBit = fv.masqueradeBit
	}
	if set("detect-local-mode") {
		cfg.DetectLocalMode = fv.detectLocalMode
	}
	if set("pod-bridge-interface") {
		cfg.PodBridgeInterface = fv.podBridge
	}
	if set("pod-interface-name-prefix") {
		cfg.PodInterfaceNamePrefix = fv.podIfPrefix
	}
	if set("nodeport-addresses") {
		p, primary, err := parseNodePortAddresses(fv.nodePortAddrs)
		if err != nil {
			return usagef("invalid --nodeport-addresses: %w", err)
		}
		cfg.NodePortAddresses, cfg.NodePortPrimary = p, primary
	}
	if set("iptables-localhost-nodeports") {
		cfg.LocalhostNodePorts = fv.localhostNP
	}
	if set("service-cluster-ip-range") {
		p, err := parseCIDRs(fv.serviceCIDRs)
		if err != nil {
			return usagef("invalid --service-cluster-ip-range %q: %w", fv.serviceCIDRs, err)
		}
		cfg.ServiceCIDRs = p
	}
	if set("ipvs-scheduler") {
		cfg.IPVSScheduler = fv.ipvsScheduler
	}
	if set("ipvs-strict-arp") {
		cfg.IPVSStrictARP = fv.ipvsStrictARP
	}
	if set("ipvs-tcp-timeout") {
		cfg.IPVSTCPTimeout = fv.ipvsTCP
	}
	if set("ipvs-tcpfin-timeout") {
		cfg.IPVSTCPFinTimeout = fv.ipvsTCPFin
	}
	if set("ipvs-udp-timeout") {
		cfg.IPVSUDPTimeout = fv.ipvsUDP
	}
	if set("ipvs-exclude-cidrs") {
		p, err := parseCIDRs(strings.Join(fv.ipvsExclude, ","))
		if err != nil {
			return usagef("invalid --ipvs-exclude-cidrs: %w", err)
		}
		cfg.IPVSExcludeCIDRs = p
	}
	if set("datapath") {
		cfg.Datapath = fv.datapath
	}
	if set("vxlan-direct-routing") {
		cfg.VXLANDirectRouting = fv.directRouting
	}
	if set("cni-conf-dir") {
		cfg.CNIConfDir = fv.cniConfDir
	}
	if set("datapath-underlay-interface") {
		cfg.DatapathUnderlayInterface = fv.underlayIface
	}
	if set("kube-api-qps") {
		cfg.APIQPS = fv.apiQPS
	}
	if set("kube-api-burst") {
		cfg.APIBurst = fv.apiBurst
	}
	cfg.Cleanup = fv.cleanup
	return nil
}

func pick[T any](first bool, a, b T) T {
	if first {
		return a
	}
	return b
}

func validate(cfg *Config) error {
	switch cfg.Mode {
	case "iptables", "ipvs":
	default:
		return usagef("unknown proxy mode %q: use --mode=iptables or --mode=ipvs", cfg.Mode)
	}
	switch cfg.Datapath {
	case "none", "vxlan", "host-gw", "ipip":
	default:
		return usagef("unknown --datapath %q: use none, vxlan, host-gw or ipip", cfg.Datapath)
	}
	if cfg.VXLANDirectRouting && cfg.Datapath != "vxlan" {
		return usagef("--vxlan-direct-routing needs --datapath=vxlan, not %q", cfg.Datapath)
	}
	if cfg.SyncPeriod <= 0 {
		return usagef("sync period must be positive, got %s", cfg.SyncPeriod)
	}
	if cfg.MinSyncPeriod < 0 || cfg.MinSyncPeriod > cfg.SyncPeriod {
		return usagef("min sync period %s must be between 0 and the sync period %s", cfg.MinSyncPeriod, cfg.SyncPeriod)
	}
	if cfg.MasqueradeBit < 0 || cfg.MasqueradeBit > 31 {
		return usagef("--iptables-masquerade-bit must be in [0, 31], got %d", cfg.MasqueradeBit)
	}
	for _, a := range []struct{ name, v string }{
		{"--healthz-bind-address", cfg.HealthzBindAddress},
		{"--metrics-bind-address", cfg.MetricsBindAddress},
	} {
		if a.v == "" {
			continue
		}
		host, port, err := net.SplitHostPort(a.v)
		if err != nil {
			return usagef("invalid %s %q: want IP:port", a.name, a.v)
		}
		if _, err := netip.ParseAddr(host); err != nil {
			return usagef("invalid %s %q: %q is not an IP address", a.name, a.v, host)
		}
		if _, err := netip.ParseAddrPort("0.0.0.0:" + port); err != nil {
			return usagef("invalid %s %q: bad port %q", a.name, a.v, port)
		}
	}
	if err := ipvs.ValidateScheduler(cfg.IPVSScheduler); err != nil {
		return usagef("invalid --ipvs-scheduler %q: use rr, wrr, lc, wlc, lblc, lblcr, sh, dh, sed, nq or mh", cfg.IPVSScheduler)
	}
	for _, d := range []time.Duration{cfg.IPVSTCPTimeout, cfg.IPVSTCPFinTimeout, cfg.IPVSUDPTimeout} {
		if d < 0 {
			return usagef("IPVS timeouts must not be negative, got %s", d)
		}
	}
	switch cfg.DetectLocalMode {
	case "ClusterCIDR", "NodeCIDR":
	case "BridgeInterface":
		if cfg.PodBridgeInterface == "" {
			return usagef("--detect-local-mode=BridgeInterface needs --pod-bridge-interface")
		}
	case "InterfaceNamePrefix":
		if cfg.PodInterfaceNamePrefix == "" {
			return usagef("--detect-local-mode=InterfaceNamePrefix needs --pod-interface-name-prefix")
		}
	default:
		return usagef("unknown --detect-local-mode %q: use ClusterCIDR, NodeCIDR, BridgeInterface or InterfaceNamePrefix", cfg.DetectLocalMode)
	}
	fams := map[bool]bool{}
	for _, p := range cfg.ClusterCIDRs {
		if fams[p.Addr().Is4()] {
			return usagef("--cluster-cidr has two CIDRs of the same IP family")
		}
		fams[p.Addr().Is4()] = true
	}
	return nil
}

func parseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR", part)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
