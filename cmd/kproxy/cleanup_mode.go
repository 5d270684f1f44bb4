package main

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/iptables"
	"github.com/kproxy/kproxy/ipvs"
)

// A mode switch (kproxy restarted with another --mode, or taking over from kube-proxy in the
// other mode) must not leave the previous mode's objects: the IPVS mode's kube-ipvs0 keeps
// answering for every service IP and its KUBE-IPVS-FILTER rejects; the iptables mode's
// KUBE-SVC-* chains keep DNATing. At start, before the first sync, kproxy looks for the other
// mode's marks and, when it finds one, removes everything --cleanup removes except the
// datapath's chains; the first sync (a full one) then writes the new mode's state, as
// upstream's --cleanup-ipvs did. Connections IPVS forwarded end with their virtual servers.
// With no mark, nothing is touched: a restart in the same mode writes nothing.

// iptablesModeMarks are chains only the iptables mode makes, kproxy's and kube-proxy's alike,
// and always. Only the filter table is read: it is small whatever the number of services
// (the nat table is the one that grows; at 10,000 services iptables-save of it takes ~1 s).
var iptablesModeMarks = map[iptables.Table][]string{
	iptables.TableFilter: {"KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS"},
}

// ipvsModeMarks are chains only the IPVS mode makes (besides kube-ipvs0, checked first).
var ipvsModeMarks = map[iptables.Table][]string{
	iptables.TableFilter: {"KUBE-IPVS-FILTER", "KUBE-IPVS-OUT-FILTER", "KUBE-SOURCE-RANGES-FIREWALL"},
}

// otherModeMarked reports whether saved (per table) holds a chain of marks: a name, or a
// prefix when it ends with "-".
func otherModeMarked(saved map[iptables.Table]map[iptables.Chain][]string, marks map[iptables.Table][]string) (iptables.Chain, bool) {
	for table, names := range marks {
		for c := range saved[table] {
			if slices.ContainsFunc(names, func(m string) bool {
				return string(c) == m || strings.HasSuffix(m, "-") && strings.HasPrefix(string(c), m)
			}) {
				return c, true
			}
		}
	}
	return "", false
}

// modeSwitchOwned is ownedByKProxy without the datapath's chains, which --datapath keeps
// whatever the proxy mode.
func modeSwitchOwned(table iptables.Table, c iptables.Chain) bool {
	if strings.HasPrefix(string(c), cleanupOwnedPrefix) && !strings.HasPrefix(string(c), "KPROXY-EXT-") {
		return false
	}
	return ownedByKProxy(table, c)
}

// cleanupOtherMode removes the other mode's state when it finds a mark of it (see above).
func cleanupOtherMode(ctx context.Context, mode string, excludeCIDRs []netip.Prefix) error {
	ipts := map[iptables.Family]iptables.Interface{
		iptables.IPv4: iptables.New(iptables.Options{}),
		iptables.IPv6: iptables.New(iptables.Options{IPv6: true}),
	}
	mark, found := "", false
	if mode == "iptables" {
		if _, err := net.InterfaceByName(ipvs.DummyDevice); err == nil {
			mark, found = ipvs.DummyDevice, true
		}
	}
	marks := iptablesModeMarks
	if mode == "iptables" {
		marks = ipvsModeMarks
	}
	for _, family := range []iptables.Family{iptables.IPv4, iptables.IPv6} {
		if found {
			break
		}
		saved := map[iptables.Table]map[iptables.Chain][]string{}
		data, err := ipts[family].Save(ctx, iptables.TableFilter)
		if err != nil {
			continue // no tools for the family, or no table: nothing of ours there
		}
		if saved[iptables.TableFilter], err = iptables.ParseSave(data, iptables.TableFilter); err != nil {
			return err
		}
		if c, ok := otherModeMarked(saved, marks); ok {
			mark, found = string(c), true
		}
	}
	if !found {
		return nil
	}
	klog.FromContext(ctx).Info("Found the other proxy mode's state: removing it before the first sync", "mode", mode, "mark", mark)
	ic, closeIPVS := openIPVSCleanup(ctx, excludeCIDRs)
	defer closeIPVS()
	return cleanupAll(ctx, ipts, ic, modeSwitchOwned)
}
