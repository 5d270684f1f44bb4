package datapath

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/datapath/cni"
	"github.com/kproxy/kproxy/iptables"
	"github.com/kproxy/kproxy/proxier"
)

// Underlay is the interface the node's pod traffic leaves by: its name, the node's address on
// it with the subnet's prefix length (peers inside it are on the same L2 subnet), its MTU.
type Underlay struct {
	Interface string
	Prefix    netip.Prefix
	MTU       int
}

// UnderlayFinder finds the underlay: the interface named ifname, or, when ifname is empty,
// the interface holding ip. Handle implements it over netlink.
type UnderlayFinder interface {
	FindUnderlay(ifname string, ip netip.Addr) (Underlay, error)
}

// ErrNotSynced is what Agent.Ready reports before the first sync.
var ErrNotSynced = errors.New("datapath not synced yet")

// AgentOptions configure an Agent.
type AgentOptions struct {
	Client   kubernetes.Interface
	NodeName string
	Config   Config
	// NetNSPath is the network namespace to program ("" = the daemon's own).
	NetNSPath string
	// CNIConfDir receives 10-kproxy.conflist ("" = do not write it).
	CNIConfDir string
	// UnderlayInterface is the interface peers reach this node by ("" = the one holding the
	// node IP). When set, its address is the node IP published to peers.
	UnderlayInterface string
	// IPTables (IPv4) and IP6Tables (optional) receive the egress masquerade chain; nil
	// skips that family.
	IPTables  iptables.Interface
	IP6Tables iptables.Interface
	// SyncPeriod is the longest time between two syncs: drift is fixed within it.
	SyncPeriod time.Duration

	// Writer and Underlay replace the netlink Handle (tests). Both or neither.
	Writer   Writer
	Underlay UnderlayFinder
}

// Agent keeps one node's datapath in step with the Node objects: a Node informer requests a
// sync whenever a node's datapath-relevant fields change (pod CIDRs, node IP, kproxy.io
// annotations); each sync converts every Node (NodeFromAPI), computes the Plan, reconciles
// the kernel, publishes this node's annotations, writes the CNI conflist and the egress
// masquerade chain. A proxier.Runner drives it (at most once a second, at least once per
// SyncPeriod, with backoff on failure).
type Agent struct {
	opts     AgentOptions
	writer   Writer
	underlay UnderlayFinder
	closer   func() error
	rec      *Reconciler
	lister   listersv1.NodeLister
	runner   *proxier.Runner
	// minInterval is the runner's shortest time between syncs (tests shorten it).
	minInterval time.Duration

	// logged remembers the bad Node objects already reported, so that each is logged once.
	logged map[string]string
	// masqueradeGen is, per family, the nf_tables generation at which the masquerade chain and
	// its jump were last found or written as planned (masqueradePlan the plan), so that a sync
	// with nothing changed in the kernel does not read the nat table (1.4 s at 10,000
	// services) to find them in place.
	masqueradeGen  map[iptables.Family]uint32
	masqueradePlan map[iptables.Family][]Rule
	// published is the patch of this node's annotations the last publish sent, and
	// publishedOn the node's resourceVersion it was computed from: while the lister still
	// shows that version (its watch has not delivered the patch yet), the patch is not sent
	// again.
	published   map[string]any
	publishedOn string

	mu    sync.Mutex
	ready error
}

// NewAgent builds an Agent; it opens the netlink handle (unless opts.Writer is set) but
// starts nothing until Run.
func NewAgent(opts AgentOptions) (*Agent, error) {
	if opts.Client == nil || opts.NodeName == "" {
		return nil, errors.New("datapath agent: a client and a node name are required")
	}
	if opts.SyncPeriod <= 0 {
		opts.SyncPeriod = 30 * time.Second
	}
	a := &Agent{opts: opts, writer: opts.Writer, underlay: opts.Underlay, closer: func() error { return nil },
		logged: map[string]string{}, ready: ErrNotSynced, minInterval: time.Second}
	if (a.writer == nil) != (a.underlay == nil) {
		return nil, errors.New("datapath agent: Writer and Underlay are set together")
	}
	if a.writer == nil {
		path := opts.NetNSPath
		if path == "" {
			path = "/proc/self/ns/net"
		}
		h, err := NewHandle(path)
		if err != nil {
			return nil, err
		}
		a.writer, a.underlay, a.closer = h, h, h.Close
	}
	a.rec = NewReconciler(a.writer)
	return a, nil
}

