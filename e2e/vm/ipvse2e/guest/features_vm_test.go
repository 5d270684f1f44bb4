//go:build vm

package guest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// udpCTPort is the fixed source port of the UDP conntrack scenario's client.
const udpCTPort = 40123

// featureScenarios are the service features beyond the basics, the same in every mode:
// loadBalancerSourceRanges, health-check node ports, externalTrafficPolicy=Local with a
// local endpoint, topology hints, SCTP, a dual-stack service (IPv6 ClusterIP and node
// port), and UDP conntrack cleanup (with the host's steps).
func (e *env) featureScenarios(t *testing.T) {
	t.Run("LoadBalancerSourceRanges/FromOutside", func(t *testing.T) {
		addr := e.svcs["lb-src"].LBIP + ":80"
		waitForAll(t, extNS, "tcp", addr, 30*time.Second, p1.ns, p2.ns)
		start := time.Now()
		r, err := requestFrom(extNS, "tcp", addr, from{ip: extIP2})
		switch {
		case err == nil:
			t.Errorf("%s -> %s: answered by %s, want dropped (not in loadBalancerSourceRanges %s/32)", extIP2, addr, r.name, extIP)
		case !timedOut(err):
			t.Errorf("%s -> %s: %v, want dropped (a timeout), as upstream", extIP2, addr, err)
		}
		e.step("loadBalancerSourceRanges %s/32 on %s: %s answered by %s and %s; %s dropped (%v after %dms)",
			extIP, addr, extIP, p1.ns, p2.ns, extIP2, shortErr(err), time.Since(start).Milliseconds())
	})
	t.Run("HealthCheckNodePort", func(t *testing.T) {
		for _, c := range []struct {
			svc         string
			code, local int
		}{
			{"lb-hc", http.StatusOK, 1},                    // p1 here, r1 on the other node
			{"lb-local", http.StatusServiceUnavailable, 0}, // r1, r2 on the other node
		} {
			s := e.svcs[c.svc]
			if s.HealthCheckNodePort == 0 {
				t.Fatalf("%s has no healthCheckNodePort", c.svc)
			}
			addr := fmt.Sprintf("%s:%d", nodeIP, s.HealthCheckNodePort)
			var body string
			waitFor(t, 30*time.Second, "health check "+addr+" of "+c.svc, func() error {
				code, b, err := httpGet(extNS, addr)
				if err != nil {
					return err
				}
				body = b
				var st healthStatus
				if err := json.Unmarshal([]byte(b), &st); err != nil {
					return fmt.Errorf("%d %q: %w", code, b, err)
				}
				want := healthStatus{LocalEndpoints: c.local, ServiceProxyHealthy: true}
				want.Service.Namespace, want.Service.Name = testNS, c.svc
				if code != c.code || st != want {
					return fmt.Errorf("%d %s, want %d with %+v", code, b, c.code, want)
				}
				return nil
			})
			e.step("external -> healthCheckNodePort %s (%s): %d %s", addr, c.svc, c.code, strings.TrimSpace(body))
		}
	})
	t.Run("ETPLocal/LocalEndpoint/FromOutside/LBIP", func(t *testing.T) {
		addr := e.svcs["lb-hc"].LBIP + ":80"
		waitForAll(t, extNS, "tcp", addr, 30*time.Second, p1.ns)
		names, clients := spread(t, extNS, "tcp", addr, 8)
		if len(names) != 1 || names[p1.ns] != 8 || !slices.Equal(clients, []string{extIP}) {
			t.Errorf("8 requests: answered by %v, backends saw %v; want only the local %s, client %s kept", names, clients, p1.ns, extIP)
		}
		e.step("external %s -> %s (Local, endpoints %s local and %s remote): 8/8 to %s, client IP kept", extIP, addr, p1.ns, r1.ns, p1.ns)
	})
	t.Run("TopologyHints/SameZoneOnly", func(t *testing.T) {
		addr := e.svcs["hints"].clusterIP("80")
		waitForAll(t, clientNS, "tcp", addr, 30*time.Second, p1.ns)
		names, _ := spread(t, clientNS, "tcp", addr, 12)
		if len(names) != 1 || names[p1.ns] != 12 {
			t.Errorf("12 requests: answered by %v, want only %s (hinted for %s; %s is hinted for zone-other)", names, p1.ns, zone, r1.ns)
		}
		e.step("hints %s (PreferClose; %s hinted for %s, %s for zone-other): 12/12 to %s", addr, p1.ns, zone, r1.ns, p1.ns)
	})
	t.Run("ClusterIP/SCTP/FromPod", func(t *testing.T) {
		if e.sctpErr != nil {
			t.Skipf("no SCTP in this kernel: %v", e.sctpErr)
		}
		addr := e.svcs["sctp"].clusterIP("80")
		clients := waitForAll(t, clientNS, "sctp", addr, 30*time.Second, p1.ns, p2.ns)
		if !slices.Equal(clients, []string{clientIP}) {
			t.Errorf("backends saw %v, want the pod's own %s", clients, clientIP)
		}
		e.step("client pod -> %s sctp: answered by %s and %s, source kept (%v)", addr, p1.ns, p2.ns, clients)
	})
	t.Run("DualStack/ClusterIP/FromPod", func(t *testing.T) {
		d := e.svcs["dual"]
		clients := waitForAll(t, clientNS, "tcp", d.clusterIP6("80"), 30*time.Second, p1.ns, p2.ns)
		if !slices.Equal(clients, []string{clientIP6}) {
			t.Errorf("backends saw %v, want the pod's own %s", clients, clientIP6)
		}
		clients4 := waitForAll(t, clientNS, "tcp", d.clusterIP("80"), 30*time.Second, p1.ns, p2.ns)
		e.step("dual-stack service: client pod -> %s and %s: answered by %s and %s, source kept (%v, %v)",
			d.clusterIP6("80"), d.clusterIP("80"), p1.ns, p2.ns, clients, clients4)
	})
	t.Run("DualStack/NodePort/IPv6/FromOutside", func(t *testing.T) {
		np := e.svcs["dual"].nodePort6()
		clients := waitForAll(t, extNS, "tcp", np, 30*time.Second, p1.ns, p2.ns)
		if slices.Contains(clients, extIP6) {
			t.Errorf("backends saw %v: the external client %s was not masqueraded", clients, extIP6)
		}
		e.step("external %s -> %s: answered by %s and %s, masqueraded to %v", extIP6, np, p1.ns, p2.ns, clients)
	})
	t.Run("UDPConntrack/FixedPortClientMovesToNewEndpoint", func(t *testing.T) {
		if os.Getenv("KPVM_DYNAMIC") != "1" {
			t.Skip("KPVM_DYNAMIC=0: no endpoint changes from the host")
		}
		e.udpConntrack(t)
	})
}

