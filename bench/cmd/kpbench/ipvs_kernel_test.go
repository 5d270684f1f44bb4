package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseIPVSProc(t *testing.T) {
	in := `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  64640001:0050 rr
  -> 64400A00:1F90      Masq    1      0          0
  -> 64400A01:1F90      Masq    0      3          0
UDP  64640001:0035 rr
  -> 64400A02:0035      Masq    1      0          0
TCP  [2001:0db8:0002:0000:0000:0000:0000:0001]:0050 rr
  -> [2001:0db8:0001:0009:0000:0000:0000:0010]:1F90      Masq    1      0          0
TCP  64640002:01BB rr
`
	st, err := parseIPVSProc([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]int{
		"100.100.0.1:80":  {"100.64.10.0:8080": 1, "100.64.10.1:8080": 0},
		"100.100.0.2:443": {},
	}
	if d := cmp.Diff(want, st.vs); d != "" {
		t.Errorf("parse (-want +got):\n%s", d)
	}
	s := &benchService{vip: "100.100.0.1", eps: []string{"100.64.10.0:8080"}}
	if !ipvsOK(st, s) || ipvsGone(st, s) {
		t.Errorf("%v: want programmed", s)
	}
	s.eps = append(s.eps, "100.64.10.1:8080") // weight 0: terminating, not programmed
	if ipvsOK(st, s) {
		t.Errorf("%v: a real server of weight 0 counts as programmed", s)
	}
	if !ipvsGone(st, &benchService{vip: "100.100.0.3"}) {
		t.Error("a missing virtual server is not gone")
	}
}

func TestGuestServicesMatchLoad(t *testing.T) {
	got := guestServices([]string{"100.100.0.10", "100.100.0.11"}, 2)
	want := [][]string{{"100.64.10.0:8080", "100.64.10.1:8080"}, {"100.64.10.2:8080", "100.64.10.3:8080"}}
	for i, s := range got {
		if d := cmp.Diff(want[i], s.eps); d != "" {
			t.Errorf("service %d endpoints (-want +got):\n%s", i, d)
		}
	}
}

func TestFullOK(t *testing.T) {
	st := ipvsState{vs: map[string]map[string]int{"100.100.0.1:80": {"100.64.10.0:8080": 1}}}
	s := &benchService{vip: "100.100.0.1", eps: []string{"100.64.10.0:8080"}}
	for _, tc := range []struct {
		name string
		ex   nodeExtras
		want bool
	}{
		{"all there", nodeExtras{addrs: map[string]bool{"100.100.0.1": true}, clusterIP: map[string]bool{"100.100.0.1,tcp:80": true}}, true},
		{"no address", nodeExtras{addrs: map[string]bool{}, clusterIP: map[string]bool{"100.100.0.1,tcp:80": true}}, false},
		{"no set entry", nodeExtras{addrs: map[string]bool{"100.100.0.1": true}, clusterIP: map[string]bool{}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fullOK(st, tc.ex, s); got != tc.want {
				t.Errorf("fullOK = %v, want %v", got, tc.want)
			}
		})
	}
}