// Ready is nil once the datapath is programmed, else why not (ErrNotSynced, ErrNoPodCIDR,
// the last sync's error). For /healthz.
func (a *Agent) Ready() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ready
}

func (a *Agent) setReady(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ready = err
}

// Run starts the Node informer, waits for its cache and syncs until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	defer func() { _ = a.closer() }()
	factory := informers.NewSharedInformerFactoryWithOptions(a.opts.Client, 0, informers.WithTransform(trimNode))
	nodes := factory.Core().V1().Nodes()
	a.lister = nodes.Lister()
	a.runner = proxier.NewRunner("datapath", a.sync, proxier.RunnerOptions{
		MinInterval: a.minInterval, MaxInterval: a.opts.SyncPeriod})
	if _, err := nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { a.runner.Request() },
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(*v1.Node)
			c, ok2 := cur.(*v1.Node)
			if !ok1 || !ok2 || nodeChanged(o, c) {
				a.runner.Request()
			}
		},
		DeleteFunc: func(any) { a.runner.Request() },
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("datapath: %v informer did not sync", typ)
		}
	}
	a.runner.Run(ctx)
	return nil
}

// trimNode drops what the datapath never reads of a Node before the informer stores it:
// proxier.Trim's fields and the list of container images (often most of a Node's size).
func trimNode(obj any) (any, error) {
	if n, ok := obj.(*v1.Node); ok {
		n.Status.Images = nil
	}
	return proxier.Trim(obj)
}

// nodeChanged reports whether an update changes what the datapath computes from a node (a
// node's status heartbeats do not).
func nodeChanged(o, c *v1.Node) bool {
	if !slices.Equal(o.Spec.PodCIDRs, c.Spec.PodCIDRs) || o.Spec.PodCIDR != c.Spec.PodCIDR ||
		!slices.Equal(o.Status.Addresses, c.Status.Addresses) {
		return true
	}
	for _, k := range []string{AnnotationPublicIP, AnnotationVTEPMAC} {
		if o.Annotations[k] != c.Annotations[k] {
			return true
		}
	}
	return false
}

// sync is one pass; its error makes the runner retry with backoff.
func (a *Agent) sync(ctx context.Context) error {
	err := a.syncOnce(ctx)
	if errors.Is(err, ErrNoPodCIDR) {
		// Not a failure to retry: the Node informer requests a sync when a podCIDR arrives.
		if !errors.Is(a.Ready(), ErrNoPodCIDR) {
			klog.FromContext(ctx).Error(err, "Datapath waits: this node has no spec.podCIDR yet (assigned by the controller manager's --allocate-node-cidrs)",
				"node", a.opts.NodeName)
		}
		a.setReady(err)
		return nil
	}
	a.setReady(err)
	return err
}

func (a *Agent) syncOnce(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	t0 := time.Now()
	self, peers, err := a.listNodes(ctx)
	if err != nil {
		return err
	}
	selfNode, mtu, err := a.resolveSelf(self)
	if err != nil {
		return err
	}
	cfg := a.opts.Config
	if cfg.UnderlayMTU == 0 {
		cfg.UnderlayMTU = mtu
	}
	plan, err := ComputePlan(cfg, selfNode, peers)
	if err != nil {
		return err
	}
	res, err := a.rec.Sync(ctx, plan)
	for _, s := range res.NewSkips {
		logger.Error(nil, "Peer node gets no datapath", "peer", s.Node, "reason", s.Reason)
	}
	errs := []error{err,
		a.publish(ctx, self, plan),
		a.writeConflist(ctx, selfNode, plan),
		a.writeMasquerade(ctx, plan)}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	logger.V(2).Info("Datapath synced", "backend", a.opts.Config.Backend, "peers", len(peers)-1,
		"routes", len(plan.Routes), "skipped", len(plan.Skipped), "result", res.String(),
		"took", time.Since(t0))
	return nil
}

