package endpoints

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

// TrackerOptions configures a Tracker.
type TrackerOptions struct {
	// IPFamily is the only family programmed: v1.IPv4Protocol (the default when empty) or
	// v1.IPv6Protocol.
	IPFamily v1.IPFamily
	// OnInvalid reports bad input from the API. kind is "Service" or "EndpointSlice"; reason
	// is one of the Reason* constants. It is called once for every object version with parts
	// skipped as invalid (not again on an informer resync): reason is the first problem's and
	// message lists them all (the first five, then a count). It runs on the goroutine that
	// delivered the event, without the tracker's lock held. May be nil.
	OnInvalid func(kind, namespace, name, reason, message string)
	// StartTime drops EndpointSlice trigger times that are not after it, so that the slices
	// listed at startup do not report their age as programming latency (upstream does the
	// same with its tracker's creation time). Zero keeps every trigger time.
	StartTime time.Time
}

// Tracker folds Service and EndpointSlice events into the current ServiceMap and
// EndpointsMap and remembers which services changed since the previous Checkout. It is safe
// for concurrent use: informers call the On* methods, the reconciler calls Checkout.
type Tracker struct {
	opts TrackerOptions

	mu       sync.Mutex
	services map[types.NamespacedName]*serviceEntry
	// sliceOwner maps a slice (namespace/name) to the service it is filed under, so an
	// update or delete finds the slice even if its service-name label changed.
	sliceOwner map[types.NamespacedName]types.NamespacedName
	// ports and endpoints are the flat current state, the union of every entry's.
	ports     ServiceMap
	endpoints EndpointsMap
	// changed holds the services whose current state differs from the last checkout.
	changed       map[types.NamespacedName]struct{}
	triggerTimes  map[types.NamespacedName][]time.Time
	serviceEvents int
	sliceEvents   int
}

// serviceEntry is everything the tracker knows about one service. Its ports and endpoints
// lists, and the values in them, are replaced on change, never modified: Checkout hands the
// values out and keeps the lists as the checked-out state. Lists sorted by port name, not
// maps: a service has one or two ports, and a Go map of one costs a group of eight slots (at
// 10,000 services, 14 MB for the two).
type serviceEntry struct {
	ports     []*ServicePort  // nil without a (programmable) Service
	slices    []namedSlice    // in name order (putSlice)
	endpoints []portEndpoints // merged from slices

	shownPorts     []*ServicePort // as of the last Checkout
	shownEndpoints []portEndpoints
}

// portEndpoints are the merged endpoints of one service port.
type portEndpoints struct {
	name      ServicePortName
	endpoints []Endpoint
}

func (e *serviceEntry) empty() bool {
	return len(e.ports) == 0 && len(e.slices) == 0 && len(e.shownPorts) == 0 && len(e.shownEndpoints) == 0
}

// NewTracker returns an empty tracker.
func NewTracker(opts TrackerOptions) *Tracker {
	if opts.IPFamily == "" {
		opts.IPFamily = v1.IPv4Protocol
	}
	return &Tracker{
		opts:         opts,
		services:     map[types.NamespacedName]*serviceEntry{},
		sliceOwner:   map[types.NamespacedName]types.NamespacedName{},
		ports:        ServiceMap{},
		endpoints:    EndpointsMap{},
		changed:      map[types.NamespacedName]struct{}{},
		triggerTimes: map[types.NamespacedName][]time.Time{},
	}
}

// OnServiceAdd folds in a new Service.
func (t *Tracker) OnServiceAdd(svc *v1.Service) { t.OnServiceUpdate(nil, svc) }

// OnServiceUpdate folds in a changed Service. Only cur matters (old is used when cur is nil):
// the tracker compares with what it holds, so a missed event costs nothing.
func (t *Tracker) OnServiceUpdate(old, cur *v1.Service) {
	if cur == nil {
		t.OnServiceDelete(old)
		return
	}
	ports, is := servicePorts(cur, t.opts.IPFamily)
	if old == nil || !sameVersion(old.ResourceVersion, cur.ResourceVersion) {
		t.report(kindService, cur.Namespace, cur.Name, is)
	}
	key := types.NamespacedName{Namespace: cur.Namespace, Name: cur.Name}

	t.mu.Lock()
	defer t.mu.Unlock()
	t.serviceEvents++
	t.setPorts(key, ports)
}

// OnServiceDelete folds in a deleted Service.
func (t *Tracker) OnServiceDelete(svc *v1.Service) {
	if svc == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.serviceEvents++
	t.setPorts(types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}, nil)
}

// OnEndpointSliceAdd folds in a new EndpointSlice.
func (t *Tracker) OnEndpointSliceAdd(s *discovery.EndpointSlice) { t.OnEndpointSliceUpdate(nil, s) }

// OnEndpointSliceUpdate folds in a changed EndpointSlice. Only cur matters (old is used when
// cur is nil): the slice is found by its namespace/name, so an update that moves it to another
// service or makes it ignored removes it from where the tracker had filed it.
func (t *Tracker) OnEndpointSliceUpdate(old, cur *discovery.EndpointSlice) {
	if cur == nil {
		t.OnEndpointSliceDelete(old)
		return
	}
	info, is := convertSlice(cur, t.opts.IPFamily)
	if old == nil || !sameVersion(old.ResourceVersion, cur.ResourceVersion) {
		t.report(kindEndpointSlice, cur.Namespace, cur.Name, is)
	}
	if info != nil && !info.TriggerTime.After(t.opts.StartTime) {
		info.TriggerTime = time.Time{}
	}
	key := types.NamespacedName{Namespace: cur.Namespace, Name: cur.Name}

	t.mu.Lock()
	defer t.mu.Unlock()
	t.sliceEvents++
	t.setSlice(key, info)
}

