package ipset

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSetValidate(t *testing.T) {
	for _, tc := range []struct {
		set  Set
		want error
	}{
		{Set{Name: "KUBE-CLUSTER-IP", Type: HashIPPort}, nil},
		{Set{Name: "KUBE-6-CLUSTER-IP", Type: HashIPPort, Family: FamilyIPv6, MaxElem: 1 << 20}, nil},
		{Set{Name: "KUBE-NODE-PORT-TCP", Type: BitmapPort}, nil},
		{Set{Name: "KUBE-NODE-PORT-TCP", Type: BitmapPort, PortRange: PortRange{From: 30000, To: 30000}}, nil},
		{Set{Name: "", Type: HashIP}, ErrInvalidSet},
		{Set{Name: strings.Repeat("K", 32), Type: HashIP}, ErrInvalidSet},
		{Set{Name: "A\x00B", Type: HashIP}, ErrInvalidSet},
		{Set{Name: "X", Type: "hash:mac"}, ErrInvalidSet},
		{Set{Name: "X", Type: HashNet, Family: "ipv4"}, ErrInvalidSet},
		{Set{Name: "X", Type: BitmapPort, Family: FamilyIPv4}, ErrInvalidSet},
		{Set{Name: "X", Type: BitmapPort, MaxElem: 10}, ErrInvalidSet},
		{Set{Name: "X", Type: BitmapPort, PortRange: PortRange{From: 2, To: 1}}, ErrInvalidSet},
		{Set{Name: "X", Type: HashIP, PortRange: PortRange{To: 1}}, ErrInvalidSet},
	} {
		if err := tc.set.Validate(); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%+v: Validate() = %v, want %v", tc.set, err, tc.want)
		}
	}
}

func TestSetString(t *testing.T) {
	for _, tc := range []struct {
		set  Set
		want string
	}{
		{Set{Name: "KUBE-CLUSTER-IP", Type: HashIPPort}, "create KUBE-CLUSTER-IP hash:ip,port family inet maxelem 65536"},
		{Set{Name: "N", Type: HashNet, Family: FamilyIPv6, MaxElem: 8}, "create N hash:net family inet6 maxelem 8"},
		{Set{Name: "P", Type: BitmapPort}, "create P bitmap:port range 0-65535"},
		{Set{Name: "P", Type: BitmapPort, PortRange: PortRange{From: 30000, To: 32767}}, "create P bitmap:port range 30000-32767"},
	} {
		if got := tc.set.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}

func TestKubeSets(t *testing.T) {
	v4, v6 := KubeSets(FamilyIPv4), KubeSets(FamilyIPv6)
	if len(v4) != 17 || len(v6) != 17 {
		t.Fatalf("got %d and %d sets, want 17 each (DESIGN.md's list)", len(v4), len(v6))
	}
	types := map[string]SetType{}
	for _, s := range v4 {
		if err := s.Validate(); err != nil {
			t.Errorf("%s: %v", s.Name, err)
		}
		if !strings.HasPrefix(s.Name, KubePrefix) || s.Comment == "" {
			t.Errorf("%s: want KUBE- prefix and a comment", s.Name)
		}
		types[s.Name] = s.Type
	}
	// The types upstream's ipsetInfo gives (pkg/proxy/ipvs/proxier.go).
	want := map[string]SetType{
		KubeLoopBack: HashIPPortIP, KubeClusterIP: HashIPPort, KubeExternalIP: HashIPPort,
		KubeExternalIPLocal: HashIPPort, KubeLoadBalancer: HashIPPort, KubeLoadBalancerLocal: HashIPPort,
		KubeLoadBalancerFW: HashIPPort, KubeLoadBalancerSourceIP: HashIPPortIP,
		KubeLoadBalancerSourceCIDR: HashIPPortNet, KubeNodePortTCP: BitmapPort, KubeNodePortLocalTCP: BitmapPort,
		KubeNodePortUDP: BitmapPort, KubeNodePortLocalUDP: BitmapPort, KubeNodePortSCTP: HashIPPort,
		KubeNodePortLocalSCTP: HashIPPort, KubeHealthCheckNodePort: BitmapPort, KubeIPVSIPs: HashIP,
	}
	if diff := cmp.Diff(want, types); diff != "" {
		t.Errorf("types (-want +got):\n%s", diff)
	}
	seen := map[string]bool{}
	for _, s := range v6 {
		if err := s.Validate(); err != nil {
			t.Errorf("%s: %v", s.Name, err)
		}
		if !strings.HasPrefix(s.Name, "KUBE-6-") || seen[s.Name] {
			t.Errorf("IPv6 name %q: want KUBE-6- prefix, unique", s.Name)
		}
		seen[s.Name] = true
		if s.Type.isHash() != (s.Family == FamilyIPv6) {
			t.Errorf("%s: family %q", s.Name, s.Family)
		}
	}
	if got := FamilyName(KubeLoadBalancerSourceCIDR, FamilyIPv6); got != "KUBE-6-LOAD-BALANCER-SOURCE-CID" {
		t.Errorf("FamilyName = %q", got)
	}
	if got := FamilyName("OTHER", FamilyIPv6); got != "OTHER" {
		t.Errorf("FamilyName = %q", got)
	}
}

func TestTempName(t *testing.T) {
	seen := map[string]string{}
	names := []string{"KPT-X"}
	for _, f := range []Family{FamilyIPv4, FamilyIPv6} {
		for _, s := range KubeSets(f) {
			names = append(names, s.Name)
		}
	}
	for _, n := range names {
		tmp := TempName(n)
		if len(tmp) > MaxNameLen || !strings.HasSuffix(tmp, "-tmp") || tmp == n {
			t.Errorf("TempName(%q) = %q", n, tmp)
		}
		if other, dup := seen[tmp]; dup {
			t.Errorf("TempName(%q) = TempName(%q) = %q", n, other, tmp)
		}
		seen[tmp] = n
	}
	if got := TempName("KUBE-CLUSTER-IP"); got != "KUBE-CLUSTER-IP-tmp" {
		t.Errorf("TempName = %q", got)
	}
}
