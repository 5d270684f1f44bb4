package proxier

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/endpoints"
)

// Label names kube-proxy filters on.
const (
	LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"
	LabelHeadless         = "service.kubernetes.io/headless"
	LabelZone             = "topology.kubernetes.io/zone"
)

// Tracker is what the informers feed.
type Tracker interface {
	OnServiceAdd(*v1.Service)
	OnServiceUpdate(old, cur *v1.Service)
	OnServiceDelete(*v1.Service)
	OnEndpointSliceAdd(*discovery.EndpointSlice)
	OnEndpointSliceUpdate(old, cur *discovery.EndpointSlice)
	OnEndpointSliceDelete(*discovery.EndpointSlice)
}

// Feed wires Services and EndpointSlices to a tracker, and the node's Node object to the
// reconciler's node info and the health's node eligibility, and requests a sync on every
// change.
type Feed struct {
	Client   kubernetes.Interface
	NodeName string
	// Resync is the resync period of the Node and ServiceCIDR informers
	// (--config-sync-period). Services and EndpointSlices are not resynced: the tracker
	// holds them (objectStore).
	Resync  time.Duration
	Tracker Tracker
	// OnNode receives this node's name and zone on every change of its Node object.
	OnNode func(endpoints.NodeInfo)
	// OnServiceCIDRs, when set, receives the service ranges of every ServiceCIDR object
	// (networking.k8s.io/v1), sorted and without repeats, on start and on every change. nil
	// watches no ServiceCIDRs (--service-cluster-ip-range names them).
	OnServiceCIDRs func([]netip.Prefix)
	// Report receives a problem with an API object (see Reporter); nil logs only.
	Report  func(kind, namespace, name, reason, message string)
	Health  *Health
	Request func()
}

// Trackers fans the informers' events out to one tracker per IP family.
type Trackers []Tracker

func (ts Trackers) OnServiceAdd(s *v1.Service) {
	for _, t := range ts {
		t.OnServiceAdd(s)
	}
}

func (ts Trackers) OnServiceUpdate(old, cur *v1.Service) {
	for _, t := range ts {
		t.OnServiceUpdate(old, cur)
	}
}

func (ts Trackers) OnServiceDelete(s *v1.Service) {
	for _, t := range ts {
		t.OnServiceDelete(s)
	}
}

func (ts Trackers) OnEndpointSliceAdd(s *discovery.EndpointSlice) {
	for _, t := range ts {
		t.OnEndpointSliceAdd(s)
	}
}

func (ts Trackers) OnEndpointSliceUpdate(old, cur *discovery.EndpointSlice) {
	for _, t := range ts {
		t.OnEndpointSliceUpdate(old, cur)
	}
}

func (ts Trackers) OnEndpointSliceDelete(s *discovery.EndpointSlice) {
	for _, t := range ts {
		t.OnEndpointSliceDelete(s)
	}
}

// Start starts the informers and waits for their caches, returning an error if ctx ends
// first. The informers run until ctx is cancelled.
func (f *Feed) Start(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	noProxyName, err := labels.NewRequirement(LabelServiceProxyName, selection.DoesNotExist, nil)
	if err != nil {
		return err
	}
	noHeadless, err := labels.NewRequirement(LabelHeadless, selection.DoesNotExist, nil)
	if err != nil {
		return err
	}
	selector := labels.NewSelector().Add(*noProxyName, *noHeadless).String()
	nodeFactory := informers.NewSharedInformerFactoryWithOptions(f.Client, f.Resync, informers.WithTransform(Trim),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", f.NodeName).String()
		}))

	// Services and EndpointSlices go straight from a Reflector to the tracker (objectStore):
	// no informer cache keeps a second copy of them.
	services := newObjectStore("Service", func() *v1.Service { return &v1.Service{} }, storeHandlers[*v1.Service]{
		add: f.Tracker.OnServiceAdd, update: f.Tracker.OnServiceUpdate, remove: f.Tracker.OnServiceDelete, changed: f.Request})
	slices := newObjectStore("EndpointSlice", func() *discovery.EndpointSlice { return &discovery.EndpointSlice{} }, storeHandlers[*discovery.EndpointSlice]{
		add: f.Tracker.OnEndpointSliceAdd, update: f.Tracker.OnEndpointSliceUpdate, remove: f.Tracker.OnEndpointSliceDelete, changed: f.Request})
	withSelector := func(o metav1.ListOptions) metav1.ListOptions {
		o.LabelSelector = selector
		return o
	}
	core, disc := f.Client.CoreV1(), f.Client.DiscoveryV1()
	runReflector(ctx, "services", &v1.Service{}, f.Client, services,
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return core.Services(metav1.NamespaceAll).List(ctx, withSelector(o))
		},
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return core.Services(metav1.NamespaceAll).Watch(ctx, withSelector(o))
		})
	runReflector(ctx, "endpointslices", &discovery.EndpointSlice{}, f.Client, slices,
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return disc.EndpointSlices(metav1.NamespaceAll).List(ctx, withSelector(o))
		},
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return disc.EndpointSlices(metav1.NamespaceAll).Watch(ctx, withSelector(o))
		})
	nodeInformer := nodeFactory.Core().V1().Nodes().Informer()
	nodeReg, err := nodeInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { f.onNode(obj) },
		UpdateFunc: func(_, cur any) { f.onNode(cur) },
		DeleteFunc: func(any) {
			f.Health.SetNodeEligible(false)
		},
	})
	if err != nil {
		return fmt.Errorf("add node handler: %w", err)
	}

	nodeFactory.Start(ctx.Done())
	start := time.Now()
	// Every item of the initial lists delivered: the first (full) sync must not see part of
	// the services and delete the chains of the others until the next sync. (The node
	// handler's HasSynced, not its informer's, which is true once its cache holds the list.)
	synced := []cache.InformerSynced{services.HasSynced, slices.HasSynced, nodeReg.HasSynced}
	if f.OnServiceCIDRs != nil {
		cidrSynced, err := f.watchServiceCIDRs(ctx)
		if err != nil {
			return err
		}
		if cidrSynced != nil {
			synced = append(synced, cidrSynced)
		}
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return fmt.Errorf("informer caches did not sync: %w", ctx.Err())
	}
	logger.Info("Informer caches synced", "elapsed", time.Since(start))
	return nil
}

func (f *Feed) onNode(obj any) {
	n, ok := obj.(*v1.Node)
	if !ok || n.Name != f.NodeName {
		return
	}
	f.Health.SetNodeEligible(nodeEligible(n))
	f.OnNode(endpoints.NodeInfo{Name: n.Name, Zone: n.Labels[LabelZone]})
	f.Request()
}

// toBeDeletedTaint is the cluster autoscaler's taint on a node it is about to delete.
const toBeDeletedTaint = "ToBeDeletedByClusterAutoscaler"

// nodeEligible is false for a node that is being deleted or that the cluster autoscaler is
// about to delete, so load balancers stop sending it new connections (as kube-proxy).
func nodeEligible(n *v1.Node) bool {
	if n.DeletionTimestamp != nil {
		return false
	}
	for _, t := range n.Spec.Taints {
		if t.Key == toBeDeletedTaint {
			return false
		}
	}
	return true
}
