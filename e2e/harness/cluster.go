package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Options describe a sandbox.
type Options struct {
	Prefix      string // PrefixTest, PrefixDemo, ...
	Nodes       int
	PodsPerNode int
	Proxy       string   // ProxyKProxy, ProxyKubeProxy or ProxyNone
	ProxyBin    string   // the kproxy binary (Proxy == ProxyKProxy)
	ProxyArgs   []string // extra flags for the proxy
	// Datapath is kproxy's --datapath (vxlan, host-gw, ipip): the harness adds no routes
	// between the nodes' pod subnets and the proxy programs them. "" or "none": static routes.
	Datapath string
	// RoutedNodes of the Nodes (the last ones) sit on a second underlay subnet behind a
	// router namespace instead of on the fabric's (the routed topology, topology.go). Needs
	// a Datapath: the harness routes no pod subnet.
	RoutedNodes int
	// CNIBin is a directory with the upstream CNI plugins (bridge, host-local, portmap):
	// the pods are then attached by them through libcni, with the conflist each node's
	// kproxy wrote, once it wrote it (cni.go). Needs a Datapath. "": the harness makes each
	// pod's veth itself.
	CNIBin  string
	K8sBin  string // directory with kube-apiserver, etcd and kube-proxy
	EchoBin string // the e2e/cmd/echo binary
	// ForwardListen is where the in-process API forwarder listens (default 127.0.0.1:0).
	ForwardListen string
	// DualStack gives the apiserver ServiceCIDR6 as a second service range, so services can
	// be dual-stack. The harness's own nodes and pods stay IPv4.
	DualStack bool
	// Logf receives one line per step with its duration (default: stdout).
	Logf func(format string, args ...any)
}

// Cluster is a running sandbox.
type Cluster struct {
	Opts       Options
	State      string // StateDir(prefix)
	Nodes      []*Node
	External   *External            // the external client namespace <prefix>-ext
	Client     kubernetes.Interface // admin, through the forwarder
	RESTConfig *rest.Config
	Reconciler string // the apiserver's endpoint reconciler that worked
	fab        string
	rtr        string // the router namespace (Options.RoutedNodes > 0)
	fwd        *Forwarder
	pki        *pki
}

func (o *Options) validate() error {
	if err := ValidatePrefix(o.Prefix); err != nil {
		return err
	}
	if o.Nodes < 1 || o.Nodes > maxNodes || o.PodsPerNode < 0 || o.PodsPerNode*o.Nodes > maxPods || o.PodsPerNode > 200 {
		return fmt.Errorf("nodes %d, pods per node %d: out of range", o.Nodes, o.PodsPerNode)
	}
	need := []string{filepath.Join(o.K8sBin, "kube-apiserver"), filepath.Join(o.K8sBin, "etcd"), o.EchoBin}
	switch o.Proxy {
	case ProxyKProxy:
		need = append(need, o.ProxyBin)
	case ProxyKubeProxy:
		need = append(need, filepath.Join(o.K8sBin, "kube-proxy"))
	case ProxyNone:
	default:
		return fmt.Errorf("proxy %q: want %s, %s or %s", o.Proxy, ProxyKProxy, ProxyKubeProxy, ProxyNone)
	}
	datapath := o.Datapath != "" && o.Datapath != "none"
	if datapath && o.Proxy != ProxyKProxy {
		return fmt.Errorf("datapath %q needs proxy %s, not %q", o.Datapath, ProxyKProxy, o.Proxy)
	}
	if o.RoutedNodes < 0 || o.RoutedNodes > o.Nodes {
		return fmt.Errorf("routed nodes %d of %d: out of range", o.RoutedNodes, o.Nodes)
	}
	if (o.RoutedNodes > 0 || o.CNIBin != "") && !datapath {
		return errors.New("routed nodes and CNI pods need a datapath (the harness routes no pod subnet between subnets, and kproxy writes the conflist)")
	}
	if o.CNIBin != "" {
		for _, p := range []string{"bridge", "host-local", "portmap"} {
			need = append(need, filepath.Join(o.CNIBin, p))
		}
	}
	for _, f := range need {
		if st, err := os.Stat(f); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return fmt.Errorf("binary %s missing or not executable (make build; e2e/tools/build-k8s.sh)", f)
		}
	}
	if o.ForwardListen == "" {
		o.ForwardListen = "127.0.0.1:0"
	}
	if o.Logf == nil {
		o.Logf = func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
	}
	return nil
}

func (c *Cluster) logf(format string, args ...any) { c.Opts.Logf(format, args...) }

