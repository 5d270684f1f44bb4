package healthcheck

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/types"
)

var (
	loopback = []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	svcA     = types.NamespacedName{Namespace: "ns", Name: "a"}
	svcB     = types.NamespacedName{Namespace: "ns", Name: "b"}
)

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return uint16(port)
}

// response is what a GET on a health-check port returned.
type response struct {
	Code   int
	Weight string
	Body   Status
}

var client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// get queries a health-check port on 127.0.0.1.
func get(t *testing.T, port uint16) (response, error) {
	t.Helper()
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		return response{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := response{Code: resp.StatusCode, Weight: resp.Header.Get("X-Load-Balancing-Endpoint-Weight")}
	if err := json.Unmarshal(data, &r.Body); err != nil {
		t.Fatalf("body %q: %v", data, err)
	}
	return r, nil
}

func mustGet(t *testing.T, port uint16) response {
	t.Helper()
	r, err := get(t, port)
	if err != nil {
		t.Fatalf("GET port %d: %v", port, err)
	}
	return r
}

// wantRefused checks that nothing listens on port any more.
func wantRefused(t *testing.T, port uint16) {
	t.Helper()
	_, err := get(t, port)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("GET port %d: got error %v, want connection refused", port, err)
	}
}

func status(name types.NamespacedName, n int, healthy bool) Status {
	var st Status
	st.Service.Namespace, st.Service.Name = name.Namespace, name.Name
	st.LocalEndpoints, st.ServiceProxyHealthy = n, healthy
	return st
}

func newTestServer(t *testing.T, opts Options) *Server {
	t.Helper()
	if opts.Addresses == nil {
		opts.Addresses = loopback
	}
	s := NewServer(opts)
	t.Cleanup(s.Close)
	return s
}

func TestAnswers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		counts  map[types.NamespacedName]int
		healthy bool
		want    response
	}{
		{
			name:    "local endpoints",
			counts:  map[types.NamespacedName]int{svcA: 2, svcB: 7},
			healthy: true,
			want:    response{Code: 200, Weight: "2", Body: status(svcA, 2, true)},
		},
		{
			name:    "no local endpoints",
			counts:  map[types.NamespacedName]int{svcB: 7},
			healthy: true,
			want:    response{Code: 503, Weight: "0", Body: status(svcA, 0, true)},
		},
		{
			name:    "zero local endpoints",
			counts:  map[types.NamespacedName]int{svcA: 0},
			healthy: true,
			want:    response{Code: 503, Weight: "0", Body: status(svcA, 0, true)},
		},
		{
			name:    "proxy unhealthy",
			counts:  map[types.NamespacedName]int{svcA: 3},
			healthy: false,
			want:    response{Code: 503, Weight: "3", Body: status(svcA, 3, false)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, Options{ProxyHealthy: func() bool { return tc.healthy }})
			port := freePort(t)
			if err := s.SyncServices(map[types.NamespacedName]uint16{svcA: port}); err != nil {
				t.Fatal(err)
			}
			s.SyncEndpoints(tc.counts)
			if diff := cmp.Diff(tc.want, mustGet(t, port)); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTransitions(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(true)
	s := newTestServer(t, Options{ProxyHealthy: healthy.Load})
	port := freePort(t)
	if err := s.SyncServices(map[types.NamespacedName]uint16{svcA: port}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		counts   map[types.NamespacedName]int
		unhealth bool
		wantCode int
	}{
		{counts: nil, wantCode: 503},
		{counts: map[types.NamespacedName]int{svcA: 1}, wantCode: 200},
		{counts: map[types.NamespacedName]int{svcA: 1}, unhealth: true, wantCode: 503},
		{counts: map[types.NamespacedName]int{svcA: 4}, wantCode: 200},
		{counts: map[types.NamespacedName]int{}, wantCode: 503},
		{counts: map[types.NamespacedName]int{svcA: 1}, wantCode: 200},
	}
	for i, st := range steps {
		s.SyncEndpoints(st.counts)
		healthy.Store(!st.unhealth)
		if got := mustGet(t, port); got.Code != st.wantCode || got.Body.LocalEndpoints != st.counts[svcA] {
			t.Errorf("step %d: got %d with %d endpoints, want %d with %d", i, got.Code, got.Body.LocalEndpoints, st.wantCode, st.counts[svcA])
		}
	}
}

func TestPortChangeAndRemoval(t *testing.T) {
	s := newTestServer(t, Options{})
	p1, p2, pb := freePort(t), freePort(t), freePort(t)
	s.SyncEndpoints(map[types.NamespacedName]int{svcA: 1, svcB: 2})

	if err := s.SyncServices(map[types.NamespacedName]uint16{svcA: p1, svcB: pb}); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, p1); got.Body.Service.Name != "a" || got.Code != 200 {
		t.Fatalf("port %d: got %+v", p1, got)
	}

	// The port changes: the old one closes, the new one answers, B is untouched.
	if err := s.SyncServices(map[types.NamespacedName]uint16{svcA: p2, svcB: pb}); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, p1)
	if got := mustGet(t, p2); got.Body.Service.Name != "a" || got.Code != 200 {
		t.Fatalf("port %d: got %+v", p2, got)
	}
	if got := mustGet(t, pb); got.Body.Service.Name != "b" {
		t.Fatalf("port %d: got %+v", pb, got)
	}

	// A is removed: its port closes.
	if err := s.SyncServices(map[types.NamespacedName]uint16{svcB: pb}); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, p2)
	if diff := cmp.Diff(map[types.NamespacedName]uint16{svcB: pb}, s.Ports()); diff != "" {
		t.Errorf("ports (-want +got):\n%s", diff)
	}

	// Everything removed.
	if err := s.SyncServices(nil); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, pb)
}

