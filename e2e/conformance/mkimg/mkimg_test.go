package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// readTar returns every entry of a tar stream: name → content (directories and links get
// "dir" and "-> target").
func readTar(t *testing.T, r io.Reader) map[string]string {
	t.Helper()
	got := map[string]string{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			got[h.Name] = "dir"
		case tar.TypeSymlink:
			got[h.Name] = "-> " + h.Linkname
		default:
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			got[h.Name] = string(b)
		}
	}
}

func TestWriteImage(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), []byte("bb"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("busybox", filepath.Join(root, "bin", "sh")); err != nil {
		t.Fatal(err)
	}
	extra := filepath.Join(dir, "agnhost")
	if err := os.WriteFile(extra, []byte("ag"), 0o644); err != nil {
		t.Fatal(err)
	}
	files, links, err := parseArgs([]string{extra + ":/usr/local/agnhost", "ln=agnhost:/usr/local/agnhost-2"})
	if err != nil {
		t.Fatal(err)
	}
	img := image{
		name: "registry.k8s.io/e2e-test-images/agnhost:2.66.1", entrypoint: []string{"/agnhost"}, cmd: []string{"pause"},
		layer: layerSpec{rootfs: root, files: files, links: links},
	}
	var first, second bytes.Buffer
	d1, err := writeImage(&first, dir, img)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := writeImage(&second, dir, img)
	if err != nil {
		t.Fatal(err)
	}
	if d1 != d2 || !bytes.Equal(first.Bytes(), second.Bytes()) {
		t.Errorf("two runs differ: %s, %s", d1, d2)
	}

	out := readTar(t, &first)
	var idx index
	if err := json.Unmarshal([]byte(out["index.json"]), &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 1 {
		t.Fatalf("index has %d manifests, want 1", len(idx.Manifests))
	}
	wantAnn := map[string]string{"io.containerd.image.name": img.name, "org.opencontainers.image.ref.name": "2.66.1"}
	if diff := cmp.Diff(wantAnn, idx.Manifests[0].Annotations); diff != "" {
		t.Errorf("annotations (-want +got):\n%s", diff)
	}
	if idx.Manifests[0].Digest != d1 {
		t.Errorf("index points at %s, writeImage returned %s", idx.Manifests[0].Digest, d1)
	}
	// Every blob is stored under its own digest.
	blob := func(d string) string {
		t.Helper()
		b, ok := out["blobs/sha256/"+d[len("sha256:"):]]
		if !ok {
			t.Fatalf("blob %s missing", d)
		}
		s := sha256.Sum256([]byte(b))
		if got := "sha256:" + hex.EncodeToString(s[:]); got != d {
			t.Fatalf("blob %s has digest %s", d, got)
		}
		return b
	}
	var man manifest
	if err := json.Unmarshal([]byte(blob(d1)), &man); err != nil {
		t.Fatal(err)
	}
	var cfg imageConfig
	if err := json.Unmarshal([]byte(blob(man.Config.Digest)), &cfg); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{man.Layers[0].Digest}, cfg.RootFS.DiffIDs); diff != "" {
		t.Errorf("diff_ids (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(runConfig{Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"}, WorkingDir: "/"}, cfg.Config); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	layer := readTar(t, bytes.NewReader([]byte(blob(man.Layers[0].Digest))))
	want := map[string]string{
		"bin/": "dir", "bin/busybox": "bb", "bin/sh": "-> busybox",
		"usr/": "dir", "usr/local/": "dir", "usr/local/agnhost": "ag", "usr/local/agnhost-2": "-> agnhost",
		"etc/": "dir", "tmp/": "dir", "proc/": "dir", "sys/": "dir", "dev/": "dir",
		"etc/passwd": defaultPasswd, "etc/group": defaultGroup,
	}
	if diff := cmp.Diff(want, layer); diff != "" {
		t.Errorf("layer (-want +got):\n%s", diff)
	}
}

func TestParseArgsErrors(t *testing.T) {
	for _, arg := range []string{"noslash", "a:relative", "ln=x", "ln=x:rel", "a:/b:9z"} {
		if _, _, err := parseArgs([]string{arg}); err == nil {
			t.Errorf("parseArgs(%q): no error", arg)
		}
	}
}

func TestRefTag(t *testing.T) {
	for name, want := range map[string]string{
		"registry.k8s.io/pause:3.10.2": "3.10.2", "localhost:5000/x": "latest", "busybox": "latest",
	} {
		if got := refTag(name); got != want {
			t.Errorf("refTag(%q) = %q, want %q", name, got, want)
		}
	}
}
