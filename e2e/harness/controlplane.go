package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// httpClientIn is an HTTP client whose connections are dialled inside the namespace ns.
func httpClientIn(ns string, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return DialIn(ctx, ns, network, addr)
			},
			DisableKeepAlives: true,
		},
	}
}

// HTTPGet fetches url from inside the namespace ns and returns the status code and body.
func HTTPGet(ctx context.Context, ns, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	timeout := 5 * time.Second // the context's deadline when that is later (a CPU profile)
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) > timeout {
		timeout = time.Until(dl)
	}
	resp, err := httpClientIn(ns, timeout).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// startEtcd runs etcd in the fabric namespace on 127.0.0.1, data on /dev/shm, and waits until
// it reports healthy.
func (c *Cluster) startEtcd(ctx context.Context) error {
	loc := func(port int) string { return "http://127.0.0.1:" + strconv.Itoa(port) }
	name := c.Opts.Prefix
	p, err := start(c.State, startOptions{name: "etcd", ns: c.fab, args: []string{
		filepath.Join(c.Opts.K8sBin, "etcd"),
		"--name", name, "--data-dir", filepath.Join(etcdDir(c.Opts.Prefix), "etcd"),
		"--listen-client-urls", loc(EtcdClientPort), "--advertise-client-urls", loc(EtcdClientPort),
		"--listen-peer-urls", loc(EtcdPeerPort), "--initial-advertise-peer-urls", loc(EtcdPeerPort),
		"--initial-cluster", name + "=" + loc(EtcdPeerPort),
		"--unsafe-no-fsync", "--log-level", "warn",
	}})
	if err != nil {
		return err
	}
	return poll(ctx, 50*time.Millisecond, 20*time.Second, func() error {
		if err := p.checkAlive(); err != nil {
			return stopPolling(err)
		}
		code, body, err := HTTPGet(ctx, c.fab, loc(EtcdClientPort)+"/health")
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("etcd /health: %d %s", code, body)
		}
		return nil
	})
}

// apiserverArgs are the recipe's flags (/work/shared/recipes/apiserver) for this sandbox.
func (c *Cluster) apiserverArgs(reconciler string) []string {
	pki := filepath.Join(c.State, "pki")
	args := []string{
		filepath.Join(c.Opts.K8sBin, "kube-apiserver"),
		"--etcd-servers=http://127.0.0.1:" + strconv.Itoa(EtcdClientPort),
		"--bind-address=0.0.0.0", "--advertise-address=" + FabricIP.String(),
		"--secure-port=" + strconv.Itoa(APIServerPort),
		"--tls-cert-file=" + filepath.Join(pki, "apiserver.crt"),
		"--tls-private-key-file=" + filepath.Join(pki, "apiserver.key"),
		"--client-ca-file=" + filepath.Join(pki, "ca.crt"),
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + filepath.Join(pki, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(pki, "sa.key"),
		"--service-cluster-ip-range=" + c.serviceCIDRs(),
		"--service-node-port-range=30000-32767",
		"--disable-admission-plugins=ServiceAccount",
		"--allow-privileged=true", "--profiling=false",
	}
	if reconciler != "" {
		args = append(args, "--endpoint-reconciler-type="+reconciler)
	}
	return args
}

// serviceCIDRs is --service-cluster-ip-range: ServiceCIDR, and ServiceCIDR6 with
// Options.DualStack.
func (c *Cluster) serviceCIDRs() string {
	if c.Opts.DualStack {
		return ServiceCIDR.String() + "," + ServiceCIDR6.String()
	}
	return ServiceCIDR.String()
}

// startAPIServer runs kube-apiserver in the fabric namespace with the default (lease) endpoint
// reconciler and the non-loopback advertise address 192.0.2.1; if it does not come up that
// way, it falls back to --endpoint-reconciler-type=none (the recipe's setting).
func (c *Cluster) startAPIServer(ctx context.Context) error {
	var firstErr error
	for _, reconciler := range []string{"", "none"} {
		p, err := start(c.State, startOptions{name: "kube-apiserver", ns: c.fab, args: c.apiserverArgs(reconciler)})
		if err != nil {
			return err
		}
		err = c.waitAPIServer(ctx, p)
		if err == nil {
			c.Reconciler = "lease (default)"
			if reconciler != "" {
				c.Reconciler = reconciler
				c.logf("kube-apiserver: the default endpoint reconciler failed (%v); running with --endpoint-reconciler-type=none", firstErr)
			}
			return nil
		}
		if firstErr == nil {
			firstErr = err
		}
		_ = killAll([]int{p.cmd.Process.Pid}, time.Second)
		<-p.done
	}
	return firstErr
}

// waitAPIServer waits for /readyz and for the default/kubernetes Service (the bootstrap
// controller creates it once Service IPs can be allocated).
func (c *Cluster) waitAPIServer(ctx context.Context, p *process) error {
	return poll(ctx, 50*time.Millisecond, 60*time.Second, func() error {
		if err := p.checkAlive(); err != nil {
			return stopPolling(err)
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		body, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(rctx)
		if err != nil {
			return fmt.Errorf("readyz: %w: %s", err, body)
		}
		if _, err := c.Client.CoreV1().Services("default").Get(rctx, "kubernetes", metav1.GetOptions{}); err != nil {
			return fmt.Errorf("default/kubernetes service: %w", err)
		}
		return nil
	})
}

// createNodes creates the Node objects: podCIDR, zone label, InternalIP and a Ready condition
// (through the status subresource; no kubelet or node controller touches them afterwards).
func (c *Cluster) createNodes(ctx context.Context) error {
	for _, n := range c.Nodes {
		if err := c.createNode(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// createNode creates the Node object of n, with its podCIDR, zone, InternalIP and Ready.
func (c *Cluster) createNode(ctx context.Context, n *Node) error {
	obj := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{
			"kubernetes.io/hostname":      n.Name,
			"kubernetes.io/os":            "linux",
			"topology.kubernetes.io/zone": n.Zone,
		}},
		Spec: corev1.NodeSpec{PodCIDR: n.PodCIDR.String(), PodCIDRs: []string{n.PodCIDR.String()}},
	}
	created, err := c.Client.CoreV1().Nodes().Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create node %s: %w", n.Name, err)
	}
	now := metav1.Now()
	created.Status = corev1.NodeStatus{
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: n.IP.String()},
			{Type: corev1.NodeHostName, Address: n.Name},
		},
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KproxyE2E",
			Message: "node namespace created by the e2e harness", LastHeartbeatTime: now, LastTransitionTime: now,
		}},
	}
	if _, err := c.Client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("node %s status: %w", n.Name, err)
	}
	return nil
}

// errStop wraps an error that ends a poll at once.
type errStop struct{ err error }

func (e errStop) Error() string { return e.err.Error() }
func (e errStop) Unwrap() error { return e.err }

func stopPolling(err error) error { return errStop{err} }

// poll calls fn every interval until it returns nil, returns an error made with
// stopPolling, ctx ends or timeout passes; then it returns fn's last error.
func poll(ctx context.Context, interval, timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		var stop errStop
		if errors.As(err, &stop) {
			return stop.err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-time.After(interval):
		}
	}
}