func TestPortMovesBetweenServices(t *testing.T) {
	s := newTestServer(t, Options{})
	port := freePort(t)
	s.SyncEndpoints(map[types.NamespacedName]int{svcA: 1, svcB: 2})
	if err := s.SyncServices(map[types.NamespacedName]uint16{svcA: port}); err != nil {
		t.Fatal(err)
	}
	// In one call A goes away and B takes its port: the close comes before the listen.
	if err := s.SyncServices(map[types.NamespacedName]uint16{svcB: port}); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, port); got.Body.Service.Name != "b" || got.Body.LocalEndpoints != 2 {
		t.Fatalf("got %+v, want service b with 2 endpoints", got)
	}
}

func TestBindConflict(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	busyPort := uint16(busy.Addr().(*net.TCPAddr).Port)
	free := freePort(t)

	s := newTestServer(t, Options{})
	s.SyncEndpoints(map[types.NamespacedName]int{svcA: 1, svcB: 1})
	want := map[types.NamespacedName]uint16{svcA: busyPort, svcB: free}

	for i, wantFirst := range []bool{true, false} {
		err := s.SyncServices(want)
		var se *SyncError
		if !errors.As(err, &se) {
			t.Fatalf("call %d: got error %v, want a *SyncError", i, err)
		}
		if len(se.Failed) != 1 || se.Failed[0].Service != svcA || se.Failed[0].Port != busyPort || se.Failed[0].First != wantFirst {
			t.Fatalf("call %d: got failures %+v, want only %s on port %d with First=%v", i, se.Failed, svcA, busyPort, wantFirst)
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Errorf("call %d: error %v does not wrap EADDRINUSE", i, err)
		}
		if got := mustGet(t, free); got.Body.Service.Name != "b" || got.Code != 200 {
			t.Fatalf("call %d: service b: got %+v", i, got)
		}
	}

	// Once the port is free, the next sync opens it.
	if err := busy.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.SyncServices(want); err != nil {
		t.Fatalf("after freeing the port: %v", err)
	}
	if got := mustGet(t, busyPort); got.Body.Service.Name != "a" || got.Code != 200 {
		t.Fatalf("service a: got %+v", got)
	}
}

func TestSecondAddressFailsClosesFirst(t *testing.T) {
	// Two addresses, the second of which cannot be bound (port busy there): nothing stays
	// open on the first, so the port is free for a retry or another owner.
	busy, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("127.0.0.2 not usable: %v", err)
	}
	defer func() { _ = busy.Close() }()
	port := uint16(busy.Addr().(*net.TCPAddr).Port)
	s := newTestServer(t, Options{Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")}})
	err = s.SyncServices(map[types.NamespacedName]uint16{svcA: port})
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("got error %v, want EADDRINUSE", err)
	}
	wantRefused(t, port)
}

func TestInvalidPort(t *testing.T) {
	s := newTestServer(t, Options{})
	err := s.SyncServices(map[types.NamespacedName]uint16{svcA: 0})
	if !errors.Is(err, ErrInvalidPort) {
		t.Fatalf("got %v, want ErrInvalidPort", err)
	}
	if len(s.Ports()) != 0 {
		t.Errorf("ports: got %v, want none", s.Ports())
	}
}

func TestCloseClosesEverything(t *testing.T) {
	s := NewServer(Options{Addresses: loopback})
	p1, p2 := freePort(t), freePort(t)
	if err := s.SyncServices(map[types.NamespacedName]uint16{svcA: p1, svcB: p2}); err != nil {
		t.Fatal(err)
	}
	mustGet(t, p1)
	s.Close()
	wantRefused(t, p1)
	wantRefused(t, p2)
}

func TestListenAddrs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		addrs []netip.Addr
		want  []string
	}{
		{name: "all", want: []string{":30000"}},
		{
			name:  "node port addresses",
			addrs: []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8:3::10")},
			want:  []string{"192.0.2.10:30000", "[2001:db8:3::10]:30000"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewServer(Options{Addresses: tc.addrs})
			if diff := cmp.Diff(tc.want, s.listenAddrs(30000)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestConcurrentSyncsAndRequests(t *testing.T) {
	s := newTestServer(t, Options{})
	port := freePort(t)
	if err := s.SyncServices(map[types.NamespacedName]uint16{svcA: port}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 200 {
			s.SyncEndpoints(map[types.NamespacedName]int{svcA: i % 3})
			_ = s.SyncServices(map[types.NamespacedName]uint16{svcA: port})
		}
	}()
	for range 20 {
		got := mustGet(t, port)
		if want := got.Body.LocalEndpoints > 0; (got.Code == 200) != want {
			t.Errorf("got %d with %d endpoints", got.Code, got.Body.LocalEndpoints)
		}
	}
	<-done
}
