package proxier

import (
	"context"

	"github.com/kproxy/kproxy/endpoints"
)

// Backend programs the kernel for one proxy mode (iptables, ipvs). The reconciler calls Apply
// from one goroutine only.
type Backend interface {
	// Mode is the name served on /proxyMode ("iptables", "ipvs").
	Mode() string
	// Apply brings the kernel to the state described by snap. When full is false the backend
	// may limit its work to snap.Changed; when true it must compare everything. After an
	// error the reconciler calls Apply with full=true on the next sync.
	Apply(ctx context.Context, snap endpoints.Snapshot, node endpoints.NodeInfo, full bool) error
}
