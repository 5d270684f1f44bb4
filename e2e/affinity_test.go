//go:build e2e

package e2e

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kproxy/kproxy/e2e/harness"
)

// Session affinity ClientIP with timeoutSeconds 2 (the API's minimum is 1): within the window
// every request goes to the same backend; after 3 s idle the client is forgotten and the next
// choice is random again (3 backends: it stays the same with probability 1/3). Up to 10
// rounds of idle-then-request: at least one choice after expiry must differ from the one
// before, and each round keeps one backend within the window.
func TestSessionAffinityTimeoutExpires(t *testing.T) {
	const ns, timeout, rounds = "affinity-timeout", 2, 10
	ctx := setup(t, ns)
	client := cluster.Pod(1, 1)
	eps := []*harness.Pod{cluster.Pod(1, 2), cluster.Pod(2, 1), cluster.Pod(2, 2)}
	svc := createService(ctx, t, newService(ns, "echo", corev1.ServiceTypeClusterIP, func(s *corev1.Service) {
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptrTo(int32(timeout))}}
	}), harness.Endpoints(eps...))
	if got := svc.Spec.SessionAffinityConfig.ClientIP.TimeoutSeconds; got == nil || *got != timeout {
		t.Fatalf("timeoutSeconds %v, want %d", got, timeout)
	}
	// The API's range is 1..86400 (server-side dry run).
	for _, tc := range []struct {
		seconds int32
		ok      bool
	}{{0, false}, {1, true}, {86400, true}, {86401, false}} {
		_, err := cluster.Client.CoreV1().Services(ns).Create(ctx, newService(ns, fmt.Sprintf("dry-%d", tc.seconds), corev1.ServiceTypeClusterIP, func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptrTo(tc.seconds)}}
		}), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if (err == nil) != tc.ok {
			t.Errorf("timeoutSeconds %d: dry-run create: %v, want accepted=%v", tc.seconds, err, tc.ok)
		}
	}
	addr := clusterIPAddr(svc)
	first, _ := firstReply(ctx, t, client.Name, harness.TCP, addr, programTimeout)
	prev := first.Name
	var choices []string
	for round := 1; round <= rounds; round++ {
		// Within the window: the same backend (each request also renews the window).
		got := expectOnly(ctx, t, client.Name, harness.TCP, addr, []string{prev}, 5)
		time.Sleep(timeout*time.Second + time.Second)
		r, err := cluster.Request(ctx, client.Name, harness.TCP, addr, requestTimeout)
		if err != nil {
			t.Fatalf("round %d after %ds idle: %v", round, timeout+1, err)
		}
		choices = append(choices, r.Name)
		t.Logf("round %d: within the window [%s]; after %ds idle: %s", round, got, timeout+1, r.Name)
		if r.Name != prev {
			t.Logf("affinity expired: %s before, %s after %ds idle (round %d, choices %v)", prev, r.Name, timeout+1, round, choices)
			// The new choice sticks in turn.
			expectOnly(ctx, t, client.Name, harness.TCP, addr, []string{r.Name}, 5)
			return
		}
		prev = r.Name
	}
	t.Fatalf("after %d rounds of %ds idle the backend never changed (%s each time): affinity does not expire (chance (1/3)^%d)", rounds, timeout+1, prev, rounds)
}
