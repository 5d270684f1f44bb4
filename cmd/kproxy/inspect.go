package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/spf13/pflag"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/kubernetes"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/ipset"
	"github.com/kproxy/kproxy/iptables"
	"github.com/kproxy/kproxy/ipvs"
	"github.com/kproxy/kproxy/proxier"
)

// Exit codes of kproxy inspect.
const (
	inspectOK          = 0 // the kernel holds what kproxy would program
	inspectFailed      = 1 // could not read the API or the kernel
	inspectUsage       = 2
	inspectDifferences = 3 // at least one difference between the expected state and the kernel
)

const inspectUsageText = `Usage: kproxy inspect [flags] [SERVICE...]

Shows, for each service port, what the API says (addresses, policies, endpoints and their
conditions, which ones this node uses) next to what the kernel holds (iptables mode: the
chains from KUBE-SERVICES to the DNAT targets; IPVS mode: virtual and real servers, the
kube-ipvs0 addresses, the KUBE- ipset entries), and every difference between what kproxy
would program and what is there. Run it on the node (host network, as root), with the same
--config and flags as the kproxy daemon.

SERVICE is namespace/name, namespace/name:port (the port's name) or IP:port[/tcp|udp|sctp]
(a ClusterIP, externalIP or load-balancer IP, or a node port on any address). Without
SERVICE, every service port.

Exit status: 0 when the kernel matches, 3 when there is a difference, 1 on an error, 2 for a
bad command line.

Flags:
`

// inspectFlags are kproxy inspect's own flags, on top of the daemon's.
type inspectFlags struct {
	output    string
	source    string
	showRules bool
	timeout   time.Duration
}

// runInspect is `kproxy inspect`.
func runInspect(args []string, stdout, stderr io.Writer) int {
	var fv flagValues
	fs := newFlagSet(&fv)
	var inf inspectFlags
	fs.StringVarP(&inf.output, "output", "o", "text", "Output format: text or json.")
	fs.StringVar(&inf.source, "source", "", "Also trace a connection from this source address to each address of each port: DNAT targets, masquerade or not (iptables mode).")
	fs.BoolVar(&inf.showRules, "show-rules", false, "Print the kernel's objects (chains, virtual servers, set entries) of every port (text output).")
	fs.DurationVar(&inf.timeout, "timeout", 60*time.Second, "Give up after this long.")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			_, _ = fmt.Fprintf(stdout, "%s%s", inspectUsageText, fs.FlagUsages())
			return inspectOK
		}
		_, _ = fmt.Fprintf(stderr, "kproxy inspect: %v (see kproxy inspect --help)\n", err)
		return inspectUsage
	}
	cfg, err := resolveConfig(fs, &fv)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "kproxy inspect: %v (see kproxy inspect --help)\n", err)
		return inspectUsage
	}
	var sels []selector
	for _, a := range fs.Args() {
		s, err := parseSelector(a)
		if err != nil {
			_, _ = fmt.Fprintf(stderr, "kproxy inspect: %v\n", err)
			return inspectUsage
		}
		sels = append(sels, s)
	}
	var src netip.Addr
	if inf.source != "" {
		if src, err = netip.ParseAddr(inf.source); err != nil {
			_, _ = fmt.Fprintf(stderr, "kproxy inspect: --source %q: not an IP address\n", inf.source)
			return inspectUsage
		}
	}
	if inf.output != "text" && inf.output != "json" {
		_, _ = fmt.Fprintf(stderr, "kproxy inspect: -o %q: want text or json\n", inf.output)
		return inspectUsage
	}

	ctx, cancel := context.WithTimeout(context.Background(), inf.timeout)
	defer cancel()
	reps, err := inspect(ctx, cfg, sels, src)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "kproxy inspect: %v\n", err)
		return inspectFailed
	}
	if inf.output == "json" {
		err = writeJSON(stdout, reps)
	} else {
		err = writeText(stdout, reps, inf.showRules)
	}
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "kproxy inspect: %v\n", err)
		return inspectFailed
	}
	for _, r := range reps {
		for _, p := range r.Ports {
			if len(p.Diff) > 0 {
				return inspectDifferences
			}
		}
	}
	return inspectOK
}

