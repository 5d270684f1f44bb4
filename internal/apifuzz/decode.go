package apifuzz

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// OpKind is what an Op does.
type OpKind int

// The events an input can produce, as informers deliver them.
const (
	AddService OpKind = iota
	UpdateService
	DeleteService
	AddSlice
	UpdateSlice
	DeleteSlice
	// Checkout asks the consumer to take a snapshot (a sync) at this point.
	Checkout
)

// Op is one event. Old is the previous version for updates (nil when there was none).
type Op struct {
	Kind       OpKind
	Service    *v1.Service
	OldService *v1.Service
	Slice      *discovery.EndpointSlice
	OldSlice   *discovery.EndpointSlice
}

// Limits of a decoded program, so that one input stays fast to run.
const (
	maxOps       = 24
	maxPorts     = 4
	maxEndpoints = 8
	// BulkEndpoints is the size of a "bulk" slice (more than the apiserver allows in one).
	BulkEndpoints = 2000
)

// Document is the JSON form of an input: objects added in order (services first).
type Document struct {
	Services []v1.Service              `json:"services"`
	Slices   []discovery.EndpointSlice `json:"slices"`
}

// Decode turns an input into events. It never fails: what cannot be read ends the program.
func Decode(data []byte) []Op {
	if len(data) > 0 && data[0] == '{' {
		var doc Document
		if err := json.Unmarshal(data, &doc); err != nil {
			return nil
		}
		// Versions as an apiserver would set them, so that a consumer can replay a resync.
		var ops []Op
		version := 0
		for i := range doc.Services {
			s := &doc.Services[i]
			if version++; s.ResourceVersion == "" {
				s.ResourceVersion = strconv.Itoa(version)
			}
			ops = append(ops, Op{Kind: AddService, Service: s})
		}
		for i := range doc.Slices {
			s := &doc.Slices[i]
			if version++; s.ResourceVersion == "" {
				s.ResourceVersion = strconv.Itoa(version)
			}
			ops = append(ops, Op{Kind: AddSlice, Slice: s})
		}
		return ops
	}
	d := &decoder{data: data, services: map[types.NamespacedName]*v1.Service{},
		slices: map[types.NamespacedName]*discovery.EndpointSlice{}}
	for len(d.ops) < maxOps && d.more() {
		d.op()
	}
	return d.ops
}

// Live returns the objects that exist after the events, in the order they were first
// written: what an informer's cache would list.
func Live(ops []Op) ([]*v1.Service, []*discovery.EndpointSlice) {
	svcs := map[types.NamespacedName]*v1.Service{}
	sls := map[types.NamespacedName]*discovery.EndpointSlice{}
	var svcOrder, sliceOrder []types.NamespacedName
	for _, op := range ops {
		switch op.Kind {
		case AddService, UpdateService:
			k := types.NamespacedName{Namespace: op.Service.Namespace, Name: op.Service.Name}
			if _, ok := svcs[k]; !ok {
				svcOrder = append(svcOrder, k)
			}
			svcs[k] = op.Service
		case DeleteService:
			delete(svcs, types.NamespacedName{Namespace: op.Service.Namespace, Name: op.Service.Name})
		case AddSlice, UpdateSlice:
			k := types.NamespacedName{Namespace: op.Slice.Namespace, Name: op.Slice.Name}
			if _, ok := sls[k]; !ok {
				sliceOrder = append(sliceOrder, k)
			}
			sls[k] = op.Slice
		case DeleteSlice:
			delete(sls, types.NamespacedName{Namespace: op.Slice.Namespace, Name: op.Slice.Name})
		}
	}
	var outSvcs []*v1.Service
	for _, k := range svcOrder {
		if s, ok := svcs[k]; ok {
			outSvcs = append(outSvcs, s)
			delete(svcs, k) // a key deleted and added again is listed once
		}
	}
	var outSlices []*discovery.EndpointSlice
	for _, k := range sliceOrder {
		if s, ok := sls[k]; ok {
			outSlices = append(outSlices, s)
			delete(sls, k)
		}
	}
	return outSvcs, outSlices
}

