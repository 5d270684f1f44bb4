package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// TestDeployConfigMapParses reads deploy/configmap.yaml's KubeProxyConfiguration with
// kproxy's own strict parser and the DaemonSet's flags, so that a field kproxy rejects never
// ships in the manifests.
func TestDeployConfigMapParses(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "configmap.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cm v1.ConfigMap
	if err := yaml.UnmarshalStrict(data, &cm); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "config.conf")
	if err := os.WriteFile(conf, []byte(cm.Data["config.conf"]), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := parseConfig([]string{"--config=" + conf, "--hostname-override=node-1"}, nil)
	if err != nil {
		t.Fatalf("kproxy rejects the ConfigMap's config.conf: %v", err)
	}
	want := defaultConfig()
	want.HostnameOverride = "node-1"
	want.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("100.64.0.0/16")}
	want.Kubeconfig = "/var/lib/kproxy/kubeconfig.conf"
	if diff := cmp.Diff(want, cfg, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("config from deploy/configmap.yaml (-want +got):\n%s", diff)
	}
	if _, ok := cm.Data["kubeconfig.conf"]; !ok {
		t.Error("the ConfigMap has no kubeconfig.conf, which config.conf points to")
	}
}
