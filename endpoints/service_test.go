package endpoints

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

func TestServicePorts(t *testing.T) {
	p := basePort("ns", "svc")
	udp := &ServicePort{Name: spn("ns", "svc", "dns", v1.ProtocolUDP), ClusterIP: addr("10.0.0.1"), Port: 53, Protocol: v1.ProtocolUDP}
	tests := []struct {
		name       string
		family     v1.IPFamily
		svc        *v1.Service
		want       []*ServicePort
		wantIssues issues
	}{{
		name: "cluster IP service with two ports",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53})
		}),
		want: []*ServicePort{p, udp},
	}, {
		name: "empty protocol is the API default, TCP",
		svc:  makeService("ns", "svc", func(s *v1.Service) { s.Spec.Ports[0].Protocol = "" }),
		want: []*ServicePort{p},
	}, {
		name: "only clusterIP set (no clusterIPs, no ipFamilies)",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.ClusterIPs, s.Spec.IPFamilies = nil, nil
		}),
		want: []*ServicePort{p},
	}, {
		name: "legacy leading-zero cluster IP",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = "010.000.000.001", []string{"010.000.000.001"}
		}),
		want: []*ServicePort{withPort(p, func(p *ServicePort) { p.ClusterIP = addr("10.0.0.1") })},
	}, {
		name: "ExternalName skipped",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.Type, s.Spec.ClusterIP, s.Spec.ClusterIPs, s.Spec.ExternalName = v1.ServiceTypeExternalName, "", nil, "example.com"
		}),
	}, {
		name: "headless (clusterIP None) skipped",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = v1.ClusterIPNone, []string{v1.ClusterIPNone}
		}),
	}, {
		name: "headless with only clusterIP None skipped",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs, s.Spec.IPFamilies = v1.ClusterIPNone, nil, nil
		}),
	}, {
		name: "no cluster IP skipped",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs, s.Spec.IPFamilies = "", nil, nil
		}),
	}, {
		name: "service-proxy-name label skipped, whatever its value",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Labels = map[string]string{labelServiceProxyName: ""}
		}),
	}, {
		name: "headless label on a Service is not a reason to skip",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Labels = map[string]string{labelHeadless: ""}
		}),
		want: []*ServicePort{p},
	}, {
		name: "invalid cluster IP skips the whole service",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = "10.0.0.300", []string{"10.0.0.300"}
		}),
		wantIssues: issues{{ReasonInvalidClusterIP, `clusterIP "10.0.0.300" is not an IP address; service skipped`}},
	}, {
		name: "invalid cluster IP declared of the other family is not ours",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.ClusterIPs = []string{"fd00::zz", "10.0.0.1"}
			s.Spec.IPFamilies = []v1.IPFamily{v1.IPv6Protocol, v1.IPv4Protocol}
		}),
		want: []*ServicePort{p},
	}, {
		name:   "IPv6 tracker picks the IPv6 cluster IP of a dual-stack service",
		family: v1.IPv6Protocol,
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.ClusterIPs = []string{"10.0.0.1", "fd00::1"}
			s.Spec.IPFamilies = []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol}
			s.Spec.ExternalIPs = []string{"192.0.2.1", "2001:db8::1"}
		}),
		want: []*ServicePort{withPort(p, func(p *ServicePort) {
			p.ClusterIP = addr("fd00::1")
			p.ExternalIPs = addrs("2001:db8::1")
		})},
	}, {
		name:   "IPv6 tracker skips a single-stack IPv4 service",
		family: v1.IPv6Protocol,
		svc:    makeService("ns", "svc"),
	}, {
		name: "IPv4 tracker skips a single-stack IPv6 service",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs, s.Spec.IPFamilies = "fd00::1", []string{"fd00::1"}, []v1.IPFamily{v1.IPv6Protocol}
		}),
	}, {
		name: "ports out of range skipped, the others kept",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.Ports = append(s.Spec.Ports,
				v1.ServicePort{Name: "zero", Protocol: v1.ProtocolTCP, Port: 0},
				v1.ServicePort{Name: "big", Protocol: v1.ProtocolTCP, Port: 65536})
		}),
		want: []*ServicePort{p},
		wantIssues: issues{
			{ReasonInvalidPort, `port "zero": 0 is out of range; port skipped`},
			{ReasonInvalidPort, `port "big": 65536 is out of range; port skipped`},
		},
	}, {
		name: "unknown protocol skipped",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Name: "x", Protocol: "ICMP", Port: 1})
		}),
		want:       []*ServicePort{p},
		wantIssues: issues{{ReasonInvalidProtocol, `port "x": protocol "ICMP" is not TCP, UDP or SCTP; port skipped`}},
	}, {
		name: "node port out of range is no node port",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.Type = v1.ServiceTypeNodePort
			s.Spec.Ports[0].NodePort = 70000
		}),
		want:       []*ServicePort{p},
		wantIssues: issues{{ReasonInvalidNodePort, `port "http": nodePort 70000 is out of range; no node port`}},
	}, {
		name: "node port",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.Type = v1.ServiceTypeNodePort
			s.Spec.Ports[0].NodePort = 30080
		}),
		want: []*ServicePort{withPort(p, func(p *ServicePort) { p.NodePort = 30080 })},
	}, {
		name: "duplicate port name and protocol: first kept",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Name: "http", Protocol: v1.ProtocolTCP, Port: 81})
		}),
		want:       []*ServicePort{p},
		wantIssues: issues{{ReasonDuplicatePort, `port "http" (TCP) appears more than once; only the first is used`}},
	}, {
		name: "external IPs: other family ignored, invalid reported",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.ExternalIPs = []string{"192.0.2.1", "2001:db8::1", "bogus", "192.0.2.2"}
		}),
		want:       []*ServicePort{withPort(p, func(p *ServicePort) { p.ExternalIPs = addrs("192.0.2.1", "192.0.2.2") })},
		wantIssues: issues{{ReasonInvalidExternalIP, `externalIP "bogus" is not an IP address; skipped`}},
	}, {
		name: "load-balancer ingress: VIP kept; Proxy mode, hostname, other family skipped; invalid reported",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.Type = v1.ServiceTypeLoadBalancer
			s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{
				{IP: "198.51.100.1"},
				{IP: "198.51.100.2", IPMode: ptr.To(v1.LoadBalancerIPModeVIP)},
				{IP: "198.51.100.3", IPMode: ptr.To(v1.LoadBalancerIPModeProxy)},
				{Hostname: "lb.example.com"},
				{IP: "2001:db8::2"},
				{IP: "nope"},
			}
		}),
		want: []*ServicePort{withPort(p, func(p *ServicePort) {
			p.LoadBalancerIPs = addrs("198.51.100.1", "198.51.100.2")
		})},
		wantIssues: issues{{ReasonInvalidLoadBalancerIP, `load-balancer ingress IP "nope" is not an IP address; skipped`}},
	}, {
		name: "source ranges: spaces trimmed, masked, other family ignored, invalid reported",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.Type = v1.ServiceTypeLoadBalancer
			s.Spec.LoadBalancerSourceRanges = []string{" 203.0.113.0/24 ", "10.1.2.3/8", "2001:db8::/32", "1.2.3.4/33"}
		}),
		want: []*ServicePort{withPort(p, func(p *ServicePort) {
			p.LoadBalancerSourceRanges = prefixes("203.0.113.0/24", "10.0.0.0/8")
		})},
		wantIssues: issues{{ReasonInvalidSourceRange, `loadBalancerSourceRange "1.2.3.4/33" is not a CIDR; skipped`}},
	}, {
		name: "ClientIP affinity without config defaults to 3 hours",
		svc:  makeService("ns", "svc", func(s *v1.Service) { s.Spec.SessionAffinity = v1.ServiceAffinityClientIP }),
		want: []*ServicePort{withPort(p, func(p *ServicePort) { p.SessionAffinityTimeout = 10800 * time.Second })},
	}, {
		name: "ClientIP affinity with a timeout",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](60)}}
		}),
		want: []*ServicePort{withPort(p, func(p *ServicePort) { p.SessionAffinityTimeout = time.Minute })},
	}, {
		name: "ClientIP affinity with an invalid timeout uses the default",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](0)}}
		}),
		want:       []*ServicePort{withPort(p, func(p *ServicePort) { p.SessionAffinityTimeout = 10800 * time.Second })},
		wantIssues: issues{{ReasonInvalidSessionAffinity, `sessionAffinityConfig timeoutSeconds 0 is out of range; using 10800`}},
	}, {
		name: "no affinity: config ignored",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.SessionAffinity = v1.ServiceAffinityNone
			s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](60)}}
		}),
		want: []*ServicePort{p},
	}, {
		name: "ETP Local on a ClusterIP service without external IPs is not Local",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
		}),
		want: []*ServicePort{p},
	}, {
		name: "ETP Local on a ClusterIP service with external IPs",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
			s.Spec.ExternalIPs = []string{"192.0.2.1"}
		}),
		want: []*ServicePort{withPort(p, func(p *ServicePort) {
			p.ExternalIPs, p.ExternalPolicyLocal = addrs("192.0.2.1"), true
		})},
	}, {
		name: "ETP Local on a NodePort service: no health check node port",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.Type = v1.ServiceTypeNodePort
			s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
			s.Spec.HealthCheckNodePort = 32000
			s.Spec.Ports[0].NodePort = 30080
		}),
		want: []*ServicePort{withPort(p, func(p *ServicePort) { p.NodePort, p.ExternalPolicyLocal = 30080, true })},
	}, {
		name: "ETP Local on a LoadBalancer service: health check node port",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.Type = v1.ServiceTypeLoadBalancer
			s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
			s.Spec.HealthCheckNodePort = 32000
		}),
		want: []*ServicePort{withPort(p, func(p *ServicePort) { p.ExternalPolicyLocal, p.HealthCheckNodePort = true, 32000 })},
	}, {
		name: "ETP Cluster on a LoadBalancer service: no health check node port",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.Type = v1.ServiceTypeLoadBalancer
			s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyCluster
			s.Spec.HealthCheckNodePort = 32000
		}),
		want: []*ServicePort{p},
	}, {
		name: "health check node port out of range",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.Type = v1.ServiceTypeLoadBalancer
			s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
			s.Spec.HealthCheckNodePort = -1
		}),
		want:       []*ServicePort{withPort(p, func(p *ServicePort) { p.ExternalPolicyLocal = true })},
		wantIssues: issues{{ReasonInvalidHealthCheckPort, `healthCheckNodePort -1 is out of range; ignored`}},
	}, {
		name: "ITP Local and traffic distribution",
		svc: makeService("ns", "svc", func(s *v1.Service) {
			s.Spec.InternalTrafficPolicy = ptr.To(v1.ServiceInternalTrafficPolicyLocal)
			s.Spec.TrafficDistribution = ptr.To(v1.ServiceTrafficDistributionPreferClose)
		}),
		want: []*ServicePort{withPort(p, func(p *ServicePort) {
			p.InternalPolicyLocal, p.TrafficDistribution = true, v1.ServiceTrafficDistributionPreferClose
		})},
	}, {
		name: "nil service",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			family := tc.family
			if family == "" {
				family = v1.IPv4Protocol
			}
			got, gotIssues := servicePorts(tc.svc, family)
			var want map[ServicePortName]*ServicePort
			for _, p := range tc.want {
				if want == nil {
					want = map[ServicePortName]*ServicePort{}
				}
				want[p.Name] = p
			}
			if diff := cmp.Diff(want, got, cmpNetip); diff != "" {
				t.Errorf("ports (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantIssues, gotIssues); diff != "" {
				t.Errorf("issues (-want +got):\n%s", diff)
			}
		})
	}
}
