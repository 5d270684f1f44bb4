//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/e2e/harness"
)

// With --masquerade-all on node 1's proxy, pod → ClusterIP → pod is masqueraded too: a backend
// on node 2 sees node 1's IP (the source of the route to node 2), a backend on node 1 sees
// cni0's 100.64.1.1, instead of the client pod's IP. The proxy goes back to its usual flags at
// the end, and the pod's IP is kept again.
func TestMasqueradeAll(t *testing.T) {
	const ns = "masq-all"
	ctx := setup(t, ns)
	n1 := cluster.Nodes[0]
	client, local, remote := cluster.Pod(1, 1), cluster.Pod(1, 2), cluster.Pod(2, 1)
	localSvc, err := cluster.CreateServiceWithEndpoints(ctx, ns, "local", tcpOnly, local)
	if err != nil {
		t.Fatal(err)
	}
	remoteSvc, err := cluster.CreateServiceWithEndpoints(ctx, ns, "remote", tcpOnly, remote)
	if err != nil {
		t.Fatal(err)
	}
	// Before: the pod's IP is kept (this also waits for the programming).
	for _, svc := range []*corev1.Service{localSvc, remoteSvc} {
		r, _ := firstReply(ctx, t, client.Name, harness.TCP, clusterIPAddr(svc), programTimeout)
		if r.Client.Addr() != client.IP {
			t.Fatalf("before --masquerade-all: %s → %s: reply %q, want client=%s:*", client.Name, clusterIPAddr(svc), r.Raw, client.IP)
		}
	}
	restore := withProxyFlags(t, n1, "--masquerade-all")
	cni0 := n1.PodCIDR.Addr().Next()
	for _, tc := range []struct {
		svc     *corev1.Service
		backend *harness.Pod
		want    string
	}{
		{localSvc, local, cni0.String()},
		{remoteSvc, remote, cluster.SourceTowardPods(n1).String()},
	} {
		var r harness.Reply
		harness.Eventually(t, programTimeout, func() error {
			var err error
			if r, err = cluster.Request(ctx, client.Name, harness.TCP, clusterIPAddr(tc.svc), requestTimeout); err != nil {
				return err
			}
			if r.Name != tc.backend.Name || r.Client.Addr().String() != tc.want {
				return fmt.Errorf("reply %q, want name=%s client=%s:*", r.Raw, tc.backend.Name, tc.want)
			}
			return nil
		})
		t.Logf("--masquerade-all: %s → %s → %s: backend saw %s (masqueraded)", client.Name, clusterIPAddr(tc.svc), tc.backend.Name, r.Client)
	}
	for _, l := range rulesMentioning(iptablesSave(ctx, t, n1, "-t", "nat"), ns+"/remote:tcp cluster IP") {
		t.Logf("%s: %s", n1.Name, l)
	}
	// Back to the usual flags: the pod's IP is kept again.
	restore()
	r := waitClient(ctx, t, client.Name, clusterIPAddr(remoteSvc), client.IP.String())
	t.Logf("usual flags again: %s → %s: backend saw %s", client.Name, clusterIPAddr(remoteSvc), r.Client)
}

