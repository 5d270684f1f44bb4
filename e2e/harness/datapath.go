package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kproxy/kproxy/internal/netnsutil"
)

// With Options.Datapath set, the sandbox is kproxy's pod network as well as its service proxy
// (issue 6): nodes get no routes to each other's pod subnets (nor does the fabric), every
// kproxy runs with --datapath and --cni-conf-dir=CNIConfDir(node), and its Node identity may
// patch nodes (it publishes kproxy.io/ annotations). Pods hang off cni0 by a veth the harness
// makes, as the CNI bridge plugin would, with the MTU kproxy wrote into its conflist; or, with
// Options.CNIBin, the CNI plugins attach them through libcni (cni.go).

// DatapathRouteProtocol is the protocol of the routes kproxy's datapath adds (ip route ...
// proto 107).
const DatapathRouteProtocol = "107"

func (c *Cluster) podRoutes() podRoutes {
	if c.Opts.Datapath == "" || c.Opts.Datapath == "none" {
		return staticPodRoutes
	}
	return datapathPodRoutes
}

// CNIConfDir is where node n's kproxy writes its conflist (in the state directory, not
// /etc/cni/net.d: the harness never writes the machine's own configuration).
func (c *Cluster) CNIConfDir(n *Node) string { return filepath.Join(c.State, "cni", n.Name) }

// grantDatapathRBAC lets system:kube-proxy patch nodes (bootstrap's system:node-proxier may
// only read them).
func (c *Cluster) grantDatapathRBAC(ctx context.Context) error {
	const name = "kproxy:datapath"
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"patch"}}}}
	if _, err := c.Client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "system:kube-proxy"}}}
	if _, err := c.Client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// ConflistMTU reads the MTU of the bridge plugin from node n's conflist.
