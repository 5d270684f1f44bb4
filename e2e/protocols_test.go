//go:build e2e

package e2e

import (
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/e2e/harness"
)

// One service with the same port number 80 for TCP, UDP and SCTP: TCP and UDP both reach
// both endpoints. SCTP: the node's nat table holds the DNAT for the SCTP port (kernel dump);
// SCTP traffic needs SCTP sockets, which this kernel and Go's net package do not have.
func TestProtocolsOnOnePort(t *testing.T) {
	const ns = "protocols"
	ctx := setup(t, ns)
	client, eps := cluster.Pod(1, 1), []*harness.Pod{cluster.Pod(1, 2), cluster.Pod(2, 1)}
	svc := createService(ctx, t, newService(ns, "echo", corev1.ServiceTypeClusterIP, func(s *corev1.Service) {
		s.Spec.Ports = append(s.Spec.Ports,
			harness.ServicePort("udp", corev1.ProtocolUDP, 80),
			harness.ServicePort("sctp", corev1.ProtocolSCTP, 80))
	}), harness.Endpoints(eps...))
	addr := clusterIPAddr(svc)
	for _, proto := range []harness.Proto{harness.TCP, harness.UDP} {
		t.Run(string(proto), func(t *testing.T) {
			got, took := untilAllSeen(ctx, t, client.Name, proto, addr, names(eps...), programTimeout)
			t.Logf("%s %s → %s: [%s] within %v", proto, client.Name, addr, got, took.Round(time.Millisecond))
		})
	}
	t.Run("sctp-rules", func(t *testing.T) {
		// -A KUBE-SERVICES -d <clusterIP>/32 -p sctp [-m comment ...] -m sctp --dport 80 -j KUBE-SVC-...
		var lines []string
		harness.Eventually(t, programTimeout, func() error {
			lines = nil
			for _, l := range rulesMentioning(iptablesSave(ctx, t, client.Node, "-t", "nat"), "-d "+svc.Spec.ClusterIP+"/32") {
				if strings.HasPrefix(l, "-A KUBE-SERVICES ") && strings.Contains(l, " -p sctp ") && strings.Contains(l, " --dport 80 ") {
					lines = append(lines, l)
				}
			}
			if len(lines) == 0 {
				return errors.New("no nat KUBE-SERVICES rule for sctp " + svc.Spec.ClusterIP + ":80")
			}
			return nil
		})
		t.Logf("%s nat: %s", client.Node.Name, strings.Join(lines, "\n"))
	})
	t.Run("sctp-traffic", func(t *testing.T) {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP)
		if err == nil {
			_ = unix.Close(fd)
			t.Skip("the kernel has SCTP sockets, but the echo binary (Go's net) has no SCTP: no SCTP traffic test")
		}
		t.Skipf("no SCTP traffic: socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP) = %v (kernel built without CONFIG_IP_SCTP; "+
			"netfilter's SCTP conntrack and match are built in, so the rules above load); Go's net has no SCTP either", err)
	})
}