// inspect reads the API and the kernel and makes one report per IP family kproxy programs.
func inspect(ctx context.Context, cfg Config, sels []selector, src netip.Addr) ([]inspectReport, error) {
	rc, err := restConfig(cfg)
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	name, err := nodeName(cfg.HostnameOverride)
	if err != nil {
		return nil, err
	}
	node, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("read Node %s: %w", name, err)
		}
		node = nil // Local policies and topology then see no endpoint as local
	}
	svcs, sls, err := listObjects(ctx, client, sels)
	if err != nil {
		return nil, err
	}
	if len(cfg.ServiceCIDRs) == 0 {
		// The daemon's ranges when --service-cluster-ip-range is unset (kube-proxy's role may
		// list them; without the right, the daemon has none either).
		if list, err := client.NetworkingV1().ServiceCIDRs().List(ctx, metav1.ListOptions{}); err == nil {
			cfg.ServiceCIDRs = proxier.ServiceCIDRRanges(ctx, ptrs(list.Items))
		}
	}
	info := endpoints.NodeInfo{Name: name}
	if node != nil {
		info.Zone = node.Labels[proxier.LabelZone]
	}
	var reps []inspectReport
	for _, family := range ipFamilies(cfg.BindAddress, node) {
		mode, err := newModeInspector(cfg, family, node)
		if err != nil {
			return nil, err
		}
		rep, err := buildReport(ctx, inspectInput{Services: svcs, Slices: sls, Node: info, Family: family,
			Selectors: sels, Source: src, Mode: mode})
		if err != nil {
			return nil, err
		}
		reps = append(reps, rep)
	}
	return reps, nil
}

func ptrs[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}

// listObjects reads the Services and EndpointSlices kproxy's informers would see (without the
// service-proxy-name and headless labels): only the named services and their slices when
// every selector names a service, else all of them.
func listObjects(ctx context.Context, client kubernetes.Interface, sels []selector) ([]*v1.Service, []*discovery.EndpointSlice, error) {
	noProxyName, _ := labels.NewRequirement(proxier.LabelServiceProxyName, selection.DoesNotExist, nil)
	noHeadless, _ := labels.NewRequirement(proxier.LabelHeadless, selection.DoesNotExist, nil)
	base := labels.NewSelector().Add(*noProxyName, *noHeadless)
	byName := len(sels) > 0 && !slices.ContainsFunc(sels, func(s selector) bool { return s.Addr.IsValid() })
	var svcs []*v1.Service
	var sls []*discovery.EndpointSlice
	if !byName {
		list, err := client.CoreV1().Services("").List(ctx, metav1.ListOptions{LabelSelector: base.String()})
		if err != nil {
			return nil, nil, fmt.Errorf("list services: %w", err)
		}
		for i := range list.Items {
			svcs = append(svcs, &list.Items[i])
		}
		slist, err := client.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{LabelSelector: base.String()})
		if err != nil {
			return nil, nil, fmt.Errorf("list endpointslices: %w", err)
		}
		for i := range slist.Items {
			sls = append(sls, &slist.Items[i])
		}
		return svcs, sls, nil
	}
	for _, s := range sels {
		// A list by name, not a get: kube-proxy's role (system:node-proxier) may only list.
		list, err := client.CoreV1().Services(s.Service.Namespace).List(ctx, metav1.ListOptions{
			LabelSelector: base.String(), FieldSelector: fields.OneTermEqualSelector("metadata.name", s.Service.Name).String()})
		if err != nil {
			return nil, nil, fmt.Errorf("list service %s: %w", s.Service, err)
		}
		for i := range list.Items {
			svcs = append(svcs, &list.Items[i])
		}
		owned, _ := labels.NewRequirement(discovery.LabelServiceName, selection.Equals, []string{s.Service.Name})
		slist, err := client.DiscoveryV1().EndpointSlices(s.Service.Namespace).List(ctx,
			metav1.ListOptions{LabelSelector: base.Add(*owned).String()})
		if err != nil {
			return nil, nil, fmt.Errorf("list endpointslices of %s: %w", s.Service, err)
		}
		for i := range slist.Items {
			sls = append(sls, &slist.Items[i])
		}
	}
	return svcs, sls, nil
}

// newModeInspector opens the kernel handles of the configured mode for one family.
func newModeInspector(cfg Config, family v1.IPFamily, node *v1.Node) (modeInspector, error) {
	switch cfg.Mode {
	case "ipvs":
		icfg, err := ipvsConfig(cfg, family, node)
		if err != nil {
			return nil, err
		}
		kernel, err := ipvs.NewKernel("")
		if err != nil {
			return nil, fmt.Errorf("open IPVS: %w (is the ip_vs module loaded?)", err)
		}
		sets, err := ipset.New(ipset.Options{})
		if err != nil {
			return nil, fmt.Errorf("open ipset netlink: %w", err)
		}
		return &ipvsInspector{cfg: icfg, ipvs: kernel, links: kernel, sets: sets}, nil
	default:
		ipt := iptables.New(iptables.Options{IPv6: family == v1.IPv6Protocol})
		pcfg, err := iptablesConfig(cfg, family, node, ipt)
		if err != nil {
			return nil, err
		}
		local := familyAddrs(family)
		var npIPs []netip.Addr
		for _, a := range local {
			if slices.ContainsFunc(pcfg.NodePortAddresses, func(p netip.Prefix) bool { return p.Contains(a) }) {
				npIPs = append(npIPs, a)
			}
		}
		return &iptablesInspector{cfg: pcfg, ipt: ipt, nodePortIPs: npIPs, local: local}, nil
	}
}

// familyAddrs lists the addresses of the family in the process's network namespace.
func familyAddrs(family v1.IPFamily) []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() == (family == v1.IPv4Protocol) {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}
