package main

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/endpoints"
)

// kproxy inspect, the part that does not depend on the mode: the API's view of each selected
// service port next to what the mode expects and what the kernel holds (modeInspector), and
// the differences. Pure but for the kernel reads the modeInspector does.

// inspectInput is what one report is made from: the API objects, this node, one IP family.
type inspectInput struct {
	Services []*v1.Service
	Slices   []*discovery.EndpointSlice
	Node     endpoints.NodeInfo
	Family   v1.IPFamily
	// Selectors pick the service ports (parseSelector); none picks every one.
	Selectors []selector
	// Source, when valid, traces a connection from it to each address of each port.
	Source netip.Addr
	Mode   modeInspector
}

// modeInspector is a mode's part of a report: what it would program for a snapshot and what
// the kernel holds, as sections of comparable lines.
type modeInspector interface {
	Name() string
	// Load reads the kernel and computes the expected state for the snapshot.
	Load(ctx context.Context, snap endpoints.Snapshot, node endpoints.NodeInfo) error
	// Port returns the expected and kernel sections of one service port, and its targets
	// (where the kernel sends its traffic), read from the kernel.
	Port(sp *endpoints.ServicePort) (expected, kernel []section, targets []string)
	// Trace follows a connection from src to dst:port/proto through the kernel's rules, one
	// line per possible outcome; nil when the mode cannot.
	Trace(src, dst netip.Addr, port int32, proto v1.Protocol) ([]string, error)
}

// section is a group of kernel objects, compared as a whole: a chain and its rules, a
// virtual server and its real servers, a set's entries for the port.
type section struct {
	Name  string   `json:"name"`
	Lines []string `json:"lines"`
	// Ordered sections compare line by line (a chain); others as sets (a chain's rules for
	// one service among others', a set's entries).
	Ordered bool `json:"-"`
}

// inspectReport is the whole output for one IP family.
type inspectReport struct {
	Node     string       `json:"node"`
	Mode     string       `json:"mode"`
	Family   string       `json:"ipFamily"`
	Ports    []portReport `json:"servicePorts"`
	Problems []problem    `json:"problems,omitempty"`
}

