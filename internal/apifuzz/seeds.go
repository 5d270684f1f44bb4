package apifuzz

import (
	"embed"
	"encoding/json"
	"fmt"
	"path"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// The seed corpus: JSON documents (Document) of real objects (as an apiserver returns them)
// and malformed ones (what validation lets through, and what it would not).
//
//go:embed testdata/fuzz/*.json
var seedFiles embed.FS

// Seed is one seed input with its name.
type Seed struct {
	Name string
	Data []byte
}

// Seeds returns the seed corpus: the files under testdata/fuzz, a generated document with a
// service whose slice has BulkEndpoints endpoints (and a duplicate slice of some of them), and
// a few byte programs for the decoder.
func Seeds() ([]Seed, error) {
	entries, err := seedFiles.ReadDir("testdata/fuzz")
	if err != nil {
		return nil, err
	}
	var out []Seed
	for _, e := range entries {
		b, err := seedFiles.ReadFile(path.Join("testdata/fuzz", e.Name()))
		if err != nil {
			return nil, err
		}
		var doc Document
		if err := json.Unmarshal(b, &doc); err != nil {
			return nil, fmt.Errorf("seed %s: %w", e.Name(), err)
		}
		out = append(out, Seed{Name: e.Name(), Data: b})
	}
	bulk, err := json.Marshal(bulkDocument())
	if err != nil {
		return nil, err
	}
	out = append(out, Seed{Name: "generated-2000-endpoints", Data: bulk})
	counting := make([]byte, 256)
	for i := range counting {
		counting[i] = byte(i)
	}
	out = append(out,
		Seed{Name: "program-counting", Data: counting},
		Seed{Name: "program-services-then-slices", Data: []byte{
			0, 0, 0, 1, 5, 1, 0, 2, 0, 1, 0, 0, 80, 0, // a service
			3, 0, 2, 3, 0, 1, 1, 1, 1, 6, 2, 0, 0, 0, 1, 1, 1, 1, // a slice
			7, // a checkout
		}},
	)
	return out, nil
}

// bulkDocument is a ClusterIP service with one slice of BulkEndpoints ready endpoints and a
// second slice repeating its first ten (duplicates across slices).
func bulkDocument() Document {
	svc := v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "big", ResourceVersion: "1"},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeClusterIP, ClusterIP: "100.100.0.50",
			ClusterIPs: []string{"100.100.0.50"}, IPFamilies: []v1.IPFamily{v1.IPv4Protocol},
			Ports: []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80}}},
	}
	mk := func(name string, n int) discovery.EndpointSlice {
		s := discovery.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, ResourceVersion: "2",
				Labels: map[string]string{discovery.LabelServiceName: "big"}},
			AddressType: discovery.AddressTypeIPv4,
			Ports:       []discovery.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(v1.ProtocolTCP), Port: ptr.To[int32](8080)}},
		}
		for i := range n {
			s.Endpoints = append(s.Endpoints, discovery.Endpoint{
				Addresses:  []string{fmt.Sprintf("100.64.%d.%d", 100+i/250, i%250+1)},
				Conditions: discovery.EndpointConditions{Ready: ptr.To(true)},
				NodeName:   ptr.To([]string{"node-a", "node-b"}[i%2]),
			})
		}
		return s
	}
	return Document{Services: []v1.Service{svc}, Slices: []discovery.EndpointSlice{mk("big-1", BulkEndpoints), mk("big-2", 10)}}
}
