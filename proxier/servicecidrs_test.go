package proxier

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	networking "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kproxy/kproxy/endpoints"
)

func serviceCIDR(name string, cidrs ...string) *networking.ServiceCIDR {
	return &networking.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: networking.ServiceCIDRSpec{CIDRs: cidrs}}
}

// cidrRecorder keeps every list of ranges the feed hands out.
type cidrRecorder struct {
	mu   sync.Mutex
	seen [][]netip.Prefix
}

func (r *cidrRecorder) set(c []netip.Prefix) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, c)
}

func (r *cidrRecorder) last() []netip.Prefix {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.seen) == 0 {
		return nil
	}
	return r.seen[len(r.seen)-1]
}

func prefixes(ss ...string) []netip.Prefix {
	out := []netip.Prefix{}
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// The feed hands out the union of every ServiceCIDR's ranges, sorted and without repeats,
// before Start returns and again after each change.
func TestFeedServiceCIDRs(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := fake.NewClientset(
		serviceCIDR("kubernetes", "100.100.0.0/16", "2001:db8:2::/112"),
		serviceCIDR("extra", "100.101.0.0/24", "100.100.0.0/16", "not-a-cidr"))
	rec := &cidrRecorder{}
	f := &Feed{Client: client, NodeName: "node-1", Tracker: &slowTracker{},
		OnNode: func(endpoints.NodeInfo) {}, Request: func() {}, OnServiceCIDRs: rec.set}
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	want := prefixes("100.100.0.0/16", "100.101.0.0/24", "2001:db8:2::/112")
	if got := rec.last(); !slices.Equal(got, want) {
		t.Fatalf("when Start returned: %v, want %v", got, want)
	}
	if err := client.NetworkingV1().ServiceCIDRs().Delete(ctx, "extra", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want = prefixes("100.100.0.0/16", "2001:db8:2::/112")
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Equal(rec.last(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("after deleting one ServiceCIDR: %v, want %v", rec.last(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Without the right to list ServiceCIDRs the feed still starts, reports it once, and hands
// out nothing (the backends keep their per-ClusterIP rules).
func TestFeedServiceCIDRsForbidden(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := fake.NewClientset(serviceCIDR("kubernetes", "100.100.0.0/16"))
	client.PrependReactor("list", "servicecidrs", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(networking.Resource("servicecidrs"), "", nil)
	})
	rec := &cidrRecorder{}
	var reasons []string
	f := &Feed{Client: client, NodeName: "node-1", Tracker: &slowTracker{},
		OnNode: func(endpoints.NodeInfo) {}, Request: func() {}, OnServiceCIDRs: rec.set,
		Report: func(_, _, _, reason, _ string) { reasons = append(reasons, reason) }}
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rec.last(); got != nil {
		t.Errorf("handed out %v without the right to list ServiceCIDRs", got)
	}
	if !slices.Equal(reasons, []string{"ServiceCIDRsUnavailable"}) {
		t.Errorf("reported %v, want [ServiceCIDRsUnavailable]", reasons)
	}
}
