package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const kproxyXML = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites><testsuite name="Kubernetes e2e suite">
  <testcase name="[SynchronizedBeforeSuite]" status="passed"></testcase>
  <testcase name="[It] [sig-network] Services should serve a basic endpoint from pods [Conformance]" status="passed"></testcase>
  <testcase name="[It] [sig-network] Services should be able to create a functioning NodePort service [Conformance]" status="failed"><failure message="x">boom</failure></testcase>
  <testcase name="[It] [sig-network] Services should have session affinity work for service with type clusterIP" status="failed"><failure message="x">boom</failure></testcase>
  <testcase name="[It] [sig-network] Services should work after restarting apiserver [Disruptive]" status="skipped"><skipped message="skipped"/></testcase>
  <testcase name="[It] [sig-network] Services should implement NodePort and HealthCheckNodePort correctly" status="skipped"><skipped message="skipped - Need at least 3 schedulable nodes for this test"/></testcase>
</testsuite></testsuites>`

const kubeProxyXML = `<testsuites><testsuite>
  <testcase name="[It] [sig-network] Services should serve a basic endpoint from pods [Conformance]" status="passed"></testcase>
  <testcase name="[It] [sig-network] Services should be able to create a functioning NodePort service [Conformance]" status="passed"></testcase>
  <testcase name="[It] [sig-network] Services should have session affinity work for service with type clusterIP" status="failed"><failure/></testcase>
</testsuite></testsuites>`

func TestReport(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.xml"), filepath.Join(dir, "b.xml")
	for f, s := range map[string]string{a: kproxyXML, b: kubeProxyXML} {
		if err := os.WriteFile(f, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var out strings.Builder
	regressed, err := mainErr([]string{"kproxy=" + a, "kube-proxy=" + b}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if !regressed {
		t.Error("regressed = false, want true (NodePort failed only with kproxy)")
	}
	want := `| spec | kproxy | kube-proxy |
| --- | --- | --- |
| [sig-network] Services should be able to create a functioning NodePort service [Conformance] | FAIL | pass |
| [sig-network] Services should have session affinity work for service with type clusterIP | FAIL | FAIL |
| [sig-network] Services should implement NodePort and HealthCheckNodePort correctly | skip | - |
| [sig-network] Services should serve a basic endpoint from pods [Conformance] | pass | pass |

kproxy: 1 passed, 2 failed, 1 skipped
kube-proxy: 2 passed, 1 failed, 0 skipped (1 not run)

skipped at run time:
- [sig-network] Services should implement NodePort and HealthCheckNodePort correctly (kproxy: Need at least 3 schedulable nodes for this test)

kproxy failed 1 specs that the others passed:
- [sig-network] Services should be able to create a functioning NodePort service [Conformance]
`
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("table (-want +got):\n%s", diff)
	}
}

func TestReportSingleRunAndMissingFile(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.xml")
	if err := os.WriteFile(a, []byte(kubeProxyXML), 0o644); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	regressed, err := mainErr([]string{"kproxy=" + a}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if !regressed {
		t.Error("a single run with a failure: regressed = false, want true")
	}
	regressed, err = mainErr([]string{"kproxy=" + a, "kube-proxy=" + filepath.Join(dir, "none.xml")}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if regressed {
		t.Error("against a run that did not happen: regressed = true, want false")
	}
}
