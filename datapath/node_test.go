package datapath

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestNodeFromAPI(t *testing.T) {
	addrs := []v1.NodeAddress{{Type: v1.NodeHostName, Address: "n2"}, {Type: v1.NodeInternalIP, Address: "2001:db8:3::12"},
		{Type: v1.NodeInternalIP, Address: "192.0.2.12"}}
	tests := []struct {
		name    string
		node    v1.Node
		want    Node
		wantErr string
	}{{
		name: "InternalIP of the pod CIDR's family, MAC from the annotation",
		node: v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2", Annotations: map[string]string{AnnotationVTEPMAC: "0e:6b:c0:00:02:0c"}},
			Spec: v1.NodeSpec{PodCIDR: "100.64.2.0/24", PodCIDRs: []string{"100.64.2.0/24"}}, Status: v1.NodeStatus{Addresses: addrs}},
		want: Node{Name: "n2", PodCIDRs: []netip.Prefix{pfx("100.64.2.0/24")}, IP: addr("192.0.2.12"), VTEPMAC: mac2},
	}, {
		name: "public-ip annotation wins; legacy podCIDR field",
		node: v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2", Annotations: map[string]string{AnnotationPublicIP: "192.0.2.99"}},
			Spec: v1.NodeSpec{PodCIDR: "100.64.2.0/24"}, Status: v1.NodeStatus{Addresses: addrs}},
		want: Node{Name: "n2", PodCIDRs: []netip.Prefix{pfx("100.64.2.0/24")}, IP: addr("192.0.2.99")},
	}, {
		name: "no podCIDR yet: first InternalIP",
		node: v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2"}, Status: v1.NodeStatus{Addresses: addrs}},
		want: Node{Name: "n2", IP: addr("2001:db8:3::12")},
	}, {
		name:    "bad MAC annotation",
		node:    v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2", Annotations: map[string]string{AnnotationVTEPMAC: "nope"}}},
		wantErr: "annotation kproxy.io/vtep-mac",
	}, {
		name:    "bad podCIDR",
		node:    v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2"}, Spec: v1.NodeSpec{PodCIDRs: []string{"100.64.2.0"}}},
		wantErr: `podCIDR "100.64.2.0"`,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := NodeFromAPI(&tc.node)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got, cmpNetip); d != "" {
				t.Errorf("node (-want +got):\n%s", d)
			}
		})
	}
}

func TestAnnotations(t *testing.T) {
	p, err := ComputePlan(Config{Backend: BackendVXLAN}, self1, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{AnnotationPublicIP: "192.0.2.11", AnnotationVTEPMAC: "0e:6b:c0:00:02:0b"}
	if d := cmp.Diff(want, Annotations(p)); d != "" {
		t.Errorf("annotations (-want +got):\n%s", d)
	}
}
