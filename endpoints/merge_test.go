package endpoints

import (
	"reflect"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
)

// TestEqualCoversEveryField guards equalServicePort and equalEndpoint against a field added to
// the model but not to the comparison: a change in any one field must make values unequal.
func TestEqualCoversEveryField(t *testing.T) {
	fullPort := ServicePort{
		Name:                     spn("ns", "svc", "http", v1.ProtocolTCP),
		ClusterIP:                addr("10.0.0.1"),
		Port:                     80,
		Protocol:                 v1.ProtocolTCP,
		NodePort:                 30080,
		ExternalIPs:              addrs("192.0.2.1"),
		LoadBalancerIPs:          addrs("198.51.100.1"),
		LoadBalancerSourceRanges: prefixes("203.0.113.0/24"),
		SessionAffinityTimeout:   time.Minute,
		ExternalPolicyLocal:      true,
		InternalPolicyLocal:      true,
		HealthCheckNodePort:      32000,
		TrafficDistribution:      v1.ServiceTrafficDistributionPreferClose,
	}
	fullEndpoint := Endpoint{
		IP: addr("10.1.0.1"), Port: 8080, Ready: true, Serving: true, Terminating: true,
		NodeName: "n1", Zone: "z1", Hints: &Hints{Zones: []string{"z1"}, Nodes: []string{"n1"}},
	}
	tests := []struct {
		name  string
		full  any
		equal func(a, b any) bool
	}{{
		name: "ServicePort",
		full: fullPort,
		equal: func(a, b any) bool {
			x, y := a.(ServicePort), b.(ServicePort)
			return equalServicePort(&x, &y)
		},
	}, {
		name:  "Endpoint",
		full:  fullEndpoint,
		equal: func(a, b any) bool { return equalEndpoint(a.(Endpoint), b.(Endpoint)) },
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			full := reflect.ValueOf(tc.full)
			if !tc.equal(tc.full, tc.full) {
				t.Fatalf("a value is not equal to itself")
			}
			for i := range full.NumField() {
				field := full.Type().Field(i).Name
				if full.Field(i).IsZero() {
					t.Errorf("test value has zero %s: set it, and compare it in the equal function", field)
					continue
				}
				one := reflect.New(full.Type()).Elem()
				one.Field(i).Set(full.Field(i))
				zero := reflect.Zero(full.Type()).Interface()
				if tc.equal(zero, one.Interface()) {
					t.Errorf("values differing only in %s compare equal", field)
				}
			}
		})
	}
}
