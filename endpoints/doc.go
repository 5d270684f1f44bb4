// Package endpoints is kproxy's pure service/endpoint model: the types every backend
// programs from (ServicePortName, ServicePort, Endpoint, Snapshot), the Tracker that folds
// Service and EndpointSlice events into that model, and CategorizeEndpoints, which picks the
// endpoints one node may use for one service port.
//
// # Imports
//
// This package takes typed API objects (k8s.io/api core/v1 and discovery/v1) and returns plain
// values. It must not import client-go (informers and clientsets live in proxier), a backend
// (iptables, ipvs, ipset), the reconciler, or any kernel library (netlink, ipvs). It reads no
// clock, environment or flag: the Tracker's only inputs are the events it is handed.
//
// # How the Tracker works
//
// Every event is first converted, outside the lock, into plain values: a Service into one
// *ServicePort per valid port of the tracker's IP family (service.go), an EndpointSlice into its
// ports and endpoints (slice.go). Invalid parts are dropped and reported through
// TrackerOptions.OnInvalid (reasons: the Reason* constants), in one call per object version
// however many of its parts are bad; the rest of the object is kept.
// Skipped objects (ExternalName, headless, no cluster IP of our family, other-family or FQDN
// slices, objects carrying the service-proxy-name label, slices with the headless label) are
// dropped silently, as kube-proxy's informer selectors would.
//
// The Tracker keeps one entry per service (namespace/name) holding the service's current ports,
// its slices by name, the endpoints merged from those slices (deduplicated, sorted), and what the
// previous Checkout returned for it. An event rebuilds only its own service's entry, then
// compares the result with what was last checked out: equal (a no-op update, or a change
// reverted before Checkout) takes the service off the change set, different puts it on. So an
// event costs O(size of its service), Pending is O(1), and Checkout is O(number of service
// ports) for copying the flat maps plus O(changed services).
//
// Values handed out (*ServicePort, []Endpoint) are never modified afterwards: a change builds
// new ones. The maps of a Snapshot are new at every Checkout and belong to the caller.
//
// # Categorisation
//
// CategorizeEndpoints (categorize.go) is upstream kube-proxy's: usable means Ready, falling back
// to Serving+Terminating independently for the cluster and the local set; the local set is
// computed only for services with a Local traffic policy; topology hints (node hints, then zone
// hints) narrow the cluster set when every ready endpoint carries them and some are meant for
// this node or its zone. Categorized.Internal and Categorized.External pick the set each kind
// of traffic uses; LocalReadyEndpoints gives the health-check node port server its counts. It
// costs O(endpoints of the port) per call.
package endpoints
