package proxier

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	networking "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// watchServiceCIDRs starts the ServiceCIDR informer, which hands f.OnServiceCIDRs the union
// of every object's ranges after each change. When kproxy may not list ServiceCIDRs (no RBAC
// rule, an apiserver without the API), it says so and watches nothing: the backends then
// keep their per-ClusterIP rules (iptables mode) or their other ownership evidence (IPVS
// mode). The returned function reports the first list delivered (nil when nothing is
// watched).
func (f *Feed) watchServiceCIDRs(ctx context.Context) (cache.InformerSynced, error) {
	logger := klog.FromContext(ctx)
	if _, err := f.Client.NetworkingV1().ServiceCIDRs().List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
		logger.Error(err, "Cannot list ServiceCIDRs: going on without the service ranges (iptables mode rejects traffic to unused ClusterIP ports with one rule per ClusterIP, not per range; IPVS mode does not recognise a leftover virtual server off kube-ipvs0 as its own)",
			"toFix", "grant list and watch on servicecidrs.networking.k8s.io (deploy/rbac.yaml), or set --service-cluster-ip-range")
		if f.Report != nil {
			f.Report("Node", "", f.NodeName, "ServiceCIDRsUnavailable", "cannot list ServiceCIDRs: "+err.Error())
		}
		return nil, nil
	}
	factory := informers.NewSharedInformerFactoryWithOptions(f.Client, f.Resync, informers.WithTransform(Trim))
	informer := factory.Networking().V1().ServiceCIDRs().Informer()
	var last []netip.Prefix
	changed := func(any) {
		var objs []*networking.ServiceCIDR
		for _, o := range informer.GetStore().List() {
			if sc, ok := o.(*networking.ServiceCIDR); ok {
				objs = append(objs, sc)
			}
		}
		cidrs := ServiceCIDRRanges(ctx, objs)
		if last != nil && slices.Equal(cidrs, last) {
			return
		}
		last = cidrs
		logger.Info("Service CIDRs", "cidrs", cidrs)
		f.OnServiceCIDRs(cidrs)
		f.Request()
	}
	reg, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    changed,
		UpdateFunc: func(_, cur any) { changed(cur) },
		DeleteFunc: changed,
	})
	if err != nil {
		return nil, fmt.Errorf("add servicecidr handler: %w", err)
	}
	factory.Start(ctx.Done())
	return reg.HasSynced, nil
}

// ServiceCIDRRanges is the sorted union of the objects' spec.cidrs. A range that does not
// parse is logged and left out (the apiserver validates them; this is defence only).
func ServiceCIDRRanges(ctx context.Context, objs []*networking.ServiceCIDR) []netip.Prefix {
	out := []netip.Prefix{}
	for _, sc := range objs {
		for _, c := range sc.Spec.CIDRs {
			p, err := netip.ParsePrefix(c)
			if err != nil {
				klog.FromContext(ctx).Info("Ignoring a ServiceCIDR range that does not parse", "serviceCIDR", sc.Name, "cidr", c, "err", err)
				continue
			}
			out = append(out, p.Masked())
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(out)
}
