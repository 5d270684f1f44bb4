//go:build e2e

package e2e

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/kproxy/kproxy/e2e/harness"
)

// A UDP client that always sends from the same source port keeps its conntrack entry alive,
// so without cleanup it would stay pinned to an endpoint after that endpoint left the
// service (here the old endpoint still answers, so a missing cleanup shows as replies from
// it). The proxy deletes the stale entry and the client moves to the new endpoint.
func TestUDPConntrackCleanupMovesFixedPortClient(t *testing.T) {
	const ns = "udp-conntrack"
	ctx := setup(t, ns)
	client, first, second := cluster.Pod(1, 1), cluster.Pod(2, 1), cluster.Pod(1, 2)
	svc, err := cluster.CreateServiceWithEndpoints(ctx, ns, "echo", udpOnly, first)
	if err != nil {
		t.Fatal(err)
	}
	addr := clusterIPAddr(svc)
	opts := harness.RequestOptions{Timeout: time.Second, SrcPort: 40123}
	send := func() (harness.Reply, error) { return cluster.RequestWith(ctx, client.Name, harness.UDP, addr, opts) }

	// Wait for the service with kernel-chosen ports (a fixed-port datagram sent before the
	// rules exist would pin an un-NATed flow), then open the fixed-port flow.
	firstReply(ctx, t, client.Name, harness.UDP, addr, programTimeout)
	if r, err := send(); err != nil || r.Name != first.Name {
		t.Fatalf("fixed-port datagram: reply %q, err %v; want %s", r.Raw, err, first.Name)
	}
	ports := []discoveryv1.EndpointPort{harness.EndpointPort("udp", corev1.ProtocolUDP)}
	t0 := time.Now()
	if err := cluster.ApplyEndpointSlice(ctx, harness.EndpointSlice(ns, "echo", ports, harness.Endpoints(second))); err != nil {
		t.Fatal(err)
	}
	// Keep the flow alive while waiting: one datagram every 200 ms from the same port.
	var last harness.Reply
	for time.Since(t0) < 10*time.Second {
		r, err := send()
		if err == nil {
			last = r
			if r.Name == second.Name {
				t.Logf("%s:%d → %s moved from %s to %s %v after the endpoint change",
					client.Name, opts.SrcPort, addr, first.Name, second.Name, time.Since(t0).Round(time.Millisecond))
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("fixed-port UDP client still answered by %q 10 s after its endpoint left the service (stale conntrack entry)", last.Name)
}
