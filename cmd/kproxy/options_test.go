package main

import (
	"bytes"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const goodConfig = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: 100.64.0.0/16
hostnameOverride: node-from-file
metricsBindAddress: 127.0.0.1:19249
enableProfiling: true
clientConnection:
  kubeconfig: /etc/kproxy/kubeconfig
iptables:
  syncPeriod: 10s
  minSyncPeriod: 2s
  masqueradeAll: true
`

func TestParseConfig(t *testing.T) {
	cfgFile := writeFile(t, goodConfig)
	def := defaultConfig()
	tests := []struct {
		name string
		args []string
		want func(c *Config)
	}{
		{name: "defaults", args: nil, want: func(*Config) {}},
		{
			name: "flags",
			args: []string{"--mode=iptables", "--kubeconfig=/k", "--hostname-override=Node-1",
				"--cluster-cidr=100.64.0.0/16", "--iptables-sync-period=5s", "--iptables-min-sync-period=100ms",
				"--masquerade-all", "--iptables-masquerade-bit=15", "--healthz-bind-address=127.0.0.1:1", "--profiling"},
			want: func(c *Config) {
				c.Kubeconfig = "/k"
				c.HostnameOverride = "Node-1"
				c.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("100.64.0.0/16")}
				c.SyncPeriod = 5 * time.Second
				c.MinSyncPeriod = 100 * time.Millisecond
				c.MasqueradeAll = true
				c.MasqueradeBit = 15
				c.HealthzBindAddress = "127.0.0.1:1"
				c.EnableProfiling = true
			},
		},
		{
			name: "local detection and node ports",
			args: []string{"--detect-local-mode=InterfaceNamePrefix", "--pod-interface-name-prefix=veth",
				"--nodeport-addresses=192.0.2.0/24,2001:db8:3::/64", "--service-cluster-ip-range=100.100.0.0/16"},
			want: func(c *Config) {
				c.DetectLocalMode = "InterfaceNamePrefix"
				c.PodInterfaceNamePrefix = "veth"
				c.NodePortAddresses = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8:3::/64")}
				c.ServiceCIDRs = []netip.Prefix{netip.MustParsePrefix("100.100.0.0/16")}
			},
		},
		{
			name: "nodeport primary", args: []string{"--nodeport-addresses=primary", "--detect-local-mode=NodeCIDR"},
			want: func(c *Config) { c.NodePortPrimary = true; c.DetectLocalMode = "NodeCIDR" },
		},
		{
			name: "proxy-mode alias", args: []string{"--proxy-mode=ipvs", "--ipvs-sync-period=7s", "--ipvs-scheduler=mh", "--ipvs-strict-arp", "--ipvs-exclude-cidrs=198.51.100.0/24"},
			want: func(c *Config) {
				c.Mode = "ipvs"
				c.SyncPeriod = 7 * time.Second
				c.IPVSScheduler = "mh"
				c.IPVSStrictARP = true
				c.IPVSExcludeCIDRs = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
			},
		},
		{
			name: "iptables period ignored in ipvs mode", args: []string{"--mode=ipvs", "--iptables-sync-period=7s"},
			want: func(c *Config) { c.Mode = "ipvs" },
		},
		{
			name: "config file",
			args: []string{"--config=" + cfgFile},
			want: func(c *Config) {
				c.Kubeconfig = "/etc/kproxy/kubeconfig"
				c.HostnameOverride = "node-from-file"
				c.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("100.64.0.0/16")}
				c.MetricsBindAddress = "127.0.0.1:19249"
				c.SyncPeriod = 10 * time.Second
				c.MinSyncPeriod = 2 * time.Second
				c.MasqueradeAll = true
				c.EnableProfiling = true
			},
		},
		{
			name: "flags override the config file",
			args: []string{"--config=" + cfgFile, "--hostname-override=n2", "--iptables-sync-period=20s", "--masquerade-all=false", "--profiling=false"},
			want: func(c *Config) {
				c.Kubeconfig = "/etc/kproxy/kubeconfig"
				c.HostnameOverride = "n2"
				c.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("100.64.0.0/16")}
				c.MetricsBindAddress = "127.0.0.1:19249"
				c.SyncPeriod = 20 * time.Second
				c.MinSyncPeriod = 2 * time.Second
				c.MasqueradeAll = false
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := parseConfig(tc.args, io.Discard)
			if err != nil {
				t.Fatalf("parseConfig(%q): %v", tc.args, err)
			}
			want := def
			tc.want(&want)
			if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

// TestBadInputExitsTwo checks that every bad flag, flag value and config file gives one
// line on stderr and exit code 2, before anything starts.
func TestBadInputExitsTwo(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantMsg string
	}{
		{"unknown flag", []string{"--no-such-flag"}, "unknown flag"},
		{"unknown mode", []string{"--mode=userspace"}, `unknown proxy mode "userspace"`},
		{"bad duration", []string{"--iptables-sync-period=soon"}, "invalid argument"},
		{"negative sync period", []string{"--iptables-sync-period=-1s"}, "sync period must be positive"},
		{"min above max", []string{"--iptables-sync-period=1s", "--iptables-min-sync-period=2s"}, "min sync period"},
		{"bad cidr", []string{"--cluster-cidr=100.64.0.0/33"}, "invalid --cluster-cidr"},
		{"bad bind address", []string{"--bind-address=localhost"}, "invalid --bind-address"},
		{"bad healthz address", []string{"--healthz-bind-address=:::"}, "invalid --healthz-bind-address"},
		{"masquerade bit", []string{"--iptables-masquerade-bit=32"}, "masquerade-bit"},
		{"stray argument", []string{"iptables"}, "unexpected argument"},
		{"unknown ipvs scheduler", []string{"--mode=ipvs", "--ipvs-scheduler=fastest"}, "invalid --ipvs-scheduler"},
		{"negative ipvs timeout", []string{"--ipvs-udp-timeout=-1s"}, "must not be negative"},
		{"bad exclude cidr", []string{"--ipvs-exclude-cidrs=10.0.0.0/8,x"}, "invalid --ipvs-exclude-cidrs"},
		{"unknown detect-local-mode", []string{"--detect-local-mode=Magic"}, "unknown --detect-local-mode"},
		{"bridge mode without bridge", []string{"--detect-local-mode=BridgeInterface"}, "needs --pod-bridge-interface"},
		{"bad nodeport address", []string{"--nodeport-addresses=192.0.2.0/24,nope"}, "invalid --nodeport-addresses"},
		{"primary with cidrs", []string{"--nodeport-addresses=primary,192.0.2.0/24"}, "cannot be combined"},
		{"bad service cidr", []string{"--service-cluster-ip-range=100.100.0.0"}, "invalid --service-cluster-ip-range"},
		{"missing config file", []string{"--config=/nonexistent/kproxy.yaml"}, "read --config"},
		{"malformed config file", []string{"--config=" + writeFile(t, "apiVersion: [\n")}, "parse --config"},
		{"unknown config field", []string{"--config=" + writeFile(t, goodConfig+"iptabels: {}\n")}, "unknown field"},
		{"wrong kind", []string{"--config=" + writeFile(t, "apiVersion: v1\nkind: ConfigMap\n")}, "want apiVersion"},
		{"bad cidr in file", []string{"--config=" + writeFile(t, strings.Replace(goodConfig, "100.64.0.0/16", "nope", 1))}, "clusterCIDR"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, &stdout, &stderr)
			if code != 2 {
				t.Errorf("exit code = %d, want 2 (stderr %q)", code, stderr.String())
			}
			msg := stderr.String()
			if !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("stderr %q does not contain %q", msg, tc.wantMsg)
			}
			if strings.Count(msg, "\n") != 1 {
				t.Errorf("stderr has %d lines, want 1: %q", strings.Count(msg, "\n"), msg)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--version"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit code %d, stderr %q", code, stderr.String())
	}
	if !strings.HasPrefix(stdout.String(), "kproxy ") {
		t.Errorf("stdout %q", stdout.String())
	}
}

// --datapath and its companions: defaults, values, and bad combinations are usage errors.
func TestDatapathFlags(t *testing.T) {
	cfg, _, err := parseConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Datapath != "none" || cfg.CNIConfDir != "/etc/cni/net.d" || cfg.VXLANDirectRouting || cfg.DatapathUnderlayInterface != "" {
		t.Errorf("defaults: datapath %q, cni-conf-dir %q, direct routing %v, underlay %q", cfg.Datapath, cfg.CNIConfDir, cfg.VXLANDirectRouting, cfg.DatapathUnderlayInterface)
	}
	cfg, _, err = parseConfig([]string{"--datapath=vxlan", "--vxlan-direct-routing", "--cni-conf-dir=/run/cni", "--datapath-underlay-interface=eth1"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Datapath != "vxlan" || !cfg.VXLANDirectRouting || cfg.CNIConfDir != "/run/cni" || cfg.DatapathUnderlayInterface != "eth1" {
		t.Errorf("set: %+v", cfg)
	}
	for _, args := range [][]string{
		{"--datapath=flannel"},
		{"--datapath="},
		{"--datapath=host-gw", "--vxlan-direct-routing"},
		{"--vxlan-direct-routing"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "datapath") {
			t.Errorf("%q: exit code %d, stderr %q; want 2 naming the datapath", args, code, stderr.String())
		}
	}
}