// step runs fn and logs what it did and how long it took.
func (c *Cluster) step(what string, fn func() error) error {
	t0 := time.Now()
	if err := fn(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	c.logf("%-52s %6dms", what, time.Since(t0).Milliseconds())
	return nil
}

// Start cleans up whatever a previous run with the same prefix left, then builds the sandbox
// (see doc.go) and returns when every proxy answers /healthz. On error the returned Cluster,
// if not nil, holds what was started: call Cleanup(prefix) either way.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	c := &Cluster{Opts: opts, State: StateDir(opts.Prefix), fab: fabName(opts.Prefix),
		Nodes: plan(opts), External: planExternal(opts.Prefix)}
	if opts.RoutedNodes > 0 {
		c.rtr = RouterNetns(opts.Prefix)
	}
	t0 := time.Now()
	if err := c.step("clean up leftovers of "+opts.Prefix, func() error {
		rep, err := Cleanup(opts.Prefix)
		if err == nil && !rep.Empty() {
			c.logf("  %s", rep)
		}
		return err
	}); err != nil {
		return nil, err
	}
	if err := c.step("certificates and kubeconfigs", c.writeCredentials); err != nil {
		return c, err
	}
	subnet := fabricSubnet(opts)
	if err := c.step("fabric netns "+c.fab+" (bridge "+fabBridge+" "+withLen(FabricIP, subnet)+")", func() error { return ensureFabric(c.fab, subnet) }); err != nil {
		return c, err
	}
	// The node and pod namespaces are built while etcd and the apiserver start.
	var wg sync.WaitGroup
	var topoErr error
	wg.Add(1)
	go func() { defer wg.Done(); topoErr = c.buildNodes(ctx) }()
	cpErr := c.startControlPlane(ctx)
	wg.Wait()
	if err := errors.Join(cpErr, topoErr); err != nil {
		return c, err
	}
	if err := c.step(fmt.Sprintf("%d Node objects (podCIDR, zone, InternalIP, Ready)", len(c.Nodes)), func() error { return c.createNodes(ctx) }); err != nil {
		return c, err
	}
	if c.podRoutes() == datapathPodRoutes {
		if err := c.step("RBAC: kube-proxy may patch nodes (datapath annotations)", func() error { return c.grantDatapathRBAC(ctx) }); err != nil {
			return c, err
		}
	}
	if err := c.step(fmt.Sprintf("%s on %d nodes, /healthz 200", opts.Proxy, len(c.Nodes)), func() error { return c.startProxies(ctx) }); err != nil {
		return c, err
	}
	if c.podRoutes() == datapathPodRoutes {
		what := "datapath " + opts.Datapath + ": pod MTU from the conflists, routes to every peer"
		if opts.CNIBin != "" {
			what = "datapath " + opts.Datapath + ": pods by CNI ADD (libcni), routes to every peer"
		}
		if err := c.step(what, func() error {
			for _, n := range c.Nodes {
				if err := c.preparePods(ctx, n); err != nil {
					return err
				}
			}
			return c.WaitDatapath(ctx)
		}); err != nil {
			return c, err
		}
	}
	if err := c.writeDescription(); err != nil {
		return c, err
	}
	c.logf("%-52s %6dms", "sandbox "+opts.Prefix+" up", time.Since(t0).Milliseconds())
	return c, nil
}

func (c *Cluster) writeCredentials() error {
	p, err := newPKI()
	if err != nil {
		return err
	}
	c.pki = p
	if err := p.write(filepath.Join(c.State, "pki")); err != nil {
		return err
	}
	fabURL := "https://" + FabricIP.String() + ":" + strconv.Itoa(APIServerPort)
	if err := writeKubeconfig(filepath.Join(c.State, "kube-proxy.kubeconfig"), fabURL, p.CA.CertPEM, p.KubeProxy); err != nil {
		return err
	}
	return writeKubeconfig(FabricKubeconfig(c.Opts.Prefix), fabURL, p.CA.CertPEM, p.Admin)
}

// WriteAdminKubeconfig writes AdminKubeconfig(prefix) for an admin reaching the apiserver at
// server (a forwarder on 127.0.0.1 of the root namespace).
func (c *Cluster) WriteAdminKubeconfig(server string) error {
	return writeKubeconfig(AdminKubeconfig(c.Opts.Prefix), server, c.pki.CA.CertPEM, c.pki.Admin)
}

func (c *Cluster) startControlPlane(ctx context.Context) error {
	if err := c.step("etcd in "+c.fab+" (data on /dev/shm), healthy", func() error { return c.startEtcd(ctx) }); err != nil {
		return err
	}
	if err := c.step("API forwarder in the root netns", func() error {
		// No per-dial log: dials fail until the apiserver listens, and clients report errors.
		f, err := Forward(c.Opts.ForwardListen, c.fab, FabricIP.String()+":"+strconv.Itoa(APIServerPort), nil)
		if err != nil {
			return err
		}
		c.fwd = f
		c.RESTConfig = restConfig("https://"+f.Addr(), c.pki)
		if c.Client, err = kubernetes.NewForConfig(c.RESTConfig); err != nil {
			return err
		}
		return c.WriteAdminKubeconfig("https://" + f.Addr())
	}); err != nil {
		return err
	}
	return c.step("kube-apiserver in "+c.fab+", /readyz ok", func() error { return c.startAPIServer(ctx) })
}