// OnEndpointSliceDelete folds in a deleted EndpointSlice.
func (t *Tracker) OnEndpointSliceDelete(s *discovery.EndpointSlice) {
	if s == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sliceEvents++
	t.setSlice(types.NamespacedName{Namespace: s.Namespace, Name: s.Name}, nil)
}

// Pending reports whether a Checkout would report any change (used to decide whether to
// sync).
func (t *Tracker) Pending() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.changed) > 0
}

// Checkout returns the full current state plus what changed since the previous Checkout, and
// resets the change set. The returned maps are the caller's; the values in them are shared and
// must not be modified.
func (t *Tracker) Checkout() Snapshot {
	t.mu.Lock()
	defer t.mu.Unlock()
	snap := Snapshot{
		Services:        maps.Clone(t.ports),
		Endpoints:       maps.Clone(t.endpoints),
		Changed:         make(map[types.NamespacedName]struct{}, len(t.changed)),
		TriggerTimes:    map[types.NamespacedName][]time.Time{},
		ServiceChanges:  t.serviceEvents,
		EndpointChanges: t.sliceEvents,
	}
	for key := range t.changed {
		snap.Changed[key] = struct{}{}
		if times := t.triggerTimes[key]; len(times) > 0 {
			snap.TriggerTimes[key] = times
		}
		e := t.services[key]
		e.shownPorts, e.shownEndpoints = e.ports, e.endpoints
		if e.empty() {
			delete(t.services, key)
		}
	}
	clear(t.changed)
	t.triggerTimes = map[types.NamespacedName][]time.Time{}
	t.serviceEvents, t.sliceEvents = 0, 0
	return snap
}

// maxReportedIssues bounds the problems one report lists (a slice may carry 1,000 bad
// addresses).
const maxReportedIssues = 5

// report hands the skipped parts of one object to OnInvalid, in one call: the first problem's
// reason, and a message listing the problems. One call per object version, so that a bad
// object is logged once and gets one event however many of its parts are bad. Called without
// the lock.
func (t *Tracker) report(kind, namespace, name string, is issues) {
	if t.opts.OnInvalid == nil || len(is) == 0 {
		return
	}
	t.opts.OnInvalid(kind, namespace, name, is[0].Reason, is.message())
}

// message joins the problems' messages: one as is, several as "N problems: a; b; ...".
func (is issues) message() string {
	if len(is) == 1 {
		return is[0].Message
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d problems: ", len(is))
	for i, x := range is {
		if i == maxReportedIssues {
			fmt.Fprintf(&b, "; and %d more", len(is)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(x.Message)
	}
	return b.String()
}

// sameVersion reports whether an update is an informer resync (the same object again), whose
// invalid parts were reported when that version first arrived.
func sameVersion(old, cur string) bool { return cur != "" && old == cur }

// entry returns the service's entry, creating it. Called with the lock held.
func (t *Tracker) entry(key types.NamespacedName) *serviceEntry {
	e := t.services[key]
	if e == nil {
		e = &serviceEntry{}
		t.services[key] = e
	}
	return e
}

// setPorts replaces a service's ports (nil: no Service). Called with the lock held.
func (t *Tracker) setPorts(key types.NamespacedName, ports map[ServicePortName]*ServicePort) {
	e := t.entry(key)
	list := portList(ports)
	if !slices.EqualFunc(e.ports, list, equalServicePort) {
		for _, p := range e.ports {
			delete(t.ports, p.Name)
		}
		for _, p := range list {
			t.ports[p.Name] = p
		}
		e.ports = list
	}
	t.refresh(key, e)
}

// setSlice files, refiles or (info nil) removes one slice. Called with the lock held.
func (t *Tracker) setSlice(sliceKey types.NamespacedName, info *sliceInfo) {
	if owner, ok := t.sliceOwner[sliceKey]; ok && (info == nil || owner != info.Service) {
		e := t.services[owner]
		e.slices = putSlice(e.slices, sliceKey.Name, nil)
		delete(t.sliceOwner, sliceKey)
		t.remerge(e)
		t.refresh(owner, e)
	}
	if info == nil {
		return
	}
	e := t.entry(info.Service)
	e.slices = putSlice(e.slices, sliceKey.Name, info)
	t.sliceOwner[sliceKey] = info.Service
	if t.remerge(e) && !info.TriggerTime.IsZero() {
		t.triggerTimes[info.Service] = append(t.triggerTimes[info.Service], info.TriggerTime)
	}
	t.refresh(info.Service, e)
}

// remerge rebuilds a service's endpoints from its slices and reports whether they changed.
func (t *Tracker) remerge(e *serviceEntry) bool {
	merged := endpointsList(mergeSlices(e.slices))
	if equalEndpointLists(e.endpoints, merged) {
		return false
	}
	for _, pe := range e.endpoints {
		delete(t.endpoints, pe.name)
	}
	for _, pe := range merged {
		t.endpoints[pe.name] = pe.endpoints
	}
	e.endpoints = merged
	return true
}

// refresh puts the service on the change set when it differs from what the last Checkout
// returned, and takes it off otherwise (a change reverted before Checkout). Entries with
// nothing left to report are dropped.
func (t *Tracker) refresh(key types.NamespacedName, e *serviceEntry) {
	if slices.EqualFunc(e.ports, e.shownPorts, equalServicePort) && equalEndpointLists(e.endpoints, e.shownEndpoints) {
		delete(t.changed, key)
		delete(t.triggerTimes, key)
	} else {
		t.changed[key] = struct{}{}
	}
	if e.empty() {
		delete(t.services, key)
	}
}
