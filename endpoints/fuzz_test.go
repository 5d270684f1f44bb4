package endpoints

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/kproxy/kproxy/internal/apifuzz"
)

// FuzzTracker feeds arbitrary Service and EndpointSlice events (internal/apifuzz: the seed
// corpus of real and malformed objects, or byte programs) to a Tracker of each IP family and
// checks, besides not panicking:
//
//   - the snapshot is well formed: ports 1-65535 with a known protocol and a cluster IP of the
//     family, endpoints of the family sorted by IP then port without duplicates;
//   - the state depends only on the objects, not on the path: a tracker fed the events one by
//     one (with checkouts in between) ends where a fresh tracker fed the surviving objects does;
//   - nothing is dropped silently: a port or endpoint that is plainly valid is in the model, a
//     plainly invalid one on an object that is otherwise programmed is reported through
//     OnInvalid, and each object version is reported at most once (an informer resync
//     reports nothing);
//   - CategorizeEndpoints only picks from the port's endpoints, keeps them sorted, and keeps
//     the local set on the node.
//
// Run it with: go test ./endpoints -run '^$' -fuzz FuzzTracker -fuzztime 60s -fuzzminimizetime 50x
// (the default minimizes each new input for up to a minute).
func FuzzTracker(f *testing.F) {
	seeds, err := apifuzz.Seeds()
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range seeds {
		f.Add(s.Data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ops := apifuzz.Decode(data)
		for _, fam := range []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol} {
			checkTracker(t, fam, ops)
		}
	})
}

// report is one OnInvalid call, with the version of the object being folded.
type report struct {
	kind, namespace, name, version, reason, message string
}

func checkTracker(t *testing.T, fam v1.IPFamily, ops []apifuzz.Op) {
	t.Helper()
	var reports []report
	version := ""
	incr := NewTracker(TrackerOptions{IPFamily: fam, OnInvalid: func(kind, ns, name, reason, msg string) {
		reports = append(reports, report{kind, ns, name, version, reason, msg})
	}})
	for _, op := range ops {
		switch op.Kind {
		case apifuzz.AddService, apifuzz.UpdateService:
			version = op.Service.ResourceVersion
			incr.OnServiceUpdate(op.OldService, op.Service)
		case apifuzz.DeleteService:
			incr.OnServiceDelete(op.Service)
		case apifuzz.AddSlice, apifuzz.UpdateSlice:
			version = op.Slice.ResourceVersion
			incr.OnEndpointSliceUpdate(op.OldSlice, op.Slice)
		case apifuzz.DeleteSlice:
			incr.OnEndpointSliceDelete(op.Slice)
		case apifuzz.Checkout:
			incr.Checkout()
		}
	}
	got := incr.Checkout()
	if incr.Pending() {
		t.Fatalf("%s: Pending after Checkout", fam)
	}
	seenReports := map[report]bool{}
	for _, r := range reports {
		once := report{kind: r.kind, namespace: r.namespace, name: r.name, version: r.version}
		if seenReports[once] {
			t.Errorf("%s: %s %s/%s version %q reported more than once; again: %s: %s", fam, r.kind, r.namespace, r.name, r.version, r.reason, r.message)
		}
		seenReports[once] = true
		if r.kind != kindService && r.kind != kindEndpointSlice || !strings.HasPrefix(r.reason, "Invalid") && r.reason != ReasonDuplicatePort && r.reason != ReasonMissingServiceName {
			t.Errorf("%s: report with kind %q reason %q", fam, r.kind, r.reason)
		}
	}

	// A fresh tracker fed what survived, as after a restart.
	svcs, sls := apifuzz.Live(ops)
	reported := map[string]bool{} // "kind ns/name"
	fresh := NewTracker(TrackerOptions{IPFamily: fam, OnInvalid: func(kind, ns, name, _, _ string) {
		reported[kind+" "+ns+"/"+name] = true
	}})
	for _, s := range svcs {
		fresh.OnServiceAdd(s)
	}
	for _, s := range sls {
		fresh.OnEndpointSliceAdd(s)
	}
	want := fresh.Checkout()
	if !equalPortMaps(got.Services, want.Services) {
		t.Errorf("%s: services after the events differ from a fresh tracker's:\nincremental: %s\nfresh:       %s", fam, fmtServices(got.Services), fmtServices(want.Services))
	}
	if !equalEndpointMaps(got.Endpoints, want.Endpoints) {
		t.Errorf("%s: endpoints after the events differ from a fresh tracker's:\nincremental: %v\nfresh:       %v", fam, got.Endpoints, want.Endpoints)
	}
	checkSnapshot(t, fam, want)
	checkNothingSilentlyDropped(t, fam, want, svcs, sls, reported)

	// An informer resync: the same versions again change and report nothing.
	resynced := 0
	fresh.opts.OnInvalid = func(kind, ns, name, reason, _ string) {
		t.Errorf("%s: resync reported %s %s/%s: %s", fam, kind, ns, name, reason)
	}
	for _, s := range svcs {
		if s.ResourceVersion != "" {
			fresh.OnServiceUpdate(s, s)
			resynced++
		}
	}
	for _, s := range sls {
		if s.ResourceVersion != "" {
			fresh.OnEndpointSliceUpdate(s, s)
			resynced++
		}
	}
	if fresh.Pending() {
		t.Errorf("%s: a resync of %d objects left changes pending", fam, resynced)
	}

	for name, sp := range want.Services {
		for _, node := range []NodeInfo{{}, {Name: "node-a", Zone: "zone-a"}, {Name: "node-b", Zone: "zone-b"}} {
			checkCategorized(t, name, want.Endpoints[name], sp, node)
		}
	}
}

