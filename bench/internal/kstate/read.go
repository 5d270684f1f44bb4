package kstate

import (
	"context"
	"fmt"
	"strings"

	"github.com/kproxy/kproxy/e2e/harness"
)

// Read reads the whole of the node's service table once: every VIP and every endpoint.
// Equivalent to: iptables-save -t nat, or nft list table ip kube-proxy.
func Read(ctx context.Context, node string, kind Kind) (State, error) {
	switch kind {
	case IPTables:
		out, err := harness.Exec(ctx, node, "iptables-save", "-t", "nat")
		if err != nil {
			return newState(), err
		}
		return ParseIPTablesSave(out), nil
	case NFTables:
		out, err := nftList(ctx, node, "table", "ip", "kube-proxy")
		if err != nil {
			return newState(), err
		}
		return ParseNFT(out), nil
	}
	return newState(), fmt.Errorf("kernel kind %q", kind)
}

// ReadVIPs reads only the service capture rules: the ClusterIPs that jump to a service
// chain. Much cheaper than Read at 10,000 services with iptables-nft (which lists one chain
// without fetching the others' rules). A VIP's rule only exists once its service chain does
// (the kernel rejects a jump to a missing chain), but the endpoints are checked by Read.
// Equivalent to: iptables -t nat -S KUBE-SERVICES, or nft list map ip kube-proxy service-ips.
func ReadVIPs(ctx context.Context, node string, kind Kind) (State, error) {
	switch kind {
	case IPTables:
		out, err := harness.Exec(ctx, node, "iptables", "-w", "-t", "nat", "-S", "KUBE-SERVICES")
		switch {
		case err != nil && strings.Contains(out, "No chain/target/match"):
			return State{VIPs: map[string]bool{}}, nil
		case err != nil && strings.Contains(out, "is incompatible"):
			// What iptables-nft 1.8.9 says when the nat table does not exist (yet, or
			// flushed): read everything instead.
			return Read(ctx, node, kind)
		case err != nil:
			return State{VIPs: map[string]bool{}}, err
		}
		return ParseIPTablesVIPs(out), nil
	case NFTables:
		out, err := nftList(ctx, node, "map", "ip", "kube-proxy", "service-ips")
		if err != nil {
			return State{VIPs: map[string]bool{}}, err
		}
		return ParseNFTVIPs(out), nil
	}
	return State{VIPs: map[string]bool{}}, fmt.Errorf("kernel kind %q", kind)
}

// nftList runs nft list ...; a table or map that does not exist (yet, or flushed) reads as
// empty.
func nftList(ctx context.Context, node string, what ...string) (string, error) {
	out, err := harness.Exec(ctx, node, append([]string{"nft", "list"}, what...)...)
	if err != nil && strings.Contains(out, "No such file or directory") {
		return "", nil
	}
	return out, err
}
