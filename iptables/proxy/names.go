package proxy

import (
	"crypto/sha256"
	"encoding/base32"
	"strings"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/iptables"
)

// Chain name prefixes. kproxy writes KUBE-SVC- and KUBE-SEP- chains; the others are
// kube-proxy's other per-service chains, owned (and deleted when stale) so that taking over a
// node from upstream kube-proxy leaves no chain that still jumps to a deleted one.
const (
	serviceChainPrefix  = "KUBE-SVC-"
	endpointChainPrefix = "KUBE-SEP-"
)

var ownedServicePrefixes = []string{serviceChainPrefix, endpointChainPrefix, "KUBE-EXT-", "KUBE-FW-", "KUBE-SVL-", "KUBE-XLB-"}

// isServiceChain reports whether c is a per-service chain this package owns.
func isServiceChain(c iptables.Chain) bool {
	for _, p := range ownedServicePrefixes {
		if strings.HasPrefix(string(c), p) {
			return true
		}
	}
	return false
}

// hashSuffix is kube-proxy's chain name hash: the first 16 characters of the base32 encoding
// of the SHA-256 of the concatenated parts.
func hashSuffix(parts ...string) string {
	hash := sha256.Sum256([]byte(strings.Join(parts, "")))
	return base32.StdEncoding.EncodeToString(hash[:])[:16]
}

// protocolName is the protocol as it appears in rules and chain hashes ("tcp").
func protocolName(sp *endpoints.ServicePort) string { return strings.ToLower(string(sp.Protocol)) }

// serviceChainName is kube-proxy's KUBE-SVC- chain of a service port: the hash of
// "ns/name:port" + protocol.
func serviceChainName(name endpoints.ServicePortName, protocol string) iptables.Chain {
	return iptables.Chain(serviceChainPrefix + hashSuffix(name.String(), protocol))
}

// endpointChainName is kube-proxy's KUBE-SEP- chain of one endpoint of a service port: the
// hash of "ns/name:port" + protocol + "ip:port".
func endpointChainName(name endpoints.ServicePortName, protocol string, ep endpoints.Endpoint) iptables.Chain {
	return iptables.Chain(endpointChainPrefix + hashSuffix(name.String(), protocol, ep.String()))
}

// kube-proxy's other per-service chains: KUBE-SVL- (local-policy endpoints), KUBE-EXT-
// (external destinations), KUBE-FW- (loadBalancerSourceRanges). Same hash as KUBE-SVC-.
const (
	localChainPrefix    = "KUBE-SVL-"
	externalChainPrefix = "KUBE-EXT-"
	firewallChainPrefix = "KUBE-FW-"
)

func localChainName(name endpoints.ServicePortName, protocol string) iptables.Chain {
	return iptables.Chain(localChainPrefix + hashSuffix(name.String(), protocol))
}

func externalChainName(name endpoints.ServicePortName, protocol string) iptables.Chain {
	return iptables.Chain(externalChainPrefix + hashSuffix(name.String(), protocol))
}

func firewallChainName(name endpoints.ServicePortName, protocol string) iptables.Chain {
	return iptables.Chain(firewallChainPrefix + hashSuffix(name.String(), protocol))
}