// decoder reads a program byte by byte; past the end every byte reads as 0.
type decoder struct {
	data     []byte
	pos      int
	ops      []Op
	version  int
	services map[types.NamespacedName]*v1.Service
	slices   map[types.NamespacedName]*discovery.EndpointSlice
}

func (d *decoder) more() bool { return d.pos < len(d.data) }

func (d *decoder) byte() byte {
	if d.pos >= len(d.data) {
		return 0
	}
	b := d.data[d.pos]
	d.pos++
	return b
}

// pick returns one of the values, chosen by the next byte.
func pick[T any](d *decoder, values ...T) T { return values[int(d.byte())%len(values)] }

func (d *decoder) bool() bool { return d.byte()&1 == 1 }

// upTo returns a number in [0, n].
func (d *decoder) upTo(n int) int { return int(d.byte()) % (n + 1) }

// raw32 reads 4 bytes.
func (d *decoder) raw32() uint32 {
	var b [4]byte
	for i := range b {
		b[i] = d.byte()
	}
	return binary.BigEndian.Uint32(b[:])
}

func (d *decoder) nextVersion() string {
	d.version++
	return strconv.Itoa(d.version)
}

var (
	namespaces   = []string{"default", "kube-system", "ns-1"}
	serviceNames = []string{"web", "dns", "db", "api", "Not_A.Name", ""}
	sliceNames   = []string{"web-abc", "web-def", "dns-1", "db-1", "api-1", "orphan-1"}
	portNames    = []string{"", "http", "https", "dns", "dns-tcp", "p1", "http"}
	protocols    = []v1.Protocol{"", v1.ProtocolTCP, v1.ProtocolUDP, v1.ProtocolSCTP, "ICMP", "tcp"}
	nodeNames    = []string{"", "node-a", "node-b", "node-c"}
	zones        = []string{"", "zone-a", "zone-b"}
)

// port32 is a port number: mostly valid ones, sometimes 0, 70000, -5 or anything.
func (d *decoder) port32() int32 {
	switch d.byte() % 8 {
	case 0:
		return 0
	case 1:
		return 70000
	case 2:
		return -5
	case 3:
		return 65535
	case 4:
		return int32(d.raw32())
	case 5:
		return 53
	case 6:
		return 8080
	}
	return 80
}

// ip returns an address string of the family wanted (mostly), or something that is not one.
func (d *decoder) ip(v6 bool) string {
	switch d.byte() % 12 {
	case 0:
		return "not-an-ip"
	case 1:
		return ""
	case 2:
		return "010.100.0.11" // leading zeros: kube-proxy parses it sloppily
	case 3:
		return "::ffff:100.64.1.5" // IPv4-mapped
	case 4:
		return "fe80::1%eth0"
	case 5:
		return "2001:db8:1::" + strconv.FormatUint(uint64(d.byte()), 16)
	case 6:
		b := d.raw32()
		return fmt.Sprintf("%d.%d.%d.%d", b>>24, b>>16&0xff, b>>8&0xff, b&0xff)
	}
	if v6 {
		return fmt.Sprintf("2001:db8:1::%x", d.byte())
	}
	return fmt.Sprintf("100.64.%d.%d", d.byte()%4, d.byte())
}

func (d *decoder) clusterIP(v6 bool) string {
	switch d.byte() % 8 {
	case 0:
		return v1.ClusterIPNone
	case 1:
		return ""
	case 2:
		return "not-an-ip"
	case 3:
		return "2001:db8:2::" + strconv.Itoa(int(d.byte()))
	}
	if v6 {
		return "2001:db8:2::" + strconv.Itoa(int(d.byte()))
	}
	return fmt.Sprintf("100.100.%d.%d", d.byte()%2, d.byte())
}

func (d *decoder) op() {
	switch d.byte() % 8 {
	case 0, 1:
		d.putService()
	case 2:
		if s := d.existingService(); s != nil {
			delete(d.services, types.NamespacedName{Namespace: s.Namespace, Name: s.Name})
			d.ops = append(d.ops, Op{Kind: DeleteService, Service: s})
		}
	case 3, 4, 5:
		d.putSlice()
	case 6:
		if s := d.existingSlice(); s != nil {
			delete(d.slices, types.NamespacedName{Namespace: s.Namespace, Name: s.Name})
			d.ops = append(d.ops, Op{Kind: DeleteSlice, Slice: s})
		}
	case 7:
		d.ops = append(d.ops, Op{Kind: Checkout})
	}
}

