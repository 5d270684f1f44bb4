package harness

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// DumpNode logs what a person debugging a failure on node n wants to see: its nat and filter
// rules, routes, links, neighbours, conntrack entries and the tail of its proxy log.
func (c *Cluster) DumpNode(t TB, n *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var b strings.Builder
	fmt.Fprintf(&b, "===== node %s (%s, pod CIDR %s, proxy %s) =====\n", n.Name, n.IP, n.PodCIDR, c.Opts.Proxy)
	for _, cmd := range [][]string{
		{"iptables-save"},
		{"ip", "-br", "addr"},
		{"ip", "route"},
		{"ip", "-d", "link"},
		{"ip", "neigh"},
		{"bridge", "fdb", "show", "br", nodeBridge},
		{"bridge", "fdb", "show", "dev", "kproxy.1"},
		{"conntrack", "-L"},
	} {
		out, err := Exec(ctx, n.Name, cmd...)
		fmt.Fprintf(&b, "----- %s\n%s", strings.Join(cmd, " "), out)
		if err != nil {
			fmt.Fprintf(&b, "(%v)\n", err)
		}
	}
	if c.Opts.Proxy != ProxyNone {
		fmt.Fprintf(&b, "----- tail -60 %s\n%s\n", c.ProxyLog(n), tailFile(c.ProxyLog(n), 60))
	}
	t.Logf("%s", b.String())
}
