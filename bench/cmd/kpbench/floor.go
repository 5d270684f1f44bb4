package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/bench/internal/load"
	"github.com/kproxy/kproxy/bench/internal/stats"
	"github.com/kproxy/kproxy/e2e/harness"
	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/iptables"
	iptproxy "github.com/kproxy/kproxy/iptables/proxy"
)

// The tool floors: what iptables-restore alone costs for the rules kproxy writes for the load
// (rendered by kproxy's own renderer, iptables/proxy, with the daemon's configuration in the
// sandbox), in a network namespace of its own with no proxy, apiserver or poller:
//
//	floor.one_piece_s       every chain in one iptables-restore, into empty tables
//	floor.batched_s         the restores kproxy's first sync runs (FirstSyncRestores: 100
//	                        services per restore, then the shared chains), into empty tables
//	floor.one_service_ms    one service's chains rewritten (--noflush), the whole load in
//	                        place: what a one-endpoint change must write at least (median of 5)
//	floor.save_nat_ms       iptables-save -t nat of that table (median of 3)
//
// Service ClusterIPs are synthetic (100.100.0.0/16 in order) since they do not change the
// cost; endpoints are the load's.

// floorInput is the load as kproxy's renderer sees it.
func floorInput(n, e int) (iptproxy.Input, []types.NamespacedName) {
	in := iptproxy.Input{Services: endpoints.ServiceMap{}, Endpoints: endpoints.EndpointsMap{},
		Node:   endpoints.NodeInfo{Name: "floor"},
		Config: iptproxy.Config{Family: iptables.IPv4, ClusterCIDR: harness.ClusterCIDR, MasqueradeRandomFully: true}}
	var names []types.NamespacedName
	for i := range n {
		nn := types.NamespacedName{Namespace: benchNS, Name: fmt.Sprintf("svc-%05d", i)}
		names = append(names, nn)
		name := endpoints.ServicePortName{NamespacedName: nn, Protocol: v1.ProtocolTCP}
		vip := netip.AddrFrom4([4]byte{100, 100, byte(1 + i/250), byte(1 + i%250)})
		in.Services[name] = &endpoints.ServicePort{Name: name, ClusterIP: vip, Port: servicePort, Protocol: v1.ProtocolTCP}
		for k := range e {
			in.Endpoints[name] = append(in.Endpoints[name], endpoints.Endpoint{IP: load.EndpointAddr(i*e + k),
				Port: targetPort, Ready: true, Serving: true})
		}
	}
	return in, names
}

// measureFloors fills floor.* figures; a restore past capd is "> cap" (in capped).
func measureFloors(ctx context.Context, prefix string, n, e int, capd time.Duration, figs map[string]float64) (capped []string, err error) {
	in, names := floorInput(n, e)
	rules := iptproxy.Render(in)
	one := rules.Transaction().Bytes()
	batches := iptproxy.FirstSyncRestores(in)
	figs["floor.restores"] = float64(len(batches))
	figs["floor.nat_chains"] = float64(len(rules.NAT))

	// In one piece.
	ns := prefix + "-floor"
	if err := newNetns(ns); err != nil {
		return nil, err
	}
	t0 := time.Now()
	err = restore(ctx, ns, one, capd)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		capped = append(capped, "floor.one_piece_s")
		logf("  floor: one restore of %d chains did not finish within %v", len(rules.NAT), capd)
	case err != nil:
		return capped, err
	default:
		figs["floor.one_piece_s"] = stats.Round(time.Since(t0).Seconds(), 2)
		logf("  floor: one restore of every chain: %.2fs", figs["floor.one_piece_s"])
	}
	if err := delNetns(ns); err != nil {
		return capped, err
	}

	// In batches, then one service, then a read.
	if err := newNetns(ns); err != nil {
		return capped, err
	}
	defer func() { _ = delNetns(ns) }()
	t0 = time.Now()
	for i, b := range batches {
		if err := restore(ctx, ns, b, capd); err != nil {
			return capped, fmt.Errorf("floor batch %d of %d: %w", i+1, len(batches), err)
		}
	}
	figs["floor.batched_s"] = stats.Round(time.Since(t0).Seconds(), 2)
	var ones []float64
	for k := range 5 {
		svc := names[(k*n/5+n/10)%n]
		tx := &iptables.Transaction{}
		for _, c := range rules.NAT {
			if c.Service == svc {
				tx.Declare(iptables.TableNAT, c.Chain)
				for _, r := range c.Rules {
					tx.Append(iptables.TableNAT, c.Chain, r)
				}
			}
		}
		t0 := time.Now()
		if err := restore(ctx, ns, tx.Bytes(), capd); err != nil {
			return capped, fmt.Errorf("floor one service: %w", err)
		}
		ones = append(ones, float64(time.Since(t0).Microseconds())/1000)
	}
	figs["floor.one_service_ms"] = stats.Round(stats.Median(ones), 1)
	var saves []float64
	for range 3 {
		t0 := time.Now()
		if _, err := harness.Exec(ctx, ns, "iptables-save", "-t", "nat"); err != nil {
			return capped, err
		}
		saves = append(saves, float64(time.Since(t0).Microseconds())/1000)
	}
	figs["floor.save_nat_ms"] = stats.Round(stats.Median(saves), 1)
	logf("  floor: %d batched restores %.2fs, one service %.1fms, iptables-save -t nat %.0fms",
		len(batches), figs["floor.batched_s"], figs["floor.one_service_ms"], figs["floor.save_nat_ms"])
	return capped, nil
}

// restore runs iptables-restore --noflush -w in ns with data, for at most capd.
func restore(ctx context.Context, ns string, data []byte, capd time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, capd)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+harness.NetnsPath(ns), "--", "iptables-restore", "--noflush", "-w")
	cmd.Stdin = bytes.NewReader(data)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("iptables-restore in %s: %w: %s", ns, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func newNetns(name string) error {
	_ = delNetns(name)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %w: %s", name, err, out)
	}
	return nil
}

func delNetns(name string) error {
	out, err := exec.Command("ip", "netns", "del", name).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "No such file") {
		return fmt.Errorf("ip netns del %s: %w: %s", name, err, out)
	}
	return nil
}