// --detect-local-mode NodeCIDR (the node's spec.podCIDR, 100.64.1.0/24 for node 1) and
// BridgeInterface (--pod-bridge-interface=cni0): pod → ClusterIP → pod on the other node keeps
// the pod's IP; node → ClusterIP → pod on the same node is masqueraded (the backend sees cni0's
// 100.64.1.1, not node 1's 192.0.2.11). Node 1's proxy runs with each mode in turn (a service
// created after the restart, so that the rules are the new proxy's), then with its usual flags.
func TestDetectLocalModes(t *testing.T) {
	const ns = "detect-local"
	ctx := setup(t, ns)
	n1 := cluster.Nodes[0]
	client, local, remote := cluster.Pod(1, 1), cluster.Pod(1, 2), cluster.Pod(2, 1)
	cni0 := n1.PodCIDR.Addr().Next()
	for _, mode := range []struct {
		name  string
		flags []string
		rule  string // what a nat rule of the service's cluster IP mentions
	}{
		{"NodeCIDR", []string{"--detect-local-mode=NodeCIDR"}, "! -s " + n1.PodCIDR.String()},
		{"BridgeInterface", []string{"--detect-local-mode=BridgeInterface", "--pod-bridge-interface=cni0"}, "! -i cni0"},
	} {
		t.Run(mode.name, func(t *testing.T) {
			withProxyFlags(t, n1, mode.flags...)
			suffix := strings.ToLower(mode.name)
			localSvc, err := cluster.CreateServiceWithEndpoints(ctx, ns, "local-"+suffix, tcpOnly, local)
			if err != nil {
				t.Fatal(err)
			}
			remoteSvc, err := cluster.CreateServiceWithEndpoints(ctx, ns, "remote-"+suffix, tcpOnly, remote)
			if err != nil {
				t.Fatal(err)
			}
			r := waitClient(ctx, t, client.Name, clusterIPAddr(remoteSvc), client.IP.String())
			if r.Name != remote.Name {
				t.Errorf("reply %q, want name=%s", r.Raw, remote.Name)
			}
			t.Logf("%s: pod %s → %s → %s: backend saw %s (kept)", mode.name, client.Name, clusterIPAddr(remoteSvc), remote.Name, r.Client)
			r = waitClient(ctx, t, n1.Name, clusterIPAddr(localSvc), cni0.String())
			if r.Name != local.Name {
				t.Errorf("reply %q, want name=%s", r.Raw, local.Name)
			}
			t.Logf("%s: node %s → %s → %s: backend saw %s (masqueraded)", mode.name, n1.Name, clusterIPAddr(localSvc), local.Name, r.Client)
			var found []string
			for _, l := range rulesMentioning(iptablesSave(ctx, t, n1, "-t", "nat"), "-d "+localSvc.Spec.ClusterIP+"/32") {
				if strings.Contains(l, mode.rule) {
					found = append(found, l)
				}
			}
			if len(found) == 0 {
				t.Errorf("%s: no nat rule for %s mentions %q", n1.Name, localSvc.Spec.ClusterIP, mode.rule)
			}
			t.Logf("%s: %s", n1.Name, strings.Join(found, "\n"))
		})
	}
}

// waitClient waits until a request from ns to addr is answered with the client address want
// seen by the backend, and returns that reply.
func waitClient(ctx context.Context, t *testing.T, from, addr, want string) harness.Reply {
	t.Helper()
	var r harness.Reply
	harness.Eventually(t, programTimeout, func() error {
		var err error
		if r, err = cluster.Request(ctx, from, harness.TCP, addr, requestTimeout); err != nil {
			return err
		}
		if r.Client.Addr().String() != want {
			return fmt.Errorf("%s → %s: reply %q, want client=%s:*", from, addr, r.Raw, want)
		}
		return nil
	})
	return r
}

// withProxyFlags restarts node n's proxy with extra flags and returns a function that restarts
// it with its usual flags; that function runs at the end of the test too, unless already called.
// Without a proxy it does nothing.
func withProxyFlags(t *testing.T, n *harness.Node, extra ...string) (restore func()) {
	t.Helper()
	if cluster.Opts.Proxy == harness.ProxyNone {
		return func() {}
	}
	if err := cluster.RestartProxy(t.Context(), n, extra...); err != nil {
		t.Fatalf("restart proxy on %s with %v: %v", n.Name, extra, err)
	}
	var once sync.Once
	restore = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := cluster.RestartProxy(ctx, n); err != nil {
				t.Errorf("restart proxy on %s with its usual flags: %v", n.Name, err)
			}
		})
	}
	t.Cleanup(restore)
	return restore
}