func (d *decoder) existingService() *v1.Service {
	for _, ns := range namespaces {
		for _, n := range serviceNames {
			if s := d.services[types.NamespacedName{Namespace: ns, Name: n}]; s != nil && d.bool() {
				return s
			}
		}
	}
	return nil
}

func (d *decoder) existingSlice() *discovery.EndpointSlice {
	for _, ns := range namespaces {
		for _, n := range sliceNames {
			if s := d.slices[types.NamespacedName{Namespace: ns, Name: n}]; s != nil && d.bool() {
				return s
			}
		}
	}
	return nil
}

func (d *decoder) putService() {
	ns, name := pick(d, namespaces...), pick(d, serviceNames...)
	key := types.NamespacedName{Namespace: ns, Name: name}
	old := d.services[key]
	svc := d.service(ns, name)
	// Sometimes the same version again: an informer resync.
	if old != nil && d.byte()%4 == 0 {
		svc = old.DeepCopy()
	}
	d.services[key] = svc
	kind := AddService
	if old != nil {
		kind = UpdateService
	}
	d.ops = append(d.ops, Op{Kind: kind, Service: svc, OldService: old})
}

func (d *decoder) service(ns, name string) *v1.Service {
	v6 := d.byte()%4 == 0
	svc := &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: d.nextVersion()}}
	svc.Spec.Type = pick(d, v1.ServiceTypeClusterIP, v1.ServiceTypeClusterIP, v1.ServiceTypeNodePort,
		v1.ServiceTypeLoadBalancer, v1.ServiceTypeExternalName, "")
	ip := d.clusterIP(v6)
	svc.Spec.ClusterIP = ip
	if ip != "" && d.byte()%4 != 0 {
		svc.Spec.ClusterIPs = []string{ip}
		if d.byte()%4 == 0 {
			svc.Spec.ClusterIPs = append(svc.Spec.ClusterIPs, d.clusterIP(!v6))
		}
		fam := v1.IPv4Protocol
		if v6 {
			fam = v1.IPv6Protocol
		}
		svc.Spec.IPFamilies = []v1.IPFamily{fam}
	}
	for range d.upTo(maxPorts) {
		p := v1.ServicePort{Name: pick(d, portNames...), Protocol: pick(d, protocols...), Port: d.port32()}
		if d.bool() {
			p.NodePort = pick(d, int32(30080), 0, 70000, int32(30000+int(d.byte())))
		}
		svc.Spec.Ports = append(svc.Spec.Ports, p)
	}
	flags := d.byte()
	if flags&1 != 0 {
		for range d.upTo(2) {
			svc.Spec.ExternalIPs = append(svc.Spec.ExternalIPs, d.ip(v6))
		}
	}
	if flags&2 != 0 {
		for range d.upTo(2) {
			ing := v1.LoadBalancerIngress{IP: d.ip(v6)}
			if d.bool() {
				ing.IPMode = ptr.To(pick(d, v1.LoadBalancerIPModeVIP, v1.LoadBalancerIPModeProxy))
			}
			svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, ing)
		}
		svc.Spec.LoadBalancerSourceRanges = append(svc.Spec.LoadBalancerSourceRanges,
			pick(d, "198.51.100.0/24", " 198.51.100.10/32 ", "bad", "2001:db8::/64", "10.0.0.1/8"))
	}
	if flags&4 != 0 {
		svc.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
		svc.Spec.HealthCheckNodePort = pick(d, int32(30100), 0, 70000)
	}
	if flags&8 != 0 {
		svc.Spec.InternalTrafficPolicy = ptr.To(v1.ServiceInternalTrafficPolicyLocal)
	}
	if flags&16 != 0 {
		svc.Spec.SessionAffinity = v1.ServiceAffinityClientIP
		if d.bool() {
			svc.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{
				TimeoutSeconds: ptr.To(pick(d, int32(10), 0, -1, 86401, 86400))}}
		}
	}
	if flags&32 != 0 {
		svc.Spec.TrafficDistribution = ptr.To(pick(d, v1.ServiceTrafficDistributionPreferClose, "PreferSameNode", "Bogus"))
	}
	if flags&64 != 0 {
		svc.Labels = map[string]string{"service.kubernetes.io/service-proxy-name": "other"}
	}
	return svc
}