func fmtServices(m ServiceMap) string {
	var parts []string
	for name, sp := range m {
		parts = append(parts, fmt.Sprintf("%s=%+v", name, *sp))
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

func ofFamily(a netip.Addr, fam v1.IPFamily) bool {
	return a.IsValid() && a.Is4() == (fam == v1.IPv4Protocol)
}

// checkSnapshot checks the model's own invariants.
func checkSnapshot(t *testing.T, fam v1.IPFamily, snap Snapshot) {
	t.Helper()
	for name, sp := range snap.Services {
		if sp.Name != name || !validPort(sp.Port) || !ofFamily(sp.ClusterIP, fam) ||
			(sp.NodePort != 0 && !validPort(sp.NodePort)) || (sp.HealthCheckNodePort != 0 && !validPort(sp.HealthCheckNodePort)) {
			t.Errorf("%s: bad service port %s: %+v", fam, name, *sp)
		}
		if _, ok := knownProtocol(sp.Protocol); !ok || sp.Protocol == "" || sp.Protocol != name.Protocol {
			t.Errorf("%s: service port %s has protocol %q", fam, name, sp.Protocol)
		}
		for _, a := range slices.Concat(sp.ExternalIPs, sp.LoadBalancerIPs) {
			if !ofFamily(a, fam) {
				t.Errorf("%s: service port %s has address %s of the other family", fam, name, a)
			}
		}
		for _, p := range sp.LoadBalancerSourceRanges {
			if !ofFamily(p.Addr(), fam) || p != p.Masked() {
				t.Errorf("%s: service port %s has source range %s", fam, name, p)
			}
		}
	}
	for name, eps := range snap.Endpoints {
		if len(eps) == 0 {
			t.Errorf("%s: %s has an empty endpoint list", fam, name)
		}
		for i, ep := range eps {
			if !ofFamily(ep.IP, fam) || !validPort(ep.Port) {
				t.Errorf("%s: %s: bad endpoint %s", fam, name, ep)
			}
			if i > 0 && compareEndpoints(eps[i-1], ep) >= 0 {
				t.Errorf("%s: %s: endpoints not sorted or duplicated: %s then %s", fam, name, eps[i-1], ep)
			}
		}
	}
}

// checkNothingSilentlyDropped checks the objects against the model with an oracle that knows
// only what is plainly valid and plainly invalid.
func checkNothingSilentlyDropped(t *testing.T, fam v1.IPFamily, snap Snapshot, svcs []*v1.Service, sls []*discovery.EndpointSlice, reported map[string]bool) {
	t.Helper()
	for _, s := range svcs {
		if s.Spec.Type == v1.ServiceTypeExternalName || s.Labels[labelServiceProxyName] != "" {
			continue
		}
		if _, ok := s.Labels[labelServiceProxyName]; ok {
			continue
		}
		ips := s.Spec.ClusterIPs
		if len(ips) == 0 {
			ips = []string{s.Spec.ClusterIP}
		}
		ip, err := netip.ParseAddr(ips[0])
		if err != nil || ip.Zone() != "" || !ofFamily(ip.Unmap(), fam) {
			continue // not plainly programmable in this family
		}
		seen := map[ServicePortName]bool{}
		for _, p := range s.Spec.Ports {
			proto, known := knownProtocol(p.Protocol)
			name := ServicePortName{NamespacedName: nn(s.Namespace, s.Name), Port: p.Name, Protocol: proto}
			dup := seen[name]
			seen[name] = true
			switch {
			case known && validPort(p.Port) && !dup:
				if sp := snap.Services[name]; sp == nil || sp.Port != p.Port || sp.ClusterIP != ip.Unmap() {
					t.Errorf("%s: service %s/%s port %q %s/%d not in the model (%v)", fam, s.Namespace, s.Name, p.Name, p.Protocol, p.Port, sp)
				}
			case !known || !validPort(p.Port):
				if !reported["Service "+s.Namespace+"/"+s.Name] {
					t.Errorf("%s: service %s/%s port %q %s/%d skipped without a report", fam, s.Namespace, s.Name, p.Name, p.Protocol, p.Port)
				}
			}
		}
	}
	inModel := map[ServicePortName]map[netip.AddrPort]bool{}
	for name, eps := range snap.Endpoints {
		set := make(map[netip.AddrPort]bool, len(eps))
		for _, e := range eps {
			set[netip.AddrPortFrom(e.IP, uint16(e.Port))] = true
		}
		inModel[name] = set
	}
	for _, s := range sls {
		if string(s.AddressType) != string(fam) {
			continue
		}
		if _, ok := s.Labels[labelServiceProxyName]; ok {
			continue
		}
		if _, ok := s.Labels[labelHeadless]; ok {
			continue
		}
		key := "EndpointSlice " + s.Namespace + "/" + s.Name
		svc := s.Labels[discovery.LabelServiceName]
		if svc == "" {
			if !reported[key] {
				t.Errorf("%s: slice %s/%s without a service name ignored without a report", fam, s.Namespace, s.Name)
			}
			continue
		}
		var validPorts []ServicePortName
		var ports []int32
		for _, p := range s.Ports {
			var proto v1.Protocol
			if p.Protocol != nil {
				proto = *p.Protocol
			}
			proto, known := knownProtocol(proto)
			if !known || p.Port == nil || !validPort(*p.Port) {
				if !reported[key] {
					t.Errorf("%s: slice %s/%s: port %v skipped without a report", fam, s.Namespace, s.Name, p)
				}
				continue
			}
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			validPorts = append(validPorts, ServicePortName{NamespacedName: nn(s.Namespace, svc), Port: name, Protocol: proto})
			ports = append(ports, *p.Port)
		}
		for _, ep := range s.Endpoints {
			if len(ep.Addresses) == 0 {
				if !reported[key] {
					t.Errorf("%s: slice %s/%s: endpoint without an address skipped without a report", fam, s.Namespace, s.Name)
				}
				continue
			}
			a, err := netip.ParseAddr(ep.Addresses[0])
			switch {
			case err == nil && a.Zone() == "" && ofFamily(a.Unmap(), fam):
				for i, name := range validPorts {
					want := netip.AddrPortFrom(a.Unmap(), uint16(ports[i]))
					if !inModel[name][want] {
						t.Errorf("%s: slice %s/%s: endpoint %s of %s not in the model", fam, s.Namespace, s.Name, want, name)
					}
				}
			case err == nil && (a.Zone() != "" || !ofFamily(a.Unmap(), fam)), strings.IndexFunc(ep.Addresses[0], notIPChar) >= 0:
				if !reported[key] {
					t.Errorf("%s: slice %s/%s: endpoint %q skipped without a report", fam, s.Namespace, s.Name, ep.Addresses[0])
				}
			}
		}
	}
}

// notIPChar is a character no spelling of an IP address has.
func notIPChar(r rune) bool {
	ipChar := r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F' || r == '.' || r == ':'
	return !ipChar
}

// checkCategorized checks CategorizeEndpoints' output against its input.
func checkCategorized(t *testing.T, name ServicePortName, eps []Endpoint, sp *ServicePort, node NodeInfo) {
	t.Helper()
	c := CategorizeEndpoints(eps, sp, node)
	byAddr := make(map[netip.AddrPort]Endpoint, len(eps))
	for _, e := range eps {
		byAddr[netip.AddrPortFrom(e.IP, uint16(e.Port))] = e
	}
	for what, set := range map[string][]Endpoint{"cluster": c.Cluster, "local": c.Local, "allReachable": c.AllReachable} {
		for i, ep := range set {
			if e, ok := byAddr[netip.AddrPortFrom(ep.IP, uint16(ep.Port))]; !ok || !equalEndpoint(e, ep) {
				t.Errorf("%s on %q: %s endpoint %s is not one of the port's", name, node.Name, what, ep)
			}
			if i > 0 && compareEndpoints(set[i-1], ep) >= 0 {
				t.Errorf("%s on %q: %s endpoints not sorted: %s then %s", name, node.Name, what, set[i-1], ep)
			}
		}
	}
	for _, ep := range c.Local {
		if ep.NodeName != node.Name || node.Name == "" {
			t.Errorf("%s on %q: local endpoint %s is on node %q", name, node.Name, ep, ep.NodeName)
		}
	}
	if len(c.Cluster)+len(c.Local) > 0 && !c.HasAnyEndpoints {
		t.Errorf("%s on %q: endpoints picked but HasAnyEndpoints false", name, node.Name)
	}
}
