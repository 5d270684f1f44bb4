package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

func readDaemonSet(t *testing.T, path ...string) *appsv1.DaemonSet {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(append([]string{"..", "..", "deploy"}, path...)...))
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict(data, &ds); err != nil {
		t.Fatal(err)
	}
	return &ds
}

// deploy/optional/datapath-daemonset.yaml is deploy/daemonset.yaml plus the datapath's flags,
// the CNI directories and the init container that installs the CNI plugins from kproxy's
// image, and nothing else: the two cannot drift apart. The flags parse.
func TestDeployDatapathDaemonSet(t *testing.T) {
	base := readDaemonSet(t, "daemonset.yaml")
	dp := readDaemonSet(t, "optional", "datapath-daemonset.yaml")
	spec := &dp.Spec.Template.Spec
	main := &spec.Containers[0]

	if len(spec.InitContainers) != 1 {
		t.Fatalf("%d init containers, want 1", len(spec.InitContainers))
	}
	ic := spec.InitContainers[0]
	script := strings.Join(ic.Command, " ")
	for _, p := range []string{"bridge", "host-local", "portmap", "loopback"} {
		if !strings.Contains(script, p) {
			t.Errorf("init container does not install %s: %q", p, script)
		}
	}
	if ic.Image != main.Image || len(ic.VolumeMounts) != 1 || ic.VolumeMounts[0].Name != "cni-bin" ||
		ic.SecurityContext == nil || ic.SecurityContext.Capabilities == nil || len(ic.SecurityContext.Capabilities.Add) != 0 {
		t.Errorf("init container: image %q (want kproxy's %q), mounts %+v, security %+v", ic.Image, main.Image, ic.VolumeMounts, ic.SecurityContext)
	}
	wantArgs := []string{"--datapath=vxlan", "--cni-conf-dir=/etc/cni/net.d"}
	for _, a := range wantArgs {
		if !slices.Contains(main.Args, a) {
			t.Errorf("kproxy args %q: no %s", main.Args, a)
		}
	}
	if _, _, err := parseConfig(append([]string{"--hostname-override=n1"}, wantArgs...), nil); err != nil {
		t.Errorf("the datapath flags do not parse: %v", err)
	}

	// Take the additions away: what is left is deploy/daemonset.yaml.
	spec.InitContainers = nil
	main.Args = slices.DeleteFunc(main.Args, func(a string) bool { return slices.Contains(wantArgs, a) })
	main.VolumeMounts = slices.DeleteFunc(main.VolumeMounts, func(m v1.VolumeMount) bool { return m.Name == "cni-conf" })
	spec.Volumes = slices.DeleteFunc(spec.Volumes, func(v v1.Volume) bool { return v.Name == "cni-conf" || v.Name == "cni-bin" })
	if d := cmp.Diff(base, dp); d != "" {
		t.Errorf("datapath DaemonSet differs from deploy/daemonset.yaml beyond the datapath (-base +datapath):\n%s", d)
	}
}
