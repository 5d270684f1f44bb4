package main

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"syscall"
	"time"

	libipvs "github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/kproxy/kproxy/bench/internal/load"
	"github.com/kproxy/kproxy/bench/internal/stats"
)

// The IPVS mode's floors, measured in the VM in a network namespace of their own with nothing
// else running: the kernel objects a proxy makes for N ClusterIP services × E endpoints,
// created with one netlink request each and no proxy logic (no API, no diff, no listing).
//
//	floor.ipvs_s    N virtual servers (moby/ipvs NewService) and N×E real servers
//	                (NewDestination): what the "raw netlink floor" names
//	floor.addrs_s   N /32 addresses on a dummy device (the VIPs on kube-ipvs0)
//	floor.ipset_s   N entries ip,tcp:80 in a hash:ip,port set (KUBE-CLUSTER-IP)
//	floor.all_s     the sum: every object of the load
const floorNS = "kpbv-floor"

// floorVIP is the i-th synthetic ClusterIP (100.100.0.0/16, the sandbox's service CIDR).
func floorVIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{100, 100, byte(1 + i/250), byte(1 + i%250)})
}

func measureIPVSFloors(n, e int, floors map[string]float64) error {
	_ = exec.Command("/usr/bin/ip", "netns", "del", floorNS).Run()
	if out, err := exec.Command("/usr/bin/ip", "netns", "add", floorNS).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %w %s", floorNS, err, out)
	}
	defer func() { _ = exec.Command("/usr/bin/ip", "netns", "del", floorNS).Run() }()
	// IPVS refuses real servers (EINVAL) in a namespace whose lo is down.
	if out, err := exec.Command("/usr/bin/ip", "-n", floorNS, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("lo up in %s: %w %s", floorNS, err, out)
	}
	path := "/run/netns/" + floorNS
	h, err := libipvs.New(path)
	if err != nil {
		return fmt.Errorf("IPVS socket in %s: %w", floorNS, err)
	}
	defer h.Close()
	t0 := time.Now()
	for i := 0; i < n; i++ {
		svc := &libipvs.Service{AddressFamily: syscall.AF_INET, Protocol: syscall.IPPROTO_TCP,
			Address: net.IP(floorVIP(i).AsSlice()), Port: servicePort, SchedName: "rr", Netmask: 0xffffffff}
		if err := h.NewService(svc); err != nil {
			return fmt.Errorf("floor: add virtual server %v: %w", svc.Address, err)
		}
		for k := 0; k < e; k++ {
			d := &libipvs.Destination{AddressFamily: syscall.AF_INET, Address: net.IP(load.EndpointAddr(i*e + k).AsSlice()),
				Port: targetPort, Weight: 1, ConnectionFlags: libipvs.ConnectionFlagMasq}
			if err := h.NewDestination(svc, d); err != nil {
				return fmt.Errorf("floor: add real server %v to %v: %w", d.Address, svc.Address, err)
			}
		}
	}
	floors["floor.ipvs_s"] = stats.Round(time.Since(t0).Seconds(), 3)

	ns, err := netns.GetFromPath(path)
	if err != nil {
		return err
	}
	defer func() { _ = ns.Close() }()
	nl, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE, unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", floorNS, err)
	}
	defer nl.Close()
	dummy := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "kube-ipvs0"}}
	if err := nl.LinkAdd(dummy); err != nil {
		return fmt.Errorf("floor: add dummy: %w", err)
	}
	link, err := nl.LinkByName("kube-ipvs0")
	if err != nil {
		return err
	}
	t1 := time.Now()
	for i := 0; i < n; i++ {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(floorVIP(i).AsSlice()), Mask: net.CIDRMask(32, 32)}}
		if err := nl.AddrAdd(link, a); err != nil {
			return fmt.Errorf("floor: add address %v: %w", a, err)
		}
	}
	floors["floor.addrs_s"] = stats.Round(time.Since(t1).Seconds(), 3)

	if err := nl.IpsetCreate("KUBE-CLUSTER-IP", "hash:ip,port", netlink.IpsetCreateOptions{Family: unix.AF_INET}); err != nil {
		return fmt.Errorf("floor: create set: %w", err)
	}
	t2 := time.Now()
	proto, port := uint8(unix.IPPROTO_TCP), uint16(servicePort)
	for i := 0; i < n; i++ {
		if err := nl.IpsetAdd("KUBE-CLUSTER-IP", &netlink.IPSetEntry{IP: net.IP(floorVIP(i).AsSlice()), Protocol: &proto, Port: &port}); err != nil {
			return fmt.Errorf("floor: add set entry %v: %w", floorVIP(i), err)
		}
	}
	floors["floor.ipset_s"] = stats.Round(time.Since(t2).Seconds(), 3)
	floors["floor.all_s"] = stats.Round(floors["floor.ipvs_s"]+floors["floor.addrs_s"]+floors["floor.ipset_s"], 3)
	// check: the floor's table holds what it should
	vs, err := h.GetServices()
	if err != nil {
		return err
	}
	if len(vs) != n {
		return fmt.Errorf("floor: %d virtual servers, want %d", len(vs), n)
	}
	floors["floor.virtual_servers"] = float64(len(vs))
	floors["floor.real_servers"] = float64(n * e)
	return nil
}
