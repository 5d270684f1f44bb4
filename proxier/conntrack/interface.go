package conntrack

import (
	"context"
	"errors"

	v1 "k8s.io/api/core/v1"
)

// Interface reads and deletes conntrack entries in one network namespace.
type Interface interface {
	// List returns the entries of one address family and of any of protocols (at least
	// one), in one dump of the table. Equivalent to: `conntrack -L -f ipv4 -p udp`.
	List(ctx context.Context, family v1.IPFamily, protocols ...v1.Protocol) ([]Flow, error)
	// Delete removes the given entries, matching protocol, both tuples and zone; entries
	// already gone are not an error. It returns how many were deleted (including those that
	// vanished between the lookup and the delete, as the kernel does not tell them apart).
	// Equivalent to one `conntrack -D` per flow.
	Delete(ctx context.Context, flows []Flow) (int, error)
}

// ErrUnsupportedProtocol is returned for a protocol other than TCP, UDP and SCTP, or an
// address family other than IPv4 and IPv6.
var ErrUnsupportedProtocol = errors.New("unsupported protocol or family")

// ErrExists is returned when inserting an entry whose original tuple is already tracked.
var ErrExists = errors.New("conntrack entry exists")

// ErrInvalidFlow is returned for a flow with an invalid address or mixed address families.
var ErrInvalidFlow = errors.New("invalid conntrack flow")

// protoNumbers are the IANA protocol numbers of the protocols kproxy knows.
var protoNumbers = map[v1.Protocol]uint8{
	v1.ProtocolTCP:  6,
	v1.ProtocolUDP:  17,
	v1.ProtocolSCTP: 132,
}

func protocolOf(n uint8) (v1.Protocol, bool) {
	for p, num := range protoNumbers {
		if num == n {
			return p, true
		}
	}
	return "", false
}