// listNodes returns this node's Node object and every node, converted; a bad peer is logged
// once and left out.
func (a *Agent) listNodes(ctx context.Context) (*v1.Node, []Node, error) {
	objs, err := a.lister.List(labels.Everything())
	if err != nil {
		return nil, nil, err
	}
	var self *v1.Node
	var out []Node
	bad := map[string]string{}
	for _, o := range objs {
		if o.Name == a.opts.NodeName {
			self = o
		}
		n, err := NodeFromAPI(o)
		if err != nil {
			if o.Name == a.opts.NodeName {
				return nil, nil, err
			}
			bad[o.Name] = err.Error()
			if a.logged[o.Name] != err.Error() {
				klog.FromContext(ctx).Error(err, "Skipping a peer node with bad datapath fields", "peer", klog.KObj(o))
			}
			continue
		}
		out = append(out, n)
	}
	a.logged = bad
	if self == nil {
		return nil, nil, fmt.Errorf("node %s: no Node object", a.opts.NodeName)
	}
	return self, out, nil
}

// resolveSelf converts this node and finds its underlay (and the underlay's MTU).
func (a *Agent) resolveSelf(o *v1.Node) (Self, int, error) {
	n, err := NodeFromAPI(o)
	if err != nil {
		return Self{}, 0, err
	}
	if a.opts.Config.Backend == BackendNone {
		return Self{Node: n}, 0, nil
	}
	if len(n.PodCIDRs) == 0 {
		return Self{}, 0, fmt.Errorf("node %s: %w", n.Name, ErrNoPodCIDR)
	}
	if a.opts.UnderlayInterface == "" && !n.IP.IsValid() {
		return Self{}, 0, fmt.Errorf("node %s has no InternalIP and no %s annotation", n.Name, AnnotationPublicIP)
	}
	u, err := a.underlay.FindUnderlay(a.opts.UnderlayInterface, n.IP)
	if err != nil {
		return Self{}, 0, fmt.Errorf("underlay of node %s: %w", n.Name, err)
	}
	if a.opts.UnderlayInterface != "" {
		n.IP = u.Prefix.Addr()
	}
	return Self{Node: n, Underlay: u.Prefix}, u.MTU, nil
}

// publish patches this node's annotations when they differ from the plan's.
func (a *Agent) publish(ctx context.Context, self *v1.Node, plan Plan) error {
	want := Annotations(plan)
	patch := map[string]any{}
	for k, v := range want {
		if self.Annotations[k] != v {
			patch[k] = v
		}
	}
	if len(patch) == 0 {
		return nil
	}
	if self.ResourceVersion != "" && self.ResourceVersion == a.publishedOn && maps.Equal(patch, a.published) {
		return nil // sent; the lister has not seen it yet
	}
	data, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": patch}})
	if err != nil {
		return err
	}
	if _, err := a.opts.Client.CoreV1().Nodes().Patch(ctx, self.Name, types.MergePatchType, data, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("patch annotations of node %s: %w", self.Name, err)
	}
	a.published, a.publishedOn = patch, self.ResourceVersion
	klog.FromContext(ctx).Info("Published datapath annotations", "node", klog.KObj(self), "annotations", patch)
	return nil
}

// writeConflist writes 10-kproxy.conflist for this node's pod subnets and the plan's MTU.
func (a *Agent) writeConflist(ctx context.Context, self Self, plan Plan) error {
	if a.opts.CNIConfDir == "" || len(self.PodCIDRs) == 0 {
		return nil
	}
	data, err := cni.RenderConflist(cni.Config{PodCIDRs: self.PodCIDRs, MTU: plan.PodMTU})
	if err != nil {
		return err
	}
	wrote, err := cni.WriteConflist(a.opts.CNIConfDir, data)
	if err != nil {
		return fmt.Errorf("write CNI conflist in %s: %w", a.opts.CNIConfDir, err)
	}
	if wrote {
		klog.FromContext(ctx).Info("Wrote the CNI conflist", "dir", a.opts.CNIConfDir, "file", cni.ConflistName,
			"podCIDRs", self.PodCIDRs, "mtu", plan.PodMTU)
	}
	return nil
}

