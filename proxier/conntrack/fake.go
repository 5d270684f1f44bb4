package conntrack

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	v1 "k8s.io/api/core/v1"
)

// Fake is an in-memory conntrack table. Like the kernel it holds at most one entry per
// original tuple (per protocol and zone), lists by family and protocol, and deletes by both
// tuples, ignoring entries already gone.
type Fake struct {
	mu    sync.Mutex
	flows []Flow
}

var _ Interface = (*Fake)(nil)

// NewFake returns a Fake holding flows (see Insert).
func NewFake(flows ...Flow) (*Fake, error) {
	f := &Fake{}
	return f, f.Insert(flows...)
}

// Insert adds entries, as traffic would. Equivalent to: `conntrack -I ...`. An entry whose
// original tuple is already tracked is rejected, as the kernel does (EEXIST).
func (f *Fake) Insert(flows ...Flow) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fl := range flows {
		if err := validate(fl); err != nil {
			return err
		}
		if slices.ContainsFunc(f.flows, func(o Flow) bool { return sameOriginal(o, fl) }) {
			return fmt.Errorf("insert %s: %w", fl, ErrExists)
		}
		f.flows = append(f.flows, fl)
	}
	return nil
}

// Flows returns every entry, sorted.
func (f *Fake) Flows() []Flow {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := slices.Clone(f.flows)
	slices.SortFunc(out, compareFlows)
	return out
}

// List implements Interface.
func (f *Fake) List(ctx context.Context, family v1.IPFamily, protocols ...v1.Protocol) ([]Flow, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkFamilyProto(family, protocols); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Flow
	for _, fl := range f.flows {
		if slices.Contains(protocols, fl.Protocol) && fl.Family() == family {
			out = append(out, fl)
		}
	}
	slices.SortFunc(out, compareFlows)
	return out, nil
}

// Delete implements Interface.
func (f *Fake) Delete(ctx context.Context, flows []Flow) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	for _, fl := range flows {
		if err := validate(fl); err != nil {
			return 0, err
		}
	}
	del := make(map[Flow]struct{}, len(flows))
	for _, fl := range flows {
		del[fl] = struct{}{}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	f.flows = slices.DeleteFunc(f.flows, func(o Flow) bool {
		_, ok := del[o]
		if ok {
			n++
		}
		return ok
	})
	return n, nil
}

// sameOriginal reports whether two entries have one conntrack identity.
func sameOriginal(a, b Flow) bool {
	return a.Protocol == b.Protocol && a.Zone == b.Zone && a.Original == b.Original
}

// validate rejects what the kernel cannot hold: unknown protocols, invalid addresses, mixed
// families.
func validate(fl Flow) error {
	if _, ok := protoNumbers[fl.Protocol]; !ok {
		return fmt.Errorf("flow %s: protocol %q: %w", fl, fl.Protocol, ErrUnsupportedProtocol)
	}
	addrs := []netip.AddrPort{fl.Original.Src, fl.Original.Dst, fl.Reply.Src, fl.Reply.Dst}
	for _, a := range addrs {
		if !a.IsValid() || a.Addr().Is4In6() || a.Addr().Zone() != "" || familyOf(a.Addr()) != fl.Family() {
			return fmt.Errorf("flow %s: invalid or mixed-family address %s: %w", fl, a, ErrInvalidFlow)
		}
	}
	return nil
}

func checkFamilyProto(family v1.IPFamily, protocols []v1.Protocol) error {
	if family != v1.IPv4Protocol && family != v1.IPv6Protocol {
		return fmt.Errorf("list %q entries: %w", family, ErrUnsupportedProtocol)
	}
	if len(protocols) == 0 {
		return fmt.Errorf("list %s entries: no protocol: %w", family, ErrUnsupportedProtocol)
	}
	for _, p := range protocols {
		if _, ok := protoNumbers[p]; !ok {
			return fmt.Errorf("list %s %q entries: %w", family, p, ErrUnsupportedProtocol)
		}
	}
	return nil
}
