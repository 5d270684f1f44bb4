package harness

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/kproxy/kproxy/internal/netnsutil"
)

// DialIn dials addr from inside the network namespace ns (a name under /run/netns).
func DialIn(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := netnsutil.Do(NetnsPath(ns), func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// writeSysctl sets a per-namespace sysctl (for example net/ipv4/ip_forward) inside ns.
func writeSysctl(ns, key, value string) error {
	return netnsutil.Do(NetnsPath(ns), func() error {
		return os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644)
	})
}

// Exec runs a command inside the network namespace ns (nsenter --net, so the mount namespace
// stays the host's) and returns its combined output.
func Exec(ctx context.Context, ns string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + NetnsPath(ns), "--"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("in %s: %s: %w: %s", ns, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// ip runs one iproute2 command.
func ip(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ipBatch runs iproute2 commands, one per element, stopping at the first error.
func ipBatch(cmds ...[]string) error {
	for _, c := range cmds {
		if err := ip(c...); err != nil {
			return err
		}
	}
	return nil
}

// listNetns returns the names of the named network namespaces that start with prefix+"-".
func listNetns(prefix string) ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			names = append(names, e.Name())
		}
	}
	return names, nil
}
