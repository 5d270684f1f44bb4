package datapath

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
	"net/netip"
)

// Reconciler brings one node's kernel to a Plan: it diffs the datapath's devices, routes,
// neighbours and FDB entries against the plan and applies only the difference, one netlink
// message per changed object. It touches only what is its own: devices named kproxy.*,
// routes with protocol RouteProtocol, and neighbour and FDB entries on its VXLAN device.
// Not safe for concurrent use; the sync loop calls Sync from one goroutine.
type Reconciler struct {
	w        Writer
	reported map[Skip]bool
}

// Result counts what one Sync changed.
type Result struct {
	Added, Updated, Deleted int
	// NewSkips are the skipped peers not reported by an earlier Sync, so that the caller
	// logs each once (a peer that stops being skipped and is skipped again is new again).
	NewSkips []Skip
}

// NewReconciler returns a Reconciler writing through w.
func NewReconciler(w Writer) *Reconciler {
	return &Reconciler{w: w, reported: map[Skip]bool{}}
}

// Sync makes the kernel hold p. Order: the device first; stale routes are deleted before the
// neighbours and FDB entries they resolve through, and new routes are added after them, so
// that no route ever points at a VTEP the kernel cannot resolve. An error on one object does
// not stop the others; all errors are returned joined.
func (r *Reconciler) Sync(ctx context.Context, p Plan) (Result, error) {
	var res Result
	res.NewSkips = r.newSkips(p.Skipped)
	if err := ctx.Err(); err != nil {
		return res, err
	}
	var errs []error
	if err := r.syncDevices(p.Device, &res); err != nil {
		// Without the device none of its routes, neighbours or FDB entries can be written.
		return res, err
	}
	add, replace, err := r.syncRoutes(p.Routes, &res)
	errs = append(errs, err)
	if p.Device != nil && p.Device.Kind == KindVXLAN {
		errs = append(errs, r.syncNeighs(p.Device.Name, p.Neighs, &res))
		errs = append(errs, r.syncFDBs(p.Device.Name, p.FDBs, &res))
	}
	for _, rt := range replace {
		errs = append(errs, count(r.w.ReplaceRoute(rt), &res.Updated, "replace route %s", rt))
	}
	for _, rt := range add {
		err := r.w.AddRoute(rt)
		if errors.Is(err, unix.EEXIST) {
			err = fmt.Errorf("add route %s: a route to %s exists and is not kproxy's (proto %d): %w",
				rt, rt.Dst, RouteProtocol, err)
		}
		errs = append(errs, count(err, &res.Added, "add route %s", rt))
	}
	return res, errors.Join(errs...)
}

func (r *Reconciler) newSkips(skips []Skip) []Skip {
	var out []Skip
	now := make(map[Skip]bool, len(skips))
	for _, s := range skips {
		now[s] = true
		if !r.reported[s] {
			out = append(out, s)
		}
	}
	r.reported = now
	return out
}

func (r *Reconciler) syncDevices(want *Device, res *Result) error {
	have, err := r.w.ListDevices()
	if err != nil {
		return fmt.Errorf("list devices: %w", err)
	}
	var errs []error
	for _, d := range have {
		if want == nil || d.Name != want.Name {
			errs = append(errs, count(r.w.DeleteDevice(d.Name), &res.Deleted, "delete device %s", d.Name))
		}
	}
	if want != nil {
		i := slices.IndexFunc(have, func(d Device) bool { return d.Name == want.Name })
		switch {
		case i < 0:
			errs = append(errs, count(r.w.EnsureDevice(*want), &res.Added, "add device %s", want.Name))
		case !deviceEqual(have[i], *want):
			errs = append(errs, count(r.w.EnsureDevice(*want), &res.Updated, "update device %s", want.Name))
		}
	}
	return errors.Join(errs...)
}

// syncRoutes deletes stale routes and returns the routes to add and to replace.
func (r *Reconciler) syncRoutes(want []Route, res *Result) (add, replace []Route, err error) {
	have, err := r.w.ListRoutes()
	if err != nil {
		return nil, nil, fmt.Errorf("list routes: %w", err)
	}
	byDst := make(map[string]Route, len(have))
	for _, rt := range have {
		byDst[rt.Dst.String()] = rt
	}
	wanted := make(map[string]bool, len(want))
	for _, rt := range want {
		k := rt.Dst.String()
		wanted[k] = true
		got, ok := byDst[k]
		switch {
		case !ok:
			add = append(add, rt)
		case !routeMatches(rt, got):
			replace = append(replace, rt)
		}
	}
	var errs []error
	for _, rt := range have {
		if !wanted[rt.Dst.String()] {
			errs = append(errs, count(r.w.DeleteRoute(rt), &res.Deleted, "delete route %s", rt))
		}
	}
	return add, replace, errors.Join(errs...)
}

func (r *Reconciler) syncNeighs(dev string, want []Neigh, res *Result) error {
	have, err := r.w.ListNeighs(dev)
	if err != nil {
		return fmt.Errorf("list neighbours of %s: %w", dev, err)
	}
	return diffApply(have, want, func(n Neigh) string { return n.IP.String() },
		func(n Neigh) error { return r.w.SetNeigh(n) }, func(n Neigh) error { return r.w.DeleteNeigh(n) }, res)
}

func (r *Reconciler) syncFDBs(dev string, want []FDB, res *Result) error {
	have, err := r.w.ListFDBs(dev)
	if err != nil {
		return fmt.Errorf("list fdb of %s: %w", dev, err)
	}
	return diffApply(have, want, func(f FDB) string { return f.MAC.String() },
		func(f FDB) error { return r.w.SetFDB(f) }, func(f FDB) error { return r.w.DeleteFDB(f) }, res)
}

// diffApply sets the wanted objects that are missing or differ (same key), then deletes
// the ones no longer wanted.
func diffApply[T interface {
	comparable
	fmt.Stringer
}](have, want []T, key func(T) string, set, del func(T) error, res *Result) error {
	haveBy := make(map[string]T, len(have))
	for _, h := range have {
		haveBy[key(h)] = h
	}
	wanted := make(map[string]bool, len(want))
	var errs []error
	for _, w := range want {
		k := key(w)
		wanted[k] = true
		h, ok := haveBy[k]
		switch {
		case !ok:
			errs = append(errs, count(set(w), &res.Added, "set %s", w))
		case h != w:
			errs = append(errs, count(set(w), &res.Updated, "set %s", w))
		}
	}
	for _, h := range have {
		if !wanted[key(h)] {
			errs = append(errs, count(del(h), &res.Deleted, "delete %s", h))
		}
	}
	return errors.Join(errs...)
}

// count increments n when err is nil, else wraps err with the action.
func count(err error, n *int, format string, args ...any) error {
	if err != nil {
		return fmt.Errorf(format+": %w", append(args, err)...)
	}
	*n++
	return nil
}

func deviceEqual(a, b Device) bool {
	return a.Name == b.Name && a.Kind == b.Kind && a.VNI == b.VNI && a.Port == b.Port &&
		a.Local == b.Local && a.MTU == b.MTU && a.MAC == b.MAC && slices.Equal(sortedPrefixes(a.Addrs), sortedPrefixes(b.Addrs))
}

func sortedPrefixes(ps []netip.Prefix) []netip.Prefix {
	out := slices.Clone(ps)
	slices.SortFunc(out, comparePrefix)
	return out
}

// String renders a Result for a log line.
func (res Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "added=%d updated=%d deleted=%d", res.Added, res.Updated, res.Deleted)
	return b.String()
}
