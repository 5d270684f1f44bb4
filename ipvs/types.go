package ipvs

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	v1 "k8s.io/api/core/v1"
)

// Flags are IPVS service flags (IP_VS_SVC_F_*), as upstream kube-proxy sets them.
type Flags uint32

// The flags kproxy sets or reads.
const (
	// FlagPersistent is session affinity (ClientIP): `ipvsadm -p TIMEOUT`.
	FlagPersistent Flags = 0x1
	// FlagHashed is set by the kernel on every service in its table; never written.
	FlagHashed Flags = 0x2
	// FlagSourceHash (IP_VS_SVC_F_SCHED_SH_FALLBACK/SCHED1) is what upstream sets for the mh
	// scheduler: hash on source address and port.
	FlagSourceHash Flags = 0x10
)

// VSKey identifies a virtual server: address, port and protocol, as `ipvsadm -A -t IP:PORT`.
type VSKey struct {
	IP       netip.Addr
	Port     uint16
	Protocol v1.Protocol // TCP, UDP or SCTP
}

// String is "TCP 100.100.0.10:80" (IPv6 "TCP [2001:db8::1]:80"), as ipvsadm -Ln prints.
func (k VSKey) String() string {
	return string(k.Protocol) + " " + netip.AddrPortFrom(k.IP, k.Port).String()
}

// compareVSKey orders keys by address, port, then protocol.
func compareVSKey(a, b VSKey) int {
	if c := a.IP.Compare(b.IP); c != 0 {
		return c
	}
	if a.Port != b.Port {
		return int(a.Port) - int(b.Port)
	}
	switch {
	case a.Protocol < b.Protocol:
		return -1
	case a.Protocol > b.Protocol:
		return 1
	}
	return 0
}

// VirtualServer is one IPVS service: the key and the options kproxy sets.
type VirtualServer struct {
	VSKey
	// Scheduler is the IPVS scheduler name (rr, wrr, ...).
	Scheduler string
	// Flags without FlagHashed.
	Flags Flags
	// Timeout is the persistence timeout in seconds (with FlagPersistent), else 0.
	Timeout uint32
}

// sameOptions reports whether two virtual servers with the same key need no update.
func (vs VirtualServer) sameOptions(o VirtualServer) bool {
	return vs.Scheduler == o.Scheduler && vs.Flags == o.Flags && vs.Timeout == o.Timeout
}

// String is the key plus the options, e.g. "TCP 100.100.0.10:80 rr persistent 10800".
func (vs VirtualServer) String() string {
	s := vs.VSKey.String() + " " + vs.Scheduler
	if vs.Flags&FlagPersistent != 0 {
		s += " persistent " + strconv.FormatUint(uint64(vs.Timeout), 10)
	}
	if f := vs.Flags &^ FlagPersistent; f != 0 {
		s += fmt.Sprintf(" flags %#x", uint32(f))
	}
	return s
}

// RealServer is one IPVS destination of a virtual server (masquerading forward).
type RealServer struct {
	Addr   netip.AddrPort
	Weight int
	// ActiveConn and InactiveConn are the kernel's connection counters (read only).
	ActiveConn, InactiveConn int
}

// String is "100.64.1.2:8080 w1".
func (rs RealServer) String() string { return fmt.Sprintf("%s w%d", rs.Addr, rs.Weight) }

// Schedulers are the IPVS schedulers kproxy accepts (--ipvs-scheduler).
var Schedulers = []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "sh", "dh", "sed", "nq", "mh"}

// DefaultScheduler is used when Config.Scheduler is empty, as upstream.
const DefaultScheduler = "rr"

// ValidateScheduler returns an error for a scheduler that is not one of Schedulers. The empty
// string is valid (it means DefaultScheduler).
func ValidateScheduler(name string) error {
	if name == "" || slices.Contains(Schedulers, name) {
		return nil
	}
	return fmt.Errorf("%w: %q (want one of %v)", ErrUnknownScheduler, name, Schedulers)
}
