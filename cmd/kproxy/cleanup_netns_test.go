//go:build netns

package main

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kproxy/kproxy/internal/netnsutil"
	"github.com/kproxy/kproxy/ipset"
	"github.com/kproxy/kproxy/iptables"
	iptproxy "github.com/kproxy/kproxy/iptables/proxy"
	"github.com/kproxy/kproxy/ipvs"
	"github.com/kproxy/kproxy/proxier"
)

// newNetNSPath creates a fresh network namespace, deleted at the end of the test, and returns
// its path.
func newNetNSPath(t *testing.T) string {
	t.Helper()
	_, path := netnsutil.CreateTemp(t, "kpt")
	return path
}

// kernelTables is the nat and filter tables of ipt as iptables-save prints them, without
// comment lines and counters.
func kernelTables(t *testing.T, ipt iptables.Interface) string {
	t.Helper()
	var b strings.Builder
	for _, table := range []iptables.Table{iptables.TableNAT, iptables.TableFilter} {
		data, err := ipt.Save(context.Background(), table)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.SplitAfter(string(data), "\n") {
			if strings.HasPrefix(line, "#") {
				continue
			}
			if strings.HasPrefix(line, ":") {
				line = line[:strings.LastIndex(line, " ")] + "\n" // drop [packets:bytes]
			}
			b.WriteString(line)
		}
	}
	return b.String()
}

// withoutIPVSMatch drops the restore lines that use the ipvs match, which needs the IPVS
// kernel this machine does not have.
type withoutIPVSMatch struct{ iptables.Interface }

func (w withoutIPVSMatch) Restore(ctx context.Context, data []byte) error {
	var kept []string
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.Contains(line, "-m ipvs") {
			kept = append(kept, line)
		}
	}
	return w.Interface.Restore(ctx, []byte(strings.Join(kept, "\n")))
}