func (d *decoder) putSlice() {
	ns, name := pick(d, namespaces...), pick(d, sliceNames...)
	key := types.NamespacedName{Namespace: ns, Name: name}
	old := d.slices[key]
	s := d.slice(ns, name)
	if old != nil && d.byte()%4 == 0 {
		s = old.DeepCopy()
	}
	d.slices[key] = s
	kind := AddSlice
	if old != nil {
		kind = UpdateSlice
	}
	d.ops = append(d.ops, Op{Kind: kind, Slice: s, OldSlice: old})
}

func (d *decoder) slice(ns, name string) *discovery.EndpointSlice {
	s := &discovery.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
		ResourceVersion: d.nextVersion(), Labels: map[string]string{}}}
	switch d.byte() % 8 {
	case 0: // no service-name label
	case 1:
		s.Labels[discovery.LabelServiceName] = "ghost"
	default:
		s.Labels[discovery.LabelServiceName] = pick(d, serviceNames...)
	}
	if d.byte()%16 == 0 {
		s.Labels[v1.IsHeadlessService] = ""
	}
	s.AddressType = pick(d, discovery.AddressTypeIPv4, discovery.AddressTypeIPv4, discovery.AddressTypeIPv6,
		discovery.AddressTypeFQDN, "")
	v6 := s.AddressType == discovery.AddressTypeIPv6
	for range d.upTo(maxPorts) {
		p := discovery.EndpointPort{}
		if d.byte()%4 != 0 {
			p.Name = ptr.To(pick(d, portNames...))
		}
		if d.byte()%4 != 0 {
			p.Protocol = ptr.To(pick(d, protocols...))
		}
		if d.byte()%8 != 0 {
			p.Port = ptr.To(d.port32())
		}
		s.Ports = append(s.Ports, p)
	}
	n := d.upTo(maxEndpoints)
	bulk := d.byte() == 0xb5 // a rare slice of 2,000 endpoints
	if bulk {
		n = BulkEndpoints
	}
	for i := range n {
		var ep discovery.Endpoint
		if bulk {
			ep.Addresses = []string{fmt.Sprintf("100.64.%d.%d", 100+i/250, i%250+1)}
			if v6 {
				ep.Addresses = []string{fmt.Sprintf("2001:db8:1::%x", i+1)}
			}
		} else {
			for range d.upTo(2) {
				ep.Addresses = append(ep.Addresses, d.ip(v6))
			}
			c := d.byte()
			tri := func(bit byte) *bool {
				switch c >> bit & 3 {
				case 0:
					return nil
				case 1:
					return ptr.To(false)
				}
				return ptr.To(true)
			}
			ep.Conditions = discovery.EndpointConditions{Ready: tri(0), Serving: tri(2), Terminating: tri(4)}
			if nn := pick(d, nodeNames...); nn != "" {
				ep.NodeName = ptr.To(nn)
			}
			if z := pick(d, zones...); z != "" {
				ep.Zone = ptr.To(z)
			}
			if d.byte()%4 == 0 {
				ep.Hints = &discovery.EndpointHints{ForZones: []discovery.ForZone{{Name: pick(d, zones...)}}}
				if d.bool() {
					ep.Hints.ForNodes = []discovery.ForNode{{Name: pick(d, nodeNames...)}}
				}
			}
		}
		s.Endpoints = append(s.Endpoints, ep)
	}
	if d.bool() {
		s.Annotations = map[string]string{v1.EndpointsLastChangeTriggerTime: pick(d,
			time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Format(time.RFC3339Nano), "yesterday")}
	}
	return s
}
