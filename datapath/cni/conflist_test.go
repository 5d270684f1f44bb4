package cni

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func TestRenderConflistGolden(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"vxlan", Config{PodCIDRs: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24")}, MTU: 1450}},
		{"dualstack-hostgw", Config{PodCIDRs: []netip.Prefix{netip.MustParsePrefix("100.64.2.0/24"), netip.MustParsePrefix("2001:db8:1:2::/64")}, MTU: 1500, DataDir: "/run/kproxy/ipam"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RenderConflist(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", tc.name+".conflist")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(string(want), string(got)); d != "" {
				t.Errorf("%s (-want +got):\n%s", golden, d)
			}
		})
	}
}

func TestRenderConflistErrors(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no pod CIDR", Config{MTU: 1450}, "no pod CIDR"},
		{"two IPv4 CIDRs", Config{PodCIDRs: []netip.Prefix{p("100.64.1.0/24"), p("100.65.1.0/24")}}, "two pod CIDRs of one family"},
		{"IPv6 below 1280", Config{PodCIDRs: []netip.Prefix{p("2001:db8:1:1::/64")}, MTU: 1230}, "below the minimum 1280"},
		{"mtu too large", Config{PodCIDRs: []netip.Prefix{p("100.64.1.0/24")}, MTU: 70000}, "out of range"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := RenderConflist(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestWriteConflist(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "net.d")
	for i, want := range []bool{true, false} {
		wrote, err := WriteConflist(dir, []byte("{}\n"))
		if err != nil || wrote != want {
			t.Fatalf("write %d: wrote=%v err=%v, want wrote=%v", i, wrote, err, want)
		}
	}
	if wrote, err := WriteConflist(dir, []byte("{ }\n")); err != nil || !wrote {
		t.Fatalf("changed content: wrote=%v err=%v", wrote, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 || entries[0].Name() != ConflistName {
		t.Fatalf("dir holds %v (%v), want only %s", entries, err, ConflistName)
	}
}
