//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/kproxy/kproxy/e2e/harness"
)

// rejectWithin bounds how long a rejected request may take: an ICMP reject or a RST answers in
// milliseconds, a drop shows as the client's 1 s timeout.
const rejectWithin = time.Second

// newService is a selector-less service of type typ with one TCP port 80 named "tcp" to the
// echo port; muts adjust it (policies, externalIPs, more ports, labels...).
func newService(ns, name string, typ corev1.ServiceType, muts ...func(*corev1.Service)) *corev1.Service {
	svc := &corev1.Service{}
	svc.Namespace, svc.Name = ns, name
	svc.Spec.Type = typ
	svc.Spec.Ports = []corev1.ServicePort{harness.ServicePort("tcp", corev1.ProtocolTCP, 80)}
	for _, m := range muts {
		m(svc)
	}
	return svc
}

// createService creates svc and, unless eps is nil, its slice (one slice port per service
// port, same name and protocol) with eps.
func createService(ctx context.Context, t *testing.T, svc *corev1.Service, eps []discoveryv1.Endpoint) *corev1.Service {
	t.Helper()
	out, err := cluster.CreateServiceObject(ctx, svc)
	if err != nil {
		t.Fatal(err)
	}
	if eps != nil {
		setEndpoints(ctx, t, out, eps)
	}
	return out
}

// setEndpoints replaces the slice of svc with eps.
func setEndpoints(ctx context.Context, t *testing.T, svc *corev1.Service, eps []discoveryv1.Endpoint) {
	t.Helper()
	var ports []discoveryv1.EndpointPort
	for _, p := range svc.Spec.Ports {
		ports = append(ports, harness.EndpointPort(p.Name, p.Protocol))
	}
	if err := cluster.ApplyEndpointSlice(ctx, harness.EndpointSlice(svc.Namespace, svc.Name, ports, eps)); err != nil {
		t.Fatal(err)
	}
}

// hostPort joins an address and a port.
func hostPort(ip string, port int32) string { return net.JoinHostPort(ip, strconv.Itoa(int(port))) }

// ext is the external client namespace.
func ext() string { return cluster.External.Name }

// expectOnly makes n requests from ns to addr and fails unless every one is answered by a
// name in want. It returns the replies.
func expectOnly(ctx context.Context, t *testing.T, from string, proto harness.Proto, addr string, want []string, n int) seen {
	t.Helper()
	got := seen{}
	for range n {
		r, err := cluster.Request(ctx, from, proto, addr, requestTimeout)
		if err != nil {
			t.Fatalf("%s %s from %s: %v (replies so far: [%s])", proto, addr, from, err, got)
		}
		if !slices.Contains(want, r.Name) {
			t.Fatalf("%s %s from %s: reply from %s, want only %v (replies so far: [%s])", proto, addr, from, r.Raw, want, got)
		}
		got[r.Name]++
	}
	return got
}

// failure is how a request that must not be answered fails.
type failure int

const (
	refused     failure = iota // connection refused (ICMP port unreachable or RST), at once
	dropped                    // no answer: the client times out
	notAnswered                // any failure: refused, unreachable or a timeout
)

func (f failure) String() string {
	return map[failure]string{refused: "refused", dropped: "dropped (timeout)", notAnswered: "not answered"}[f]
}

// check reports whether err and the time it took match f.
func (f failure) check(err error, took time.Duration) error {
	if err == nil {
		return errors.New("answered")
	}
	switch f {
	case refused:
		if !errors.Is(err, harness.ErrRefused) || took > rejectWithin {
			return fmt.Errorf("%w after %v, want connection refused within %v", err, took.Round(time.Millisecond), rejectWithin)
		}
	case dropped:
		if !errors.Is(err, harness.ErrTimeout) {
			return fmt.Errorf("%w after %v, want a timeout (dropped)", err, took.Round(time.Millisecond))
		}
	}
	return nil
}

// untilFails repeats a request until it fails the way f says (the proxy may need a sync to
// get there), and fails the test if that does not happen within timeout. It returns the last
// error and how long it took.
//
//nolint:staticcheck // ST1008: (error, duration) reads as "what failed, after how long" at every call site.
func untilFails(ctx context.Context, t *testing.T, from string, proto harness.Proto, addr string, o harness.RequestOptions, f failure, timeout time.Duration) (error, time.Duration) {
	t.Helper()
	var last error
	t0 := time.Now()
	for {
		s := time.Now()
		r, err := cluster.RequestWith(ctx, from, proto, addr, o)
		took := time.Since(s)
		if last = f.check(err, took); last == nil {
			return err, time.Since(t0)
		}
		if err == nil {
			last = fmt.Errorf("answered by %s", r.Raw)
		}
		if time.Since(t0) > timeout {
			t.Fatalf("%s %s from %s: want %s within %v; last: %v", proto, addr, from, f, timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// firstReplyWith waits for one reply, with request options (a source address).
func firstReplyWith(ctx context.Context, t *testing.T, from string, proto harness.Proto, addr string, o harness.RequestOptions, timeout time.Duration) harness.Reply {
	t.Helper()
	var r harness.Reply
	harness.Eventually(t, timeout, func() error {
		var err error
		r, err = cluster.RequestWith(ctx, from, proto, addr, o)
		return err
	})
	return r
}

var countersRE = regexp.MustCompile(`\[\d+:\d+\]`)

// iptablesSave returns iptables-save of node n without comments and counters, so that two
// dumps of the same rules compare equal.
func iptablesSave(ctx context.Context, t *testing.T, n *harness.Node, args ...string) string {
	t.Helper()
	out, err := harness.Exec(ctx, n.Name, append([]string{"iptables-save"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, countersRE.ReplaceAllString(l, "[0:0]"))
		}
	}
	return strings.Join(lines, "\n")
}

// rulesMentioning returns the lines of a dump that mention s.
func rulesMentioning(dump, s string) []string {
	var out []string
	for _, l := range strings.Split(dump, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}
