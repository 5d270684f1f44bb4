package harness

import (
	"context"
	"fmt"
	"syscall"
	"time"
)

// Faults the reliability tests inject: the apiserver stopped and started again, a proxy
// killed without warning.

// apiserverPidName is the pid file name of kube-apiserver (startAPIServer's process name).
const apiserverPidName = "kube-apiserver"

// StopAPIServer stops kube-apiserver (SIGTERM, SIGKILL after 5 s) and waits until it is gone.
// etcd keeps running, so StartAPIServer brings back the same cluster state. Proxies see
// their connections refused meanwhile.
func (c *Cluster) StopAPIServer() error {
	for _, r := range readPidFiles(c.State) {
		if r.name != apiserverPidName {
			continue
		}
		if st, err := procStartTime(r.pid); err != nil || st != r.start {
			return fmt.Errorf("kube-apiserver (pid %d) is not running", r.pid)
		}
		if left := killAll([]int{r.pid}, 5*time.Second); len(left) > 0 {
			return fmt.Errorf("kube-apiserver (pid %d) does not stop", r.pid)
		}
		return nil
	}
	return fmt.Errorf("no pid file for kube-apiserver in %s", c.State)
}

// StartAPIServer starts kube-apiserver again after StopAPIServer, with the endpoint
// reconciler the sandbox started with, and returns once /readyz is ok and the default
// kubernetes Service can be read.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	reconciler := ""
	if c.Reconciler == "none" {
		reconciler = "none"
	}
	p, err := start(c.State, startOptions{name: apiserverPidName, ns: c.fab, args: c.apiserverArgs(reconciler)})
	if err != nil {
		return err
	}
	return c.waitAPIServer(ctx, p)
}

// KillProxy kills the proxy on node n with SIGKILL (no chance to clean up or finish a sync)
// and waits until it is reaped. Its rules stay. StartProxyWith starts it again.
func (c *Cluster) KillProxy(n *Node) error {
	if n.proxy == nil {
		return fmt.Errorf("no proxy runs on %s", n.Name)
	}
	if err := syscall.Kill(n.proxy.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill proxy on %s: %w", n.Name, err)
	}
	<-n.proxy.done
	n.proxy = nil
	return nil
}

// StartProxyWith starts the proxy on node n with the sandbox's flags plus extra (later flags
// win) and waits for its /healthz 200.
func (c *Cluster) StartProxyWith(ctx context.Context, n *Node, extra ...string) error {
	return c.startProxy(ctx, n, extra)
}
