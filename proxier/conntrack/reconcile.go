package conntrack

import (
	"context"
	"fmt"

	v1 "k8s.io/api/core/v1"
)

// Reconcile deletes the stale UDP and SCTP entries of one address family: it lists them,
// keeps those StaleFlows(t, ...) selects and deletes exactly those. It returns the number
// deleted (for kubeproxy_conntrack_reconciler_deleted_entries_total), also on error. Call it
// after each successful sync, with the Targets of what that sync programmed.
//
// With no UDP or SCTP service port in t, no flow can be stale (StaleFlows judges only flows to
// t's frontends and node ports), so the kernel's table is not dumped at all: a TCP-only node
// pays nothing per sync.
func Reconcile(ctx context.Context, ct Interface, family v1.IPFamily, t Targets) (int, error) {
	if len(t.Frontends) == 0 && len(t.NodePorts) == 0 {
		return 0, nil
	}
	flows, err := ct.List(ctx, family, cleanedProtocols...)
	if err != nil {
		return 0, fmt.Errorf("reconcile conntrack: %w", err)
	}
	stale := StaleFlows(t, flows)
	if len(stale) == 0 {
		return 0, nil
	}
	n, err := ct.Delete(ctx, stale)
	if err != nil {
		return n, fmt.Errorf("reconcile conntrack: delete %d stale entries: %w", len(stale), err)
	}
	return n, nil
}
