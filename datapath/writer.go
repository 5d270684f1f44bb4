package datapath

// Writer is the kernel of one network namespace, as the reconciler sees it: the datapath's
// devices, its routes, and the neighbours and FDB entries of its VXLAN device. Handle is the
// real one (netlink), Fake holds state in memory and returns the kernel's errors (errnos from
// golang.org/x/sys/unix, wrapped: check with errors.Is).
//
// Delete methods return nil when the object is already gone.
type Writer interface {
	// ListDevices returns the devices whose name starts with DevicePrefix.
	ListDevices() ([]Device, error)
	// EnsureDevice creates d, or brings an existing device of that name to d (MTU, MAC,
	// addresses, up), recreating it when a property that cannot change in place (kind, VNI,
	// port, local address) differs. Addresses on it that d does not list are removed.
	EnsureDevice(d Device) error
	DeleteDevice(name string) error

	// ListRoutes returns the main table's routes with protocol RouteProtocol.
	ListRoutes() ([]Route, error)
	// AddRoute fails with EEXIST when any route to r.Dst exists (kproxy's or not).
	AddRoute(r Route) error
	// ReplaceRoute replaces the route to r.Dst.
	ReplaceRoute(r Route) error
	DeleteRoute(r Route) error

	// ListNeighs returns the permanent neighbours of dev.
	ListNeighs(dev string) ([]Neigh, error)
	SetNeigh(n Neigh) error
	DeleteNeigh(n Neigh) error

	// ListFDBs returns the permanent FDB entries of the VXLAN device dev.
	ListFDBs(dev string) ([]FDB, error)
	SetFDB(f FDB) error
	DeleteFDB(f FDB) error
}

// routeMatches reports whether the kernel's route got is the desired route want. A desired
// route without a device leaves the device to the kernel, whichever it picked.
func routeMatches(want, got Route) bool {
	return want.Dst == got.Dst && want.Gw == got.Gw && want.OnLink == got.OnLink &&
		(want.Dev == "" || want.Dev == got.Dev)
}