// udpConntrack: a UDP client that always sends from one source port keeps its flow (the
// conntrack entry, in IPVS mode also the IPVS connection) alive; when its endpoint leaves the
// service, the flow must be deleted so that the next datagram reaches the new endpoint (the
// old one still answers here: a flow left in place shows as its replies).
func (e *env) udpConntrack(t *testing.T) {
	addr := e.svcs["udp-ct"].clusterIP("80")
	fixed := from{port: udpCTPort}
	answeredBy := func(want string, src from) func() error {
		return func() error {
			r, err := requestFrom(clientNS, "udp", addr, src)
			if err != nil {
				return err
			}
			if r.name != want {
				return fmt.Errorf("answered by %s", r.name)
			}
			return nil
		}
	}
	// p1 the only endpoint (again, after an earlier mode), seen from kernel-chosen ports; then
	// the fixed-port flow (one left by an earlier mode points at p2 and must go too).
	fmt.Println("KPVM-STEP udpct-p1")
	waitFor(t, 30*time.Second, addr+" udp answered by "+p1.ns, answeredBy(p1.ns, from{}))
	waitFor(t, 15*time.Second, fmt.Sprintf("%s udp from port %d answered by %s", addr, udpCTPort, p1.ns), answeredBy(p1.ns, fixed))
	t1 := time.Now()
	fmt.Println("KPVM-STEP udpct-p2")
	// one datagram every 100 ms from the same port keeps the flow alive while waiting
	waitFor(t, 15*time.Second, fmt.Sprintf("the flow from port %d moved to %s", udpCTPort, p2.ns), answeredBy(p2.ns, fixed))
	e.step("fixed-port UDP client %s:%d -> %s moved from %s to %s %dms after the endpoint change (stale flow deleted)",
		clientIP, udpCTPort, addr, p1.ns, p2.ns, time.Since(t1).Milliseconds())
}

// healthStatus is kube-proxy's health-check node port answer.
type healthStatus struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

// httpGet sends GET / to addr from the namespace ns and returns the status code and body.
func httpGet(ns, addr string) (int, string, error) {
	var code int
	var body []byte
	err := inNS(ns, func() error {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer func() { _ = c.Close() }()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		defer func() { _ = resp.Body.Close() }()
		code = resp.StatusCode
		body, err = io.ReadAll(resp.Body)
		return err
	})
	return code, string(body), err
}

func errOrOK(err error) string {
	if err != nil {
		return err.Error()
	}
	return "ok"
}
