package harness

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"time"
)

// The proxies the harness can run on the nodes.
const (
	ProxyKProxy    = "kproxy"
	ProxyKubeProxy = "kube-proxy" // upstream, from the k8s bin dir: the differential reference
	ProxyNone      = "none"       // no proxy: shows that the tests fail without one
)

// proxyArgs is the command line of the proxy on node n.
func (c *Cluster) proxyArgs(n *Node) ([]string, error) {
	kubeconfig := filepath.Join(c.State, "kube-proxy.kubeconfig")
	healthz := "--healthz-bind-address=0.0.0.0:" + strconv.Itoa(HealthzPort)
	metrics := "--metrics-bind-address=127.0.0.1:" + strconv.Itoa(MetricsPort)
	var args []string
	switch c.Opts.Proxy {
	case ProxyKProxy:
		args = []string{c.Opts.ProxyBin, "--mode=iptables", "--kubeconfig=" + kubeconfig,
			"--hostname-override=" + n.Name, "--cluster-cidr=" + ClusterCIDR.String(),
			healthz, metrics, "-v=2"}
	case ProxyKubeProxy:
		args = []string{filepath.Join(c.Opts.K8sBin, "kube-proxy"), "--proxy-mode=iptables",
			"--kubeconfig=" + kubeconfig, "--hostname-override=" + n.Name,
			"--cluster-cidr=" + ClusterCIDR.String(),
			// zeros: do not write the conntrack sysctls (some are not per namespace)
			"--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0",
			"--conntrack-tcp-timeout-close-wait=0",
			healthz, metrics, "-v=2"}
	default:
		return nil, fmt.Errorf("unknown proxy %q", c.Opts.Proxy)
	}
	if c.podRoutes() == datapathPodRoutes {
		args = append(args, "--datapath="+c.Opts.Datapath, "--cni-conf-dir="+c.CNIConfDir(n))
	}
	return append(args, c.Opts.ProxyArgs...), nil
}

// StartProxy starts the proxy on node n and waits for its /healthz to answer 200.
func (c *Cluster) StartProxy(ctx context.Context, n *Node) error {
	return c.startProxy(ctx, n, nil)
}

// RestartProxy stops the proxy on node n (its rules stay) and starts it again with the
// sandbox's flags plus extra (later flags win), then waits for /healthz 200. Call it again
// without extra to go back to the usual flags.
func (c *Cluster) RestartProxy(ctx context.Context, n *Node, extra ...string) error {
	if err := c.StopProxy(n); err != nil {
		return err
	}
	return c.startProxy(ctx, n, extra)
}

func (c *Cluster) startProxy(ctx context.Context, n *Node, extra []string) error {
	if c.Opts.Proxy == ProxyNone {
		return nil
	}
	args, err := c.proxyArgs(n)
	if err != nil {
		return err
	}
	args = append(args, extra...)
	p, err := start(c.State, startOptions{name: "proxy-" + n.Name, ns: n.Name, args: args})
	if err != nil {
		return err
	}
	n.proxy = p
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", HealthzPort)
	return poll(ctx, 50*time.Millisecond, 30*time.Second, func() error {
		if err := p.checkAlive(); err != nil {
			return stopPolling(err)
		}
		code, body, err := HTTPGet(ctx, n.Name, url)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("%s healthz: %d %s", n.Name, code, body)
		}
		return nil
	})
}

// StopProxy stops the proxy on node n (SIGTERM, SIGKILL after 2 s). Its rules stay.
func (c *Cluster) StopProxy(n *Node) error {
	if n.proxy == nil {
		return nil
	}
	if left := killAll([]int{n.proxy.cmd.Process.Pid}, 2*time.Second); len(left) > 0 {
		return fmt.Errorf("proxy on %s (pid %d) does not stop", n.Name, left[0])
	}
	<-n.proxy.done
	n.proxy = nil
	return nil
}

// ProxyLog is the path of node n's proxy log.
func (c *Cluster) ProxyLog(n *Node) string {
	return filepath.Join(c.State, "logs", "proxy-"+n.Name+".log")
}

// ProxyExited reports whether the proxy started on node n has ended by itself (false when no
// proxy runs there, as with ProxyNone), with its exit status.
func (c *Cluster) ProxyExited(n *Node) (bool, error) {
	if n.proxy == nil {
		return false, nil
	}
	return n.proxy.exited()
}