func (c *Cluster) ConflistMTU(n *Node) (int, error) {
	data, err := os.ReadFile(filepath.Join(c.CNIConfDir(n), "10-kproxy.conflist"))
	if err != nil {
		return 0, err
	}
	var conf struct {
		Plugins []struct {
			Type string `json:"type"`
			MTU  int    `json:"mtu"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(data, &conf); err != nil {
		return 0, fmt.Errorf("conflist of %s: %w", n.Name, err)
	}
	for _, p := range conf.Plugins {
		if p.Type == "bridge" && p.MTU > 0 {
			return p.MTU, nil
		}
	}
	return 0, fmt.Errorf("conflist of %s: no bridge plugin with an mtu", n.Name)
}

// preparePods readies node n's pods once its kproxy runs: attached by the CNI plugins
// (Options.CNIBin), or the harness's veth pods given the conflist's MTU.
func (c *Cluster) preparePods(ctx context.Context, n *Node) error {
	if c.Opts.CNIBin != "" {
		return c.attachCNIPods(ctx, n)
	}
	return c.applyPodMTU(ctx, n)
}

// applyPodMTU waits for node n's conflist and gives cni0, the pods' veths and the pods'
// eth0 its MTU, as the bridge plugin does for the pods it creates.
func (c *Cluster) applyPodMTU(ctx context.Context, n *Node) error {
	var mtu int
	if err := poll(ctx, 50*time.Millisecond, 15*time.Second, func() error {
		var err error
		mtu, err = c.ConflistMTU(n)
		return err
	}); err != nil {
		return err
	}
	m := strconv.Itoa(mtu)
	var cmds [][]string
	for j, p := range n.Pods {
		cmds = append(cmds,
			[]string{"-n", n.Name, "link", "set", "vp" + strconv.Itoa(j+1), "mtu", m},
			[]string{"-n", p.Name, "link", "set", "eth0", "mtu", m})
	}
	cmds = append(cmds, []string{"-n", n.Name, "link", "set", nodeBridge, "mtu", m})
	return ipBatch(cmds...)
}

// DatapathRoutes lists node n's routes of the datapath (proto 107), one `ip route` line each.
func (c *Cluster) DatapathRoutes(ctx context.Context, n *Node) ([]string, error) {
	out, err := Exec(ctx, n.Name, "ip", "route", "show", "proto", DatapathRouteProtocol)
	if err != nil {
		return nil, err
	}
	var lines []string
	for l := range strings.Lines(out) {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines, nil
}

// HasDatapathRoute reports whether one of routes goes to dst (a pod subnet).
func HasDatapathRoute(routes []string, dst string) bool {
	return slices.ContainsFunc(routes, func(r string) bool { return strings.HasPrefix(r, dst+" ") })
}

// DatapathReaches reports whether node n's datapath routes to peer p's pod subnet: always,
// except with host-gw between nodes on different underlay subnets (kproxy logs an error for
// such a peer instead).
func (c *Cluster) DatapathReaches(n, p *Node) bool {
	return c.Opts.Datapath != "host-gw" || n.Subnet.Contains(p.IP)
}

// WaitDatapath waits until every node has a datapath route to the pod subnet of every other
// node it reaches (DatapathReaches).
func (c *Cluster) WaitDatapath(ctx context.Context) error {
	return poll(ctx, 100*time.Millisecond, 20*time.Second, func() error {
		for _, n := range c.Nodes {
			routes, err := c.DatapathRoutes(ctx, n)
			if err != nil {
				return err
			}
			for _, p := range c.Nodes {
				if p != n && c.DatapathReaches(n, p) && !HasDatapathRoute(routes, p.PodCIDR.String()) {
					return fmt.Errorf("node %s has no datapath route to %s (node %s); its routes: %q", n.Name, p.PodCIDR, p.Name, routes)
				}
			}
		}
		return nil
	})
}

// AddNode adds a node (the next index, on the fabric's subnet) with the sandbox's pods per
// node: namespaces, echo servers, its Node object and its proxy, as Start does for the first
// ones (with Options.CNIBin the CNI plugins attach its pods once its proxy runs). With static
// routes every node gets a route to its pod subnet; with a datapath the proxies program it.
// The external namespace gets no routes to its LB and externalIP blocks.
func (c *Cluster) AddNode(ctx context.Context) (*Node, error) {
	i := 1
	for _, n := range c.Nodes {
		i = max(i, n.Index+1)
	}
	if i > maxNodes {
		return nil, fmt.Errorf("node %d: more than %d nodes", i, maxNodes)
	}
	n := planNode(c.Opts, i, false)
	if err := c.ensureNode(n); err != nil {
		return nil, err
	}
	if c.podRoutes() == staticPodRoutes {
		for _, p := range c.Nodes {
			if err := ip("-n", p.Name, "route", "add", n.PodCIDR.String(), "via", n.IP.String()); err != nil {
				return nil, err
			}
		}
	}
	for j, p := range n.Pods {
		if c.Opts.CNIBin != "" {
			break // the CNI plugins attach them once the proxy wrote the conflist
		}
		if err := ensurePod(p, j+1); err != nil {
			return nil, err
		}
		if err := c.startEcho(ctx, p); err != nil {
			return nil, err
		}
	}
	if err := c.createNode(ctx, n); err != nil {
		return nil, err
	}
	if err := c.StartProxy(ctx, n); err != nil {
		return nil, err
	}
	if c.podRoutes() == datapathPodRoutes {
		if err := c.preparePods(ctx, n); err != nil {
			return nil, err
		}
	}
	c.Nodes = append(c.Nodes, n)
	return n, nil
}

// RemoveNode takes node n out: its proxy and echo servers stop, the CNI plugins detach its
// CNI pods (DEL), its Node object is deleted and its namespaces (pods and node) go. With
// static routes the other nodes' routes to it go too; with a datapath, removing them is the
// proxies' job.
func (c *Cluster) RemoveNode(ctx context.Context, n *Node) error {
	if err := c.StopProxy(n); err != nil {
		return err
	}
	for _, p := range n.Pods {
		if err := c.detachCNIPod(ctx, p); err != nil {
			return err
		}
	}
	err := c.Client.CoreV1().Nodes().Delete(ctx, n.Name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete node %s: %w", n.Name, err)
	}
	var cmds [][]string
	for _, p := range n.Pods {
		cmds = append(cmds, []string{"netns", "del", p.Name})
	}
	cmds = append(cmds, []string{"netns", "del", n.Name})
	if n.Routed {
		cmds = append(cmds, routerNodeRoutes(c.rtr, "del", n)...)
	}
	c.Nodes = slices.DeleteFunc(c.Nodes, func(o *Node) bool { return o == n })
	if c.podRoutes() == staticPodRoutes {
		cmds = append(cmds, []string{"-n", c.fab, "route", "del", n.PodCIDR.String()})
		for _, p := range c.Nodes {
			cmds = append(cmds, []string{"-n", p.Name, "route", "del", n.PodCIDR.String()})
		}
	}
	return ipBatch(cmds...)
}

// StartExternalEcho runs an echo server in the external namespace (name = its netns name) and
// returns its address, ExternalClientIP:EchoPort. Pods reach it only masqueraded: the
// external namespace has no route to the pod subnets.
func (c *Cluster) StartExternalEcho(ctx context.Context) (string, error) {
	e := c.External
	addr := net.JoinHostPort(e.ClientIP.String(), strconv.Itoa(EchoPort))
	if e.echo == nil {
		p, err := start(c.State, startOptions{name: "echo-" + e.Name, ns: e.Name,
			args: []string{c.Opts.EchoBin, "server", "--name", e.Name, "--port", strconv.Itoa(EchoPort)}})
		if err != nil {
			return "", err
		}
		e.echo = p
	}
	return addr, poll(ctx, 10*time.Millisecond, 10*time.Second, func() error {
		if err := e.echo.checkAlive(); err != nil {
			return stopPolling(err)
		}
		conn, err := DialIn(ctx, e.Name, "tcp", addr)
		if err != nil {
			return err
		}
		return conn.Close()
	})
}

// ListenIn listens on addr inside the network namespace ns.
func ListenIn(ns, network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := netnsutil.Do(NetnsPath(ns), func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// TransferPort is the port Transfer listens on in the receiving pod.
const TransferPort = 9090

// Transfer sends size bytes over one TCP connection from pod from to pod to (the test process
// listens in to's namespace and dials from from's), and returns how long it took once to has
// confirmed every byte. Full-size segments cross the nodes: a wrong MTU hangs it.
func Transfer(ctx context.Context, from, to *Pod, size int64, timeout time.Duration) (time.Duration, error) {
	ln, err := ListenIn(to.Name, "tcp", to.Addr(TransferPort))
	if err != nil {
		return 0, err
	}
	defer func() { _ = ln.Close() }()
	deadline := time.Now().Add(timeout)
	type result struct {
		n   int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer func() { _ = conn.Close() }()
		_ = conn.SetDeadline(deadline)
		n, err := io.Copy(io.Discard, conn)
		if err == nil {
			_, err = fmt.Fprintf(conn, "%d\n", n)
		}
		got <- result{n, err}
	}()
	t0 := time.Now()
	conn, err := DialIn(ctx, from.Name, "tcp", to.Addr(TransferPort))
	if err != nil {
		return 0, err
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(deadline)
	buf := make([]byte, 64<<10)
	for sent := int64(0); sent < size; {
		chunk := min(int64(len(buf)), size-sent)
		n, err := conn.Write(buf[:chunk])
		sent += int64(n)
		if err != nil {
			return 0, fmt.Errorf("sent %d of %d bytes: %w", sent, size, err)
		}
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		return 0, err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("confirmation of %d bytes: %w", size, err)
	}
	r := <-got
	if r.err != nil {
		return 0, fmt.Errorf("receiver: %w", r.err)
	}
	if strings.TrimSpace(line) != strconv.FormatInt(size, 10) || r.n != size {
		return 0, fmt.Errorf("receiver got %d bytes (confirmed %q), sent %d", r.n, strings.TrimSpace(line), size)
	}
	return time.Since(t0), nil
}

// LinkMTU returns the MTU of link dev in namespace ns.
func LinkMTU(ctx context.Context, ns, dev string) (int, error) {
	out, err := exec.CommandContext(ctx, "ip", "-n", ns, "-o", "link", "show", "dev", dev).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("ip -n %s link show %s: %w: %s", ns, dev, err, strings.TrimSpace(string(out)))
	}
	f := strings.Fields(string(out))
	if i := slices.Index(f, "mtu"); i >= 0 && i+1 < len(f) {
		return strconv.Atoi(f[i+1])
	}
	return 0, errors.New("no mtu in " + string(out))
}

// NodeAnnotations returns the kproxy.io/ annotations of node n.
func (c *Cluster) NodeAnnotations(ctx context.Context, n *Node) (map[string]string, error) {
	obj, err := c.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for k, v := range obj.Annotations {
		if strings.HasPrefix(k, "kproxy.io/") {
			out[k] = v
		}
	}
	return out, nil
}

// SourceTowardPods is the source address a packet from node n's own namespace carries when
// it reaches a pod on another node: the VTEP address (the .0 of n's pod subnet) over kproxy's
// VXLAN datapath without direct routing, as with flannel; n's node IP otherwise.
func (c *Cluster) SourceTowardPods(n *Node) netip.Addr {
	if c.Opts.Datapath == "vxlan" && !slices.Contains(c.Opts.ProxyArgs, "--vxlan-direct-routing") {
		return n.PodCIDR.Addr()
	}
	return n.IP
}