// TestCleanupKernel runs a mode's sync into a fresh namespace that already holds foreign
// chains (a CNI's, kubelet's KUBE-FIREWALL and canary), runs kproxy's cleanup there and
// expects the kernel's tables to be exactly the foreign state again. Then, with kproxy's rules
// back and a foreign chain planted that jumps to KUBE-MARK-MASQ, the cleanup removes
// everything else of kproxy's and leaves KUBE-MARK-MASQ and the foreign chain untouched.
func TestCleanupKernel(t *testing.T) {
	ctx := context.Background()
	clusterCIDR := netip.MustParsePrefix("100.64.0.0/16")
	nodeIP := netip.MustParseAddr("192.0.2.11")
	for _, tc := range []struct {
		name    string
		backend func(t *testing.T, ic ipvsCleanup, ipt iptables.Interface) proxier.Backend
	}{
		{"iptables", func(_ *testing.T, _ ipvsCleanup, ipt iptables.Interface) proxier.Backend {
			return iptproxy.NewProxier(ipt, iptproxy.Config{Family: iptables.IPv4, ClusterCIDR: clusterCIDR,
				MasqueradeBit: 14, MasqueradeRandomFully: true, NodeIP: nodeIP, LocalhostNodePorts: true,
				ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("100.100.0.0/16")}})
		}},
		// The IPVS mode's iptables chains, jumps and ipsets go to the kernel; IPVS itself is
		// faked, and the rules with the ipvs match are dropped (this kernel has no IPVS).
		{"ipvs (iptables rules and ipsets real, IPVS faked)", func(t *testing.T, ic ipvsCleanup, ipt iptables.Interface) proxier.Backend {
			p, err := ipvs.NewProxier(ipvs.Writers{IPVS: ic.ipvs, Links: ic.links, IPSet: ic.sets, IPTables: withoutIPVSMatch{ipt}},
				ipvs.Config{Family: iptables.IPv4, ClusterCIDR: clusterCIDR, NodeIPs: []netip.Addr{nodeIP}, NodeIP: nodeIP})
			if err != nil {
				t.Fatal(err)
			}
			return p
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := newNetNSPath(t)
			kernel := iptables.New(iptables.Options{NetNSPath: ns})
			ipts := map[iptables.Family]iptables.Interface{
				iptables.IPv4: kernel,
				iptables.IPv6: iptables.New(iptables.Options{IPv6: true, NetNSPath: ns}),
			}
			if err := kernel.Restore(ctx, []byte(foreignState)); err != nil {
				t.Fatalf("plant foreign state: %v", err)
			}
			foreign := kernelTables(t, kernel)
			// the IPVS mode's sets are real; IPVS and kube-ipvs0 are faked (no IPVS here)
			sets, err := ipset.New(ipset.Options{NetNSPath: ns})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(sets.Close)
			ic := ipvsCleanup{ipvs: ipvs.NewFakeIPVS(), links: ipvs.NewFakeLinks(), sets: sets,
				opts: ipvs.CleanupOptions{LocalAddrs: []netip.Addr{nodeIP}}}
			if err := sets.EnsureSet(ctx, ipset.Set{Name: "cali40all-hosts", Type: ipset.HashIP, Family: ipset.FamilyIPv4}); err != nil {
				t.Fatal(err)
			}
			cleanup := func(ctx context.Context, ipts map[iptables.Family]iptables.Interface) error {
				return cleanupAll(ctx, ipts, ic, ownedByKProxy)
			}

			syncOnto(t, tc.backend(t, ic, kernel))
			programmed := kernelTables(t, kernel)
			for _, want := range []string{":KUBE-SERVICES", ":KUBE-MARK-MASQ", "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"} {
				if !strings.Contains(programmed, want) {
					t.Fatalf("the mode programmed no %q: the test proves nothing:\n%s", want, programmed)
				}
			}
			if names, _ := sets.ListSets(ctx); strings.HasPrefix(tc.name, "ipvs") && !slices.Contains(names, ipset.KubeClusterIP) {
				t.Fatalf("the IPVS mode made no %s: the test proves nothing: %v", ipset.KubeClusterIP, names)
			}
			if err := cleanup(ctx, ipts); err != nil {
				t.Fatalf("cleanup: %v", err)
			}
			if diff := cmp.Diff(foreign, kernelTables(t, kernel)); diff != "" {
				t.Errorf("after cleanup (-foreign state only +got):\n%s", diff)
			}
			if names, err := sets.ListSets(ctx); err != nil || !cmp.Equal(names, []string{"cali40all-hosts"}) {
				t.Errorf("sets after cleanup = %v, %v; want only the foreign cali40all-hosts", names, err)
			}
			if err := cleanup(ctx, ipts); err != nil {
				t.Errorf("second cleanup: %v", err)
			}

			// A foreign chain that jumps to KUBE-MARK-MASQ keeps it.
			syncOnto(t, tc.backend(t, ic, kernel))
			if err := kernel.Restore(ctx, []byte("*nat\n:CNI-MASQ - [0:0]\n-A CNI-MASQ -s 100.64.0.0/16 -j KUBE-MARK-MASQ\nCOMMIT\n")); err != nil {
				t.Fatalf("plant the foreign jump: %v", err)
			}
			if err := cleanup(ctx, ipts); err != nil {
				t.Fatalf("cleanup with a foreign jump: %v", err)
			}
			got := kernelTables(t, kernel)
			nat, _, _ := strings.Cut(got, "*filter")
			var ours []string
			for _, line := range strings.Split(got, "\n") {
				if c, ok := strings.CutPrefix(line, ":"); ok && ownedByKProxy(iptables.TableNAT, iptables.Chain(strings.Fields(c)[0])) ||
					ok && ownedByKProxy(iptables.TableFilter, iptables.Chain(strings.Fields(c)[0])) {
					ours = append(ours, strings.Fields(c)[0])
				}
			}
			if diff := cmp.Diff([]string{"KUBE-MARK-MASQ"}, ours); diff != "" {
				t.Errorf("chains of kproxy's left (-want +got):\n%s\n%s", diff, got)
			}
			for _, want := range []string{"-A CNI-MASQ -s 100.64.0.0/16 -j KUBE-MARK-MASQ", "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000"} {
				if !strings.Contains(nat, want+"\n") {
					t.Errorf("nat table lost %q:\n%s", want, nat)
				}
			}
			if strings.Contains(got, "-j KUBE-SERVICES") || strings.Contains(got, "-j KUBE-POSTROUTING") {
				t.Errorf("a jump to a deleted chain is left:\n%s", got)
			}
		})
	}
}
