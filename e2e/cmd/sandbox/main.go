// Command sandbox brings kproxy's end-to-end sandbox up and down for the demo and for people:
// a real kube-apiserver + etcd, nodes and pods in network namespaces, a proxy on every node
// (see e2e/harness/doc.go).
//
//	sandbox up   [--prefix kpdemo] [--nodes 2] [--pods-per-node 1] [--proxy kproxy|kube-proxy|none]
//	             [--kproxy-bin B] [--k8s-bin DIR] [--echo-bin B] [--listen 127.0.0.1:6443]
//	sandbox down [--prefix kpdemo]
//	sandbox kubeconfig [--prefix kpdemo]
//
// `up` leaves everything running (daemons detached, state in /run/kproxy-e2e/PREFIX) and
// starts a forwarder process on 127.0.0.1:6443 of the root namespace, so that
// `kubectl --kubeconfig /run/kproxy-e2e/PREFIX/admin.kubeconfig get nodes` works.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kproxy/kproxy/e2e/harness"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "up":
		err = up(os.Args[2:])
	case "down":
		err = down(os.Args[2:])
	case "kubeconfig":
		fs := flag.NewFlagSet("kubeconfig", flag.ExitOnError)
		prefix := fs.String("prefix", harness.PrefixDemo, "sandbox name prefix")
		_ = fs.Parse(os.Args[2:])
		fmt.Println(harness.AdminKubeconfig(*prefix))
	case "forward":
		err = forward(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "sandbox: %v\n", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage: sandbox up [--prefix kpdemo] [--nodes 2] [--pods-per-node 1] [--proxy kproxy|kube-proxy|none] [--k8s-bin DIR]
       sandbox down [--prefix kpdemo]
       sandbox kubeconfig [--prefix kpdemo]`)
	os.Exit(2)
}

// exeDir is the directory of this binary: bin/kproxy and bin/echo sit next to bin/sandbox.
func exeDir() string {
	exe, err := os.Executable()
	if err != nil {
		return "."
	}
	return filepath.Dir(exe)
}

func up(args []string) error {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	o := harness.Options{}
	fs.StringVar(&o.Prefix, "prefix", harness.PrefixDemo, "name prefix of namespaces, state and objects")
	fs.IntVar(&o.Nodes, "nodes", 2, "node namespaces")
	fs.IntVar(&o.PodsPerNode, "pods-per-node", 1, "pod namespaces per node")
	fs.StringVar(&o.Proxy, "proxy", harness.ProxyKProxy, "proxy on the nodes: kproxy, kube-proxy (upstream) or none")
	fs.StringVar(&o.ProxyBin, "kproxy-bin", filepath.Join(exeDir(), "kproxy"), "kproxy binary")
	fs.StringVar(&o.K8sBin, "k8s-bin", os.Getenv("KPROXY_K8S_BIN"), "directory with kube-apiserver, etcd, kube-proxy (e2e/tools/build-k8s.sh prints it)")
	fs.StringVar(&o.EchoBin, "echo-bin", filepath.Join(exeDir(), "echo"), "echo binary")
	fs.StringVar(&o.Datapath, "datapath", "", "kproxy --datapath between the nodes (vxlan, host-gw, ipip) instead of static routes")
	proxyArgs := fs.String("proxy-args", "", "extra proxy flags, space separated")
	listen := fs.String("listen", "127.0.0.1:6443", "root-namespace address of the API forwarder")
	_ = fs.Parse(args)
	if o.K8sBin == "" {
		return errors.New("--k8s-bin (or KPROXY_K8S_BIN) is required: the last line of e2e/tools/build-k8s.sh")
	}
	o.ProxyArgs = strings.Fields(*proxyArgs)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	fail := func(err error) error {
		fmt.Printf("sandbox up failed; cleaning up %s\n", o.Prefix)
		if rep, cerr := harness.Cleanup(o.Prefix); cerr != nil {
			fmt.Printf("  %s\n", rep)
		}
		return err
	}
	c, err := harness.Start(ctx, o)
	if c != nil {
		defer c.Close()
	}
	if err != nil {
		return fail(err)
	}
	t0 := time.Now()
	if ln, err := net.Listen("tcp", *listen); err != nil {
		return fail(fmt.Errorf("API forwarder address %s: %w (use --listen)", *listen, err))
	} else {
		_ = ln.Close()
	}
	exe, err := os.Executable()
	if err != nil {
		return fail(err)
	}
	pid, err := c.StartDetached("forwarder", "", exe, "forward",
		"--listen", *listen, "--netns", o.Prefix+"-fab",
		"--target", harness.FabricIP.String()+":"+strconv.Itoa(harness.APIServerPort))
	if err != nil {
		return fail(err)
	}
	if err := c.WriteAdminKubeconfig("https://" + *listen); err != nil {
		return fail(err)
	}
	if err := checkKubeconfig(ctx, harness.AdminKubeconfig(o.Prefix)); err != nil {
		return fail(fmt.Errorf("forwarder on %s (pid %d, log %s): %w", *listen, pid,
			filepath.Join(c.State, "logs", "forwarder.log"), err))
	}
	fmt.Printf("%-52s %6dms\n", "API forwarder process on "+*listen, time.Since(t0).Milliseconds())
	printSummary(c)
	return nil
}

// checkKubeconfig lists nodes with the kubeconfig, retrying while the forwarder starts.
func checkKubeconfig(ctx context.Context, path string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	return harness.Poll(ctx, 50*time.Millisecond, 10*time.Second, func() error {
		_, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		return err
	})
}

func printSummary(c *harness.Cluster) {
	fmt.Printf("\nsandbox %s is up (proxy: %s, apiserver endpoint reconciler: %s)\n", c.Opts.Prefix, c.Opts.Proxy, c.Reconciler)
	for _, n := range c.Nodes {
		fmt.Printf("  node %-12s netns %-12s ip %-12s pods %s\n", n.Name, n.Name, n.IP, n.PodCIDR)
		for _, p := range n.Pods {
			fmt.Printf("    pod %-14s netns %-14s ip %s (echo server on :%d tcp+udp)\n", p.Name, p.Name, p.IP, harness.EchoPort)
		}
	}
	fmt.Printf("  kubeconfig: %s\n  state and logs: %s\n", harness.AdminKubeconfig(c.Opts.Prefix), c.State)
}

func down(args []string) error {
	fs := flag.NewFlagSet("down", flag.ExitOnError)
	prefix := fs.String("prefix", harness.PrefixDemo, "sandbox name prefix")
	_ = fs.Parse(args)
	rep, err := harness.Cleanup(*prefix)
	if rep != nil {
		if rep.Empty() {
			fmt.Printf("sandbox %s: nothing to remove\n", *prefix)
		}
		for _, k := range rep.Killed {
			fmt.Printf("stopped  %s\n", k)
		}
		for _, n := range rep.Netns {
			fmt.Printf("deleted  netns %s\n", n)
		}
		for _, d := range rep.Dirs {
			fmt.Printf("removed  %s\n", d)
		}
	}
	return err
}

// forward is the detached API forwarder of `up`: 127.0.0.1:6443 → 192.0.2.1:6443 in the
// fabric namespace.
func forward(args []string) error {
	fs := flag.NewFlagSet("forward", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:6443", "address to listen on (caller's namespace)")
	netns := fs.String("netns", "", "network namespace name to dial from")
	target := fs.String("target", "", "address to dial")
	_ = fs.Parse(args)
	logf := func(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...) }
	f, err := harness.Forward(*listen, *netns, *target, logf)
	if err != nil {
		return err
	}
	logf("forwarding %s -> %s in netns %s", f.Addr(), *target, *netns)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return f.Close()
}
