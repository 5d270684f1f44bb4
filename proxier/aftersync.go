package proxier

import (
	"context"
	"errors"
	"net/netip"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/proxier/conntrack"
	"github.com/kproxy/kproxy/proxier/healthcheck"
)

// AfterSync holds the steps every mode needs after its rules are in place.
type AfterSync struct {
	// HealthCheck serves the healthCheckNodePorts of externalTrafficPolicy=Local services.
	HealthCheck *healthcheck.Server
	// Conntrack removes UDP/SCTP flows whose DNAT target is no longer a serving endpoint, so
	// a client with a fixed source port moves to a live endpoint.
	Conntrack        conntrack.Interface
	NodePortIPs      []netip.Addr // empty: flows DNATed on this node
	ConntrackDeleted interface{ Add(float64) }
	// Report emits a Warning event for a problem on a service (e.g. a health-check port that
	// cannot be bound); may be nil.
	Report func(kind, namespace, name, reason, message string)
}

func (r *Reconciler) afterSync(ctx context.Context, snap endpoints.Snapshot, node endpoints.NodeInfo) {
	a := r.opts.After
	logger := klog.FromContext(ctx)
	if a.HealthCheck != nil {
		ports := map[types.NamespacedName]uint16{}
		for _, sp := range snap.Services {
			if sp.ExternalPolicyLocal && sp.HealthCheckNodePort > 0 && sp.HealthCheckNodePort <= 65535 {
				ports[sp.Name.NamespacedName] = uint16(sp.HealthCheckNodePort)
			}
		}
		if err := a.HealthCheck.SyncServices(ports); err != nil {
			var se *healthcheck.SyncError
			if errors.As(err, &se) && a.Report != nil {
				for _, le := range se.Failed {
					if le.First {
						a.Report("Service", le.Service.Namespace, le.Service.Name, "FailedToStartServiceHealthcheck", le.Error())
					}
				}
			}
		}
		a.HealthCheck.SyncEndpoints(endpoints.LocalReadyEndpoints(snap.Endpoints, node.Name))
	}
	if a.Conntrack != nil {
		targets := conntrack.ComputeTargets(snap.Services, snap.Endpoints, r.opts.Family, a.NodePortIPs)
		n, err := conntrack.Reconcile(ctx, a.Conntrack, r.opts.Family, targets)
		if a.ConntrackDeleted != nil && n > 0 {
			a.ConntrackDeleted.Add(float64(n))
		}
		if err != nil {
			logger.Error(err, "Conntrack cleanup failed; it is retried at the next sync")
		} else if n > 0 {
			logger.V(2).Info("Deleted stale conntrack entries", "count", n)
		}
	}
}
