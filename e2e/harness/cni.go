package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/kproxy/kproxy/internal/netnsutil"
)

// With Options.CNIBin the pods join their node the way a container runtime attaches them:
// the harness loads the conflist node n's kproxy wrote (the first *.conflist of
// CNIConfDir(n) by name, as containerd and CRI-O pick it) with libcni and runs ADD for the
// pod's namespace, which execs the upstream bridge, host-local and portmap plugins found in
// CNIBin (built by datapath/cni/build-plugins.sh). The bridge plugin makes cni0 and the host
// end of the pod's veth in the namespace of the process that runs it, and libcni execs the
// plugins as children of the caller, so the libcni call runs on an OS thread that joined
// the node's namespace (netnsutil.Do): the children start there, and CNI_NETNS names the
// pod's. host-local keeps its leases, and libcni its cache of results, in the state directory
// instead of /var/lib/cni. DelCNIPod (and RemoveNode) run DEL with the cached result.

// cniIfName is the pod's interface.
const cniIfName = "eth0"

// cniAttachment is what DEL needs: the network as ADD loaded it and the runtime arguments.
type cniAttachment struct {
	conf *libcni.CNIConfig
	list *libcni.NetworkConfigList
	rt   *libcni.RuntimeConf
}

// IPAMDir is host-local's data directory for node n: one file per leased address, under
// the network's name.
func (c *Cluster) IPAMDir(n *Node) string { return filepath.Join(c.State, "cni", "ipam-"+n.Name) }

// cniCacheDir is libcni's cache of ADD results (DEL reads it).
func (c *Cluster) cniCacheDir() string { return filepath.Join(c.State, "cni", "cache") }

// loadCNINetwork loads node n's conflist as a runtime would and points host-local at
// IPAMDir(n).
func (c *Cluster) loadCNINetwork(n *Node) (*libcni.NetworkConfigList, error) {
	files, err := libcni.ConfFiles(c.CNIConfDir(n), []string{".conflist"})
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("node %s: no conflist in %s", n.Name, c.CNIConfDir(n))
	}
	sort.Strings(files)
	list, err := libcni.ConfListFromFile(files[0])
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", n.Name, err)
	}
	for i, p := range list.Plugins {
		if p.Network.IPAM.Type != "host-local" {
			continue
		}
		var conf struct {
			IPAM map[string]any `json:"ipam"`
		}
		if err := json.Unmarshal(p.Bytes, &conf); err != nil {
			return nil, fmt.Errorf("node %s: plugin %s: %w", n.Name, p.Network.Type, err)
		}
		conf.IPAM["dataDir"] = c.IPAMDir(n)
		if list.Plugins[i], err = libcni.InjectConf(p, map[string]any{"ipam": conf.IPAM}); err != nil {
			return nil, fmt.Errorf("node %s: plugin %s: %w", n.Name, p.Network.Type, err)
		}
	}
	return list, nil
}

// waitConflist waits until node n's kproxy has written its conflist.
func (c *Cluster) waitConflist(ctx context.Context, n *Node) error {
	return poll(ctx, 50*time.Millisecond, 15*time.Second, func() error {
		_, err := c.ConflistMTU(n)
		return err
	})
}

// attachCNIPod creates pod p's namespace, runs the CNI ADD for it from node p.Node's
// namespace, records the address host-local gave it and starts its echo server.
func (c *Cluster) attachCNIPod(ctx context.Context, p *Pod) error {
	n := p.Node
	list, err := c.loadCNINetwork(n)
	if err != nil {
		return err
	}
	if err := ipBatch([]string{"netns", "add", p.Name}, []string{"-n", p.Name, "link", "set", "lo", "up"}); err != nil {
		return err
	}
	a := &cniAttachment{
		conf: libcni.NewCNIConfigWithCacheDir([]string{c.Opts.CNIBin}, c.cniCacheDir(), nil),
		list: list,
		rt:   &libcni.RuntimeConf{ContainerID: p.Name, NetNS: NetnsPath(p.Name), IfName: cniIfName},
	}
	var res *types100.Result
	err = netnsutil.Do(NetnsPath(n.Name), func() error {
		r, err := a.conf.AddNetworkList(ctx, a.list, a.rt)
		if err != nil {
			return err
		}
		res, err = types100.NewResultFromResult(r)
		return err
	})
	if err != nil {
		return fmt.Errorf("CNI ADD of pod %s on %s: %w", p.Name, n.Name, err)
	}
	p.cni = a
	if len(res.IPs) == 0 {
		return fmt.Errorf("CNI ADD of pod %s on %s: no address in the result %v", p.Name, n.Name, res)
	}
	ip, ok := netip.AddrFromSlice(res.IPs[0].Address.IP)
	if !ok {
		return fmt.Errorf("CNI ADD of pod %s: address %v", p.Name, res.IPs[0].Address)
	}
	p.IP = ip.Unmap()
	return c.startEcho(ctx, p)
}

// detachCNIPod stops pod p's echo server and runs the CNI DEL for it from its node's
// namespace (the bridge plugin deletes the veth, host-local releases the address, libcni
// drops its cached result). The pod's namespace stays.
func (c *Cluster) detachCNIPod(ctx context.Context, p *Pod) error {
	p.stopEcho()
	if p.cni == nil {
		return nil
	}
	a := p.cni
	if err := netnsutil.Do(NetnsPath(p.Node.Name), func() error {
		return a.conf.DelNetworkList(ctx, a.list, a.rt)
	}); err != nil {
		return fmt.Errorf("CNI DEL of pod %s on %s: %w", p.Name, p.Node.Name, err)
	}
	p.cni = nil
	return nil
}

// attachCNIPods attaches every pod of node n once its kproxy has written the conflist.
func (c *Cluster) attachCNIPods(ctx context.Context, n *Node) error {
	if err := c.waitConflist(ctx, n); err != nil {
		return err
	}
	for _, p := range n.Pods {
		if err := c.attachCNIPod(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// AddCNIPod adds a pod to node n (n.Pods), attached by the CNI plugins through libcni with
// the conflist n's kproxy wrote, and starts its echo server. Needs Options.CNIBin.
func (c *Cluster) AddCNIPod(ctx context.Context, n *Node) (*Pod, error) {
	if c.Opts.CNIBin == "" {
		return nil, errors.New("AddCNIPod: the sandbox has no Options.CNIBin")
	}
	j := 1
	for slices.ContainsFunc(n.Pods, func(p *Pod) bool { return p.Name == podName(c.Opts.Prefix, n.Index, j) }) {
		j++
	}
	p := &Pod{Name: podName(c.Opts.Prefix, n.Index, j), Node: n}
	n.Pods = append(n.Pods, p)
	return p, c.attachCNIPod(ctx, p)
}

// DelCNIPod removes pod p, which the CNI plugins attached: CNI DEL, then its namespace goes
// and it leaves p.Node.Pods.
func (c *Cluster) DelCNIPod(ctx context.Context, p *Pod) error {
	if p.cni == nil {
		return fmt.Errorf("pod %s was not attached by CNI", p.Name)
	}
	if err := c.detachCNIPod(ctx, p); err != nil {
		return err
	}
	p.Node.Pods = slices.DeleteFunc(p.Node.Pods, func(o *Pod) bool { return o == p })
	return ip("netns", "del", p.Name)
}

// CNICachedResults lists libcni's cached ADD results for pod p (DEL removes them).
func (c *Cluster) CNICachedResults(p *Pod) ([]string, error) {
	return filepath.Glob(filepath.Join(c.cniCacheDir(), "results", "*-"+p.Name+"-"+cniIfName))
}
