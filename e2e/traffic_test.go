//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/e2e/harness"
)

// requestTimeout bounds one echo client request.
const requestTimeout = time.Second

// clusterIPAddr is "clusterIP:port" of a service's first port.
func clusterIPAddr(svc *corev1.Service) string {
	return net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(int(svc.Spec.Ports[0].Port)))
}

// seen counts replies per backend name.
type seen map[string]int

func (s seen) String() string {
	var parts []string
	for name, n := range s {
		parts = append(parts, fmt.Sprintf("%s×%d", name, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// untilAllSeen makes requests from ns to addr until every name in want has answered, and
// fails on a reply from anyone not in want or also, or when that does not happen within
// timeout. It returns the replies and how long it took.
func untilAllSeen(ctx context.Context, t *testing.T, from string, proto harness.Proto, addr string, want []string, timeout time.Duration, also ...string) (seen, time.Duration) {
	t.Helper()
	got := seen{}
	var lastErr error
	t0 := time.Now()
	for time.Since(t0) < timeout {
		r, err := cluster.Request(ctx, from, proto, addr, requestTimeout)
		if err != nil {
			lastErr = err
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if !slices.Contains(want, r.Name) && !slices.Contains(also, r.Name) {
			t.Fatalf("%s %s from %s: reply from %s, want one of %v", proto, addr, from, r.Raw, append(want, also...))
		}
		got[r.Name]++
		if countIn(got, want) == len(want) {
			return got, time.Since(t0)
		}
	}
	t.Fatalf("%s %s from %s: after %v saw [%s], want all of %v (last error: %v)", proto, addr, from, timeout, got, want, lastErr)
	return nil, 0
}

// firstReply waits for one reply from ns to addr.
func firstReply(ctx context.Context, t *testing.T, from string, proto harness.Proto, addr string, timeout time.Duration) (harness.Reply, time.Duration) {
	t.Helper()
	var r harness.Reply
	took := harness.Eventually(t, timeout, func() error {
		var err error
		r, err = cluster.Request(ctx, from, proto, addr, requestTimeout)
		return err
	})
	return r, took
}

// countIn counts the names of want that got holds.
func countIn(got seen, want []string) int {
	n := 0
	for _, w := range want {
		if got[w] > 0 {
			n++
		}
	}
	return n
}

func names(pods ...*harness.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}

var (
	tcpOnly = []corev1.Protocol{corev1.ProtocolTCP}
	udpOnly = []corev1.Protocol{corev1.ProtocolUDP}
)