func (c *Cluster) buildNodes(ctx context.Context) error {
	npods := 0
	for _, n := range c.Nodes {
		npods += len(n.Pods)
	}
	what := fmt.Sprintf("%d node netns (eth0, cni0, routes), external netns", len(c.Nodes))
	if c.rtr != "" {
		what = fmt.Sprintf("%d node netns (%d routed), router and external netns", len(c.Nodes), c.Opts.RoutedNodes)
	}
	if err := c.step(what, func() error {
		if c.rtr != "" {
			if err := ensureRouter(c.fab, c.rtr); err != nil {
				return err
			}
		}
		for _, n := range c.Nodes {
			if err := c.ensureNode(n); err != nil {
				return err
			}
		}
		return ensureExternal(c.fab, c.External, c.Nodes, fabricSubnet(c.Opts))
	}); err != nil {
		return err
	}
	if c.Opts.CNIBin != "" {
		return nil // the CNI plugins attach the pods once kproxy wrote the conflists
	}
	return c.step(fmt.Sprintf("%d pod netns with echo servers, listening", npods), func() error {
		for _, n := range c.Nodes {
			for j, p := range n.Pods {
				if err := ensurePod(p, j+1); err != nil {
					return err
				}
				if err := c.startEcho(ctx, p); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// startEcho runs the echo server in pod p and waits until it answers on its own IP.
func (c *Cluster) startEcho(ctx context.Context, p *Pod) error {
	proc, err := start(c.State, startOptions{name: "echo-" + p.Name, ns: p.Name,
		args: []string{c.Opts.EchoBin, "server", "--name", p.Name, "--port", strconv.Itoa(EchoPort)}})
	if err != nil {
		return err
	}
	p.echo = proc
	return poll(ctx, 10*time.Millisecond, 10*time.Second, func() error {
		if err := proc.checkAlive(); err != nil {
			return stopPolling(err)
		}
		conn, err := DialIn(ctx, p.Name, "tcp", p.Addr(EchoPort))
		if err != nil {
			return err
		}
		return conn.Close()
	})
}

func (c *Cluster) startProxies(ctx context.Context) error {
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, n := range c.Nodes {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = c.StartProxy(ctx, n) }()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Close stops the in-process forwarder. The sandbox keeps running: Cleanup removes it.
func (c *Cluster) Close() {
	if c.fwd != nil {
		_ = c.fwd.Close()
	}
}

// Addr is the pod's IP with a port, as host:port.
func (p *Pod) Addr(port int) string { return p.IP.String() + ":" + strconv.Itoa(port) }

// Pod returns pod j (1-based) of node i (1-based).
func (c *Cluster) Pod(i, j int) *Pod { return c.Nodes[i-1].Pods[j-1] }

// StartDetached starts a daemon that outlives this process, records its pid in the state
// directory (so Cleanup stops it) and returns its pid. ns "" is the caller's namespace.
func (c *Cluster) StartDetached(name, ns string, args ...string) (int, error) {
	p, err := start(c.State, startOptions{name: name, ns: ns, args: args})
	if err != nil {
		return 0, err
	}
	return p.cmd.Process.Pid, nil
}

// description is cluster.json in the state directory: the sandbox for scripts and people.
type description struct {
	Prefix     string   `json:"prefix"`
	Proxy      string   `json:"proxy"`
	Reconciler string   `json:"endpointReconciler"`
	Kubeconfig string   `json:"kubeconfig"`
	Fabric     string   `json:"fabricNetns"`
	Nodes      []nodeJS `json:"nodes"`
}

type nodeJS struct {
	Name    string  `json:"name"`
	IP      string  `json:"ip"`
	PodCIDR string  `json:"podCIDR"`
	Pods    []podJS `json:"pods"`
}

type podJS struct {
	Name string `json:"name"`
	IP   string `json:"ip"`
}

func (c *Cluster) writeDescription() error {
	d := description{Prefix: c.Opts.Prefix, Proxy: c.Opts.Proxy, Reconciler: c.Reconciler,
		Kubeconfig: AdminKubeconfig(c.Opts.Prefix), Fabric: c.fab}
	for _, n := range c.Nodes {
		nj := nodeJS{Name: n.Name, IP: n.IP.String(), PodCIDR: n.PodCIDR.String()}
		for _, p := range n.Pods {
			nj.Pods = append(nj.Pods, podJS{Name: p.Name, IP: p.IP.String()})
		}
		d.Nodes = append(d.Nodes, nj)
	}
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(c.State, "cluster.json"), append(b, '\n'), 0o644)
}
