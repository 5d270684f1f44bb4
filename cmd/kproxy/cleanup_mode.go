package main

import (
	"context"
	"net"
	"net/netip"
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
// and always. Each is looked up alone (iptables.Interface.HasChain: one netlink request with
// iptables-nft), not by reading a table: at 10,000 services even iptables-save of the filter
// table takes about a second with iptables-nft.
var iptablesModeMarks = map[iptables.Table][]iptables.Chain{
	iptables.TableFilter: {"KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS"},
}

// ipvsModeMarks are chains only the IPVS mode makes (besides kube-ipvs0, checked first).
var ipvsModeMarks = map[iptables.Table][]iptables.Chain{
	iptables.TableFilter: {"KUBE-IPVS-FILTER", "KUBE-IPVS-OUT-FILTER", "KUBE-SOURCE-RANGES-FIREWALL"},
}

// otherModeMarked returns the first chain of marks the tables hold.
func otherModeMarked(ctx context.Context, ipt iptables.Interface, marks map[iptables.Table][]iptables.Chain) (iptables.Chain, bool, error) {
	for table, names := range marks {
		for _, c := range names {
			ok, err := ipt.HasChain(ctx, table, c)
			if err != nil {
				return "", false, err
			}
			if ok {
				return c, true, nil
			}
		}
	}
	return "", false, nil
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
		c, ok, err := otherModeMarked(ctx, ipts[family], marks)
		if err != nil {
			continue // no tools for the family, or no table: nothing of ours there
		}
		if ok {
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
