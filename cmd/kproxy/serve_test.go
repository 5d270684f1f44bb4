package main

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
)

func TestIPFamilies(t *testing.T) {
	node := func(addrs ...string) *v1.Node {
		n := &v1.Node{}
		for _, a := range addrs {
			n.Status.Addresses = append(n.Status.Addresses, v1.NodeAddress{Type: v1.NodeInternalIP, Address: a})
		}
		return n
	}
	v4, v6 := netip.IPv4Unspecified(), netip.IPv6Unspecified()
	tests := []struct {
		name string
		bind netip.Addr
		node *v1.Node
		want []v1.IPFamily
	}{
		{"no node object", v4, nil, []v1.IPFamily{v1.IPv4Protocol}},
		{"single-stack IPv4", v4, node("192.0.2.11"), []v1.IPFamily{v1.IPv4Protocol}},
		{"dual-stack node", v4, node("192.0.2.11", "2001:db8:3::11"), []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol}},
		{"IPv6 primary", v6, node("192.0.2.11", "2001:db8:3::11"), []v1.IPFamily{v1.IPv6Protocol, v1.IPv4Protocol}},
		{"IPv6 single-stack", v6, node("2001:db8:3::11"), []v1.IPFamily{v1.IPv6Protocol}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, ipFamilies(tc.bind, tc.node)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestMetricsHandlerProfiling: /debug/pprof/ only with --profiling; /metrics either way.
func TestMetricsHandlerProfiling(t *testing.T) {
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte("metrics"))
	})
	for _, profiling := range []bool{false, true} {
		h := metricsHandler(inner, profiling)
		for path, want := range map[string]int{"/metrics": 200, "/debug/pprof/": map[bool]int{false: 404, true: 200}[profiling]} {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
			if rec.Code != want {
				t.Errorf("profiling=%v: GET %s = %d, want %d", profiling, path, rec.Code, want)
			}
		}
	}
}