// problem is bad input the tracker skipped (what kproxy logs and reports as an event).
type problem struct {
	Kind    string `json:"kind"`
	Object  string `json:"object"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// portReport is one service port.
type portReport struct {
	Name                  string           `json:"name"`
	Protocol              string           `json:"protocol"`
	ClusterIP             string           `json:"clusterIP"`
	Port                  int32            `json:"port"`
	NodePort              int32            `json:"nodePort,omitempty"`
	ExternalIPs           []string         `json:"externalIPs,omitempty"`
	LoadBalancerIPs       []string         `json:"loadBalancerIPs,omitempty"`
	InternalTrafficPolicy string           `json:"internalTrafficPolicy"`
	ExternalTrafficPolicy string           `json:"externalTrafficPolicy,omitempty"`
	SessionAffinity       string           `json:"sessionAffinity"`
	TrafficDistribution   string           `json:"trafficDistribution,omitempty"`
	Endpoints             []endpointReport `json:"endpoints"`
	Targets               []string         `json:"targets"`
	Expected              []section        `json:"expected"`
	Kernel                []section        `json:"kernel"`
	// Diff lists every difference between Expected and Kernel; empty when they agree.
	Diff   []string      `json:"diff"`
	Traces []traceReport `json:"traces,omitempty"`
}

// endpointReport is one endpoint with its conditions and the traffic that uses it on this node.
type endpointReport struct {
	Address     string `json:"address"`
	Ready       bool   `json:"ready"`
	Serving     bool   `json:"serving"`
	Terminating bool   `json:"terminating"`
	Node        string `json:"node,omitempty"`
	Zone        string `json:"zone,omitempty"`
	// Internal and External say whether this node sends ClusterIP traffic, and node port /
	// external / load-balancer traffic, to it.
	Internal bool `json:"internal"`
	External bool `json:"external"`
}

// traceReport is where a connection from the --source goes.
type traceReport struct {
	Destination string   `json:"destination"`
	Outcomes    []string `json:"outcomes"`
	Error       string   `json:"error,omitempty"`
}

// selector picks service ports: by namespace/name (and port name), or by address.
type selector struct {
	Service types.NamespacedName
	Port    string // port name; "" with HasPort false: every port
	HasPort bool
	// Addr, when valid, picks the ports that capture Addr:AddrPort/Protocol.
	Addr     netip.Addr
	AddrPort int32
	Protocol v1.Protocol
}

// parseSelector reads "namespace/name", "namespace/name:port" or "IP:port[/protocol]"
// ("[IPv6]:port[/protocol]").
func parseSelector(s string) (selector, error) {
	addr, proto, hasProto := strings.Cut(s, "/")
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		p := v1.ProtocolTCP
		if hasProto {
			p = v1.Protocol(strings.ToUpper(proto))
			if p != v1.ProtocolTCP && p != v1.ProtocolUDP && p != v1.ProtocolSCTP {
				return selector{}, fmt.Errorf("%q: protocol %q is not tcp, udp or sctp", s, proto)
			}
		}
		return selector{Addr: ap.Addr().Unmap(), AddrPort: int32(ap.Port()), Protocol: p}, nil
	}
	ns, rest, ok := strings.Cut(s, "/")
	if !ok || ns == "" || rest == "" || strings.Contains(rest, "/") {
		return selector{}, fmt.Errorf("%q: want namespace/name, namespace/name:port or IP:port[/protocol]", s)
	}
	name, port, hasPort := strings.Cut(rest, ":")
	return selector{Service: types.NamespacedName{Namespace: ns, Name: name}, Port: port, HasPort: hasPort}, nil
}

func (s selector) matches(sp *endpoints.ServicePort) bool {
	if s.Addr.IsValid() {
		if sp.Protocol != s.Protocol {
			return false
		}
		if sp.Port == s.AddrPort && (sp.ClusterIP == s.Addr || slices.Contains(sp.ExternalIPs, s.Addr) || slices.Contains(sp.LoadBalancerIPs, s.Addr)) {
			return true
		}
		return sp.NodePort != 0 && sp.NodePort == s.AddrPort
	}
	return sp.Name.NamespacedName == s.Service && (!s.HasPort || sp.Name.Port == s.Port)
}

// buildReport makes the report of one family.
func buildReport(ctx context.Context, in inspectInput) (inspectReport, error) {
	rep := inspectReport{Node: in.Node.Name, Mode: in.Mode.Name(), Family: string(in.Family)}
	sliceService := map[types.NamespacedName]string{}
	for _, s := range in.Slices {
		sliceService[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = s.Labels[discovery.LabelServiceName]
	}
	var problems []problem
	tracker := endpoints.NewTracker(endpoints.TrackerOptions{IPFamily: in.Family,
		OnInvalid: func(kind, ns, name, reason, msg string) {
			problems = append(problems, problem{Kind: kind, Object: ns + "/" + name, Reason: reason, Message: msg})
		}})
	for _, s := range in.Services {
		tracker.OnServiceAdd(s)
	}
	for _, s := range in.Slices {
		tracker.OnEndpointSliceAdd(s)
	}
	snap := tracker.Checkout()
	if err := in.Mode.Load(ctx, snap, in.Node); err != nil {
		return rep, err
	}

	selected := map[types.NamespacedName]bool{}
	for _, name := range slices.SortedFunc(mapsKeys(snap.Services), compareSPN) {
		sp := snap.Services[name]
		if len(in.Selectors) > 0 && !slices.ContainsFunc(in.Selectors, func(s selector) bool { return s.matches(sp) }) {
			continue
		}
		selected[name.NamespacedName] = true
		rep.Ports = append(rep.Ports, reportPort(in, sp, snap.Endpoints[name]))
	}
	for _, s := range in.Selectors {
		if !s.Addr.IsValid() {
			selected[s.Service] = true // a service without programmable ports still shows its problems
		}
	}
	for _, p := range problems {
		ns, name, _ := strings.Cut(p.Object, "/")
		key := types.NamespacedName{Namespace: ns, Name: name}
		if p.Kind == "EndpointSlice" {
			key.Name = sliceService[key]
		}
		if len(in.Selectors) == 0 || selected[key] {
			rep.Problems = append(rep.Problems, p)
		}
	}
	return rep, nil
}

func reportPort(in inspectInput, sp *endpoints.ServicePort, eps []endpoints.Endpoint) portReport {
	pr := portReport{
		Name: sp.Name.String(), Protocol: string(sp.Protocol), ClusterIP: sp.ClusterIP.String(),
		Port: sp.Port, NodePort: sp.NodePort, InternalTrafficPolicy: "Cluster", SessionAffinity: "None",
		TrafficDistribution: sp.TrafficDistribution, ExternalIPs: addrStrings(sp.ExternalIPs),
		LoadBalancerIPs: addrStrings(sp.LoadBalancerIPs),
	}
	if sp.InternalPolicyLocal {
		pr.InternalTrafficPolicy = "Local"
	}
	if sp.ExternallyAccessible() {
		pr.ExternalTrafficPolicy = "Cluster"
		if sp.ExternalPolicyLocal {
			pr.ExternalTrafficPolicy = "Local"
		}
	}
	if sp.SessionAffinityTimeout > 0 {
		pr.SessionAffinity = "ClientIP " + sp.SessionAffinityTimeout.String()
	}
	c := endpoints.CategorizeEndpoints(eps, sp, in.Node)
	internal, external := c.Internal(sp), c.External(sp)
	for _, ep := range eps {
		same := func(e endpoints.Endpoint) bool { return e.IP == ep.IP && e.Port == ep.Port }
		pr.Endpoints = append(pr.Endpoints, endpointReport{
			Address: ep.String(), Ready: ep.Ready, Serving: ep.Serving, Terminating: ep.Terminating,
			Node: ep.NodeName, Zone: ep.Zone,
			Internal: slices.ContainsFunc(internal, same),
			External: sp.ExternallyAccessible() && slices.ContainsFunc(external, same),
		})
	}
	pr.Expected, pr.Kernel, pr.Targets = in.Mode.Port(sp)
	pr.Diff = diffSections(pr.Expected, pr.Kernel)
	if in.Source.IsValid() {
		pr.Traces = tracePort(in, sp)
	}
	return pr
}

// tracePort traces a connection from the source to each address of the port.
func tracePort(in inspectInput, sp *endpoints.ServicePort) []traceReport {
	type dst struct {
		addr netip.Addr
		port int32
	}
	dsts := []dst{{sp.ClusterIP, sp.Port}}
	for _, a := range slices.Concat(sp.ExternalIPs, sp.LoadBalancerIPs) {
		dsts = append(dsts, dst{a, sp.Port})
	}
	var out []traceReport
	for _, d := range dsts {
		tr := traceReport{Destination: netip.AddrPortFrom(d.addr, uint16(d.port)).String() + "/" + strings.ToLower(string(sp.Protocol))}
		lines, err := in.Mode.Trace(in.Source, d.addr, d.port, sp.Protocol)
		if err != nil {
			tr.Error = err.Error()
		}
		if lines == nil && err == nil {
			continue
		}
		tr.Outcomes = lines
		out = append(out, tr)
	}
	return out
}

// diffSections lists every difference between the expected and the kernel's sections.
func diffSections(expected, kernel []section) []string {
	byName := func(ss []section) map[string]section {
		m := map[string]section{}
		for _, s := range ss {
			m[s.Name] = s
		}
		return m
	}
	exp, ker := byName(expected), byName(kernel)
	var names []string
	for _, s := range expected {
		names = append(names, s.Name)
	}
	for _, s := range kernel {
		if _, ok := exp[s.Name]; !ok {
			names = append(names, s.Name)
		}
	}
	var out []string
	for _, name := range names {
		before := len(out)
		e, inExp := exp[name]
		k, inKer := ker[name]
		switch {
		case !inKer:
			out = append(out, name+": missing in the kernel")
			continue
		case !inExp:
			out = append(out, name+": in the kernel, not expected")
			continue
		}
		for _, l := range e.Lines {
			if !slices.Contains(k.Lines, l) {
				out = append(out, name+": missing: "+l)
			}
		}
		for _, l := range k.Lines {
			if !slices.Contains(e.Lines, l) {
				out = append(out, name+": unexpected: "+l)
			}
		}
		if e.Ordered && len(out) == before && !slices.Equal(e.Lines, k.Lines) {
			out = append(out, name+": the rules are in another order")
		}
	}
	return out
}

func addrStrings(as []netip.Addr) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.String())
	}
	return out
}

func mapsKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func compareSPN(a, b endpoints.ServicePortName) int {
	if c := strings.Compare(a.String(), b.String()); c != 0 {
		return c
	}
	return strings.Compare(string(a.Protocol), string(b.Protocol))
}
