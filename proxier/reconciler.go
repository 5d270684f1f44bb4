package proxier

import (
	"context"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/kproxy/kproxy/endpoints"
)

// Source is where the reconciler gets the desired state: the endpoints tracker.
type Source interface {
	Checkout() endpoints.Snapshot
}

// ReconcilerOptions configures a Reconciler.
type ReconcilerOptions struct {
	// FullSyncInterval is the longest time between two full syncs (upstream: one hour).
	FullSyncInterval time.Duration
	Clock            clock.PassiveClock
	// Family is the IP family this reconciler's backend programs (default IPv4).
	Family v1.IPFamily
	// After a successful Apply, the mode-independent steps (see aftersync.go); each is
	// optional.
	After AfterSync
	// ReleaseMemory, when set, runs after each successful full sync (kproxy:
	// debug.FreeOSMemory). A full sync renders every service and reads the kernel's whole
	// state, the process's high-water mark; without it the Go runtime hands the freed heap
	// back to the kernel over minutes, and the resident size stays near that mark.
	ReleaseMemory func()
}

// Reconciler turns the tracker's state into kernel state through a Backend. Sync is the
// function the Runner calls; it is not safe to call concurrently with itself.
type Reconciler struct {
	source  Source
	backend Backend
	metrics *FamilyMetrics
	health  *Health
	opts    ReconcilerOptions

	mu   sync.Mutex
	node endpoints.NodeInfo

	needFull bool
	lastFull time.Time
	// carried holds changes checked out for a sync that failed, so the next sync (which is
	// full anyway) still reports them and their trigger times.
	carried endpoints.Snapshot
}

// NewReconciler builds a reconciler; the first Sync is always full.
func NewReconciler(src Source, b Backend, m *FamilyMetrics, h *Health, opts ReconcilerOptions) *Reconciler {
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Family == "" {
		opts.Family = v1.IPv4Protocol
	}
	if opts.FullSyncInterval <= 0 {
		opts.FullSyncInterval = time.Hour
	}
	return &Reconciler{source: src, backend: b, metrics: m, health: h, opts: opts, needFull: true}
}

// SetNode updates what the reconciler knows of its node (name, zone). It forces a full sync,
// since a zone change can change every service's endpoints.
func (r *Reconciler) SetNode(n endpoints.NodeInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.node != n {
		r.node = n
		r.needFull = true
	}
}

// Sync checks out the tracker's state and applies it. A failure makes the next sync full.
func (r *Reconciler) Sync(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	r.mu.Lock()
	node := r.node
	full := r.needFull
	r.mu.Unlock()

	start := r.opts.Clock.Now()
	if !full && start.Sub(r.lastFull) >= r.opts.FullSyncInterval {
		full = true
	}
	snap := r.source.Checkout()
	snap = mergeCarried(r.carried, snap)
	r.metrics.ServiceChanges.Add(float64(snap.ServiceChanges))
	r.metrics.EndpointChanges.Add(float64(snap.EndpointChanges))

	err := r.backend.Apply(ctx, snap, node, full)
	end := r.opts.Clock.Now()
	r.metrics.ObserveSync(end.Sub(start), full, err, end)
	if err != nil {
		r.mu.Lock()
		r.needFull = true
		r.mu.Unlock()
		r.carried = snap
		r.carried.ServiceChanges, r.carried.EndpointChanges = 0, 0
		return err
	}
	r.carried = endpoints.Snapshot{}
	if full {
		r.mu.Lock()
		r.needFull = false
		r.mu.Unlock()
		r.lastFull = start
	}
	for _, times := range snap.TriggerTimes {
		for _, t := range times {
			if lat := end.Sub(t); lat >= 0 {
				r.metrics.NetworkProgramming.Observe(lat.Seconds())
			}
		}
	}
	r.health.Updated(string(r.opts.Family))
	r.afterSync(ctx, snap, node)
	if full && r.opts.ReleaseMemory != nil {
		r.opts.ReleaseMemory()
	}
	logger.V(2).Info("Synced proxy rules", "mode", r.backend.Mode(), "ipFamily", r.opts.Family, "full", full,
		"services", len(snap.Services), "changedServices", len(snap.Changed), "elapsed", end.Sub(start))
	return nil
}

// mergeCarried folds the changes of a failed sync into the next snapshot.
func mergeCarried(old, cur endpoints.Snapshot) endpoints.Snapshot {
	if len(old.Changed) == 0 && len(old.TriggerTimes) == 0 {
		return cur
	}
	if cur.Changed == nil {
		cur.Changed = map[types.NamespacedName]struct{}{}
	}
	for k := range old.Changed {
		cur.Changed[k] = struct{}{}
	}
	if cur.TriggerTimes == nil {
		cur.TriggerTimes = map[types.NamespacedName][]time.Time{}
	}
	for k, v := range old.TriggerTimes {
		cur.TriggerTimes[k] = append(v, cur.TriggerTimes[k]...)
	}
	return cur
}
