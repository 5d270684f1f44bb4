package endpoints

import (
	"fmt"
	"net/netip"
	"strings"

	v1 "k8s.io/api/core/v1"
	netutils "k8s.io/utils/net"
)

// Reasons passed to TrackerOptions.OnInvalid. They are event reasons, so CamelCase.
const (
	ReasonInvalidClusterIP       = "InvalidClusterIP"
	ReasonInvalidPort            = "InvalidPort"
	ReasonInvalidProtocol        = "InvalidProtocol"
	ReasonInvalidNodePort        = "InvalidNodePort"
	ReasonDuplicatePort          = "DuplicatePort"
	ReasonInvalidExternalIP      = "InvalidExternalIP"
	ReasonInvalidLoadBalancerIP  = "InvalidLoadBalancerIP"
	ReasonInvalidSourceRange     = "InvalidLoadBalancerSourceRange"
	ReasonInvalidSessionAffinity = "InvalidSessionAffinityTimeout"
	ReasonInvalidHealthCheckPort = "InvalidHealthCheckNodePort"
	ReasonMissingServiceName     = "MissingServiceName"
	ReasonInvalidEndpointPort    = "InvalidEndpointPort"
	ReasonInvalidEndpointAddress = "InvalidEndpointAddress"
)

// Kinds passed to TrackerOptions.OnInvalid.
const (
	kindService       = "Service"
	kindEndpointSlice = "EndpointSlice"
)

// issue is one part of an API object skipped as invalid.
type issue struct {
	Reason  string
	Message string
}

// issues collects what a conversion skipped, in the order found.
type issues []issue

func (is *issues) add(reason, format string, args ...any) {
	*is = append(*is, issue{Reason: reason, Message: fmt.Sprintf(format, args...)})
}

// parseIP parses an API IP address. Like kube-proxy it accepts the legacy leading-zero IPv4
// form ("010.0.0.1" is 10.0.0.1) and treats IPv4-mapped IPv6 addresses as IPv4. Addresses
// with a zone ("fe80::1%eth0") are rejected.
func parseIP(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), a.Zone() == ""
	}
	ip := netutils.ParseIPSloppy(s)
	if ip == nil {
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}

// parsePrefix parses an API CIDR (surrounding spaces allowed, as the API validation lets them
// through) and masks it: "10.0.0.1/8" is 10.0.0.0/8.
func parsePrefix(s string) (netip.Prefix, bool) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), true
	}
	_, ipnet, err := netutils.ParseCIDRSloppy(s)
	if err != nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(ipnet.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := ipnet.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones).Masked(), true
}

// familyOf returns the IP family of a (unmapped) address.
func familyOf(a netip.Addr) v1.IPFamily {
	if a.Is4() {
		return v1.IPv4Protocol
	}
	return v1.IPv6Protocol
}

// knownProtocol returns the protocol to use ("" is the API default, TCP) and whether kube-proxy
// can program it.
func knownProtocol(p v1.Protocol) (v1.Protocol, bool) {
	switch p {
	case "":
		return v1.ProtocolTCP, true
	case v1.ProtocolTCP, v1.ProtocolUDP, v1.ProtocolSCTP:
		return p, true
	}
	return p, false
}

func validPort(p int32) bool { return p >= 1 && p <= 65535 }