// writeMasquerade restores MasqueradeChain (declaring it flushes it, so stale rules go) when
// the kernel's differs from the plan's, and makes sure nat POSTROUTING jumps to it, per
// family. A chain already as planned is not rewritten: a rewrite would reset its counters
// and, on a kproxy restart, change the kernel when nothing changed.
func (a *Agent) writeMasquerade(ctx context.Context, plan Plan) error {
	var errs []error
	for _, f := range []struct {
		ipt   iptables.Interface
		fam   iptables.Family
		rules []Rule
	}{{a.opts.IPTables, iptables.IPv4, plan.Masquerade.V4}, {a.opts.IP6Tables, iptables.IPv6, plan.Masquerade.V6}} {
		if f.ipt == nil {
			continue
		}
		gen, genOK := generation(f.ipt)
		if last, ok := a.masqueradeGen[f.fam]; ok && genOK && gen == last && slices.EqualFunc(a.masqueradePlan[f.fam], f.rules, equalRule) {
			continue // nothing changed any ruleset since the chain was found or written as planned
		}
		delete(a.masqueradeGen, f.fam)
		if !masqueradeInPlace(ctx, f.ipt, f.fam, f.rules) {
			if err := f.ipt.Restore(ctx, renderMasquerade(f.rules)); err != nil {
				errs = append(errs, fmt.Errorf("restore %s: %w", MasqueradeChain, err))
				continue
			}
		}
		jump := JumpRule()
		if _, err := f.ipt.EnsureRule(ctx, iptables.Append, iptables.TableNAT, iptables.Chain(jump.Chain), jump.Args...); err != nil {
			errs = append(errs, fmt.Errorf("jump to %s: %w", MasqueradeChain, err))
			continue
		}
		if gen, ok := generation(f.ipt); ok {
			if a.masqueradeGen == nil {
				a.masqueradeGen, a.masqueradePlan = map[iptables.Family]uint32{}, map[iptables.Family][]Rule{}
			}
			a.masqueradeGen[f.fam], a.masqueradePlan[f.fam] = gen, f.rules
		}
	}
	return errors.Join(errs...)
}

// generation reads the nf_tables generation through ipt when it has one (iptables.Runner on
// iptables-nft, iptables.Fake); ok is false otherwise.
func generation(ipt iptables.Interface) (uint32, bool) {
	g, ok := ipt.(interface{ Generation() (uint32, bool, error) })
	if !ok {
		return 0, false
	}
	gen, ok, err := g.Generation()
	return gen, ok && err == nil
}

func equalRule(a, b Rule) bool { return a.Chain == b.Chain && slices.Equal(a.Args, b.Args) }

// masqueradeInPlace reports whether the kernel's MasqueradeChain holds exactly rules (in
// iptables-save's canonical form). Any doubt (a read error, a rule that does not
// canonicalise) answers false, so that the chain is written.
func masqueradeInPlace(ctx context.Context, ipt iptables.Interface, fam iptables.Family, rules []Rule) bool {
	data, err := ipt.Save(ctx, iptables.TableNAT)
	if err != nil {
		return false
	}
	chains, err := iptables.ParseSave(data, iptables.TableNAT)
	if err != nil {
		return false
	}
	cur, ok := chains[MasqueradeChain]
	if !ok || len(cur) != len(rules) {
		return false
	}
	for i, r := range rules {
		want, err := iptables.CanonicalRule(fam, iptables.TableNAT, r.Args...)
		if err != nil || want != cur[i] {
			return false
		}
	}
	return true
}

// renderMasquerade is the restore text of table nat holding exactly rules in MasqueradeChain.
func renderMasquerade(rules []Rule) []byte {
	var tx iptables.Transaction
	tx.Declare(iptables.TableNAT, MasqueradeChain)
	for _, r := range rules {
		tx.Append(iptables.TableNAT, iptables.Chain(r.Chain), iptables.Rule(r.Args))
	}
	return tx.Bytes()
}
