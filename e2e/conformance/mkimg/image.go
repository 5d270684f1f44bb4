package main

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// OCI media types of the image layout we write.
const (
	mediaIndex    = "application/vnd.oci.image.index.v1+json"
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar"
)

// descriptor is an OCI content descriptor.
type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    *platform         `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// imageConfig is the subset of the OCI image configuration a runtime reads.
type imageConfig struct {
	Architecture string       `json:"architecture"`
	OS           string       `json:"os"`
	Created      string       `json:"created"`
	Config       runConfig    `json:"config"`
	RootFS       rootfsConfig `json:"rootfs"`
}

type runConfig struct {
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	Env        []string `json:"Env"`
	WorkingDir string   `json:"WorkingDir"`
}

type rootfsConfig struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

type manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        descriptor   `json:"config"`
	Layers        []descriptor `json:"layers"`
}

type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

// image is what one mkimg run writes.
type image struct {
	name       string // full reference, e.g. registry.k8s.io/pause:3.10.2
	entrypoint []string
	cmd        []string
	env        []string
	layer      layerSpec
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// refTag returns the tag of a reference (the part after the last ':' that follows the last
// '/'), or "latest".
func refTag(name string) string {
	i := strings.LastIndex(name, ":")
	if i < 0 || i < strings.LastIndex(name, "/") {
		return "latest"
	}
	return name[i+1:]
}

// buildLayer writes the layer to a temporary file in dir and returns it (positioned at the
// start), its digest and size. The caller removes the file.
func buildLayer(dir string, spec layerSpec) (*os.File, string, int64, error) {
	f, err := os.CreateTemp(dir, "mkimg-layer-*")
	if err != nil {
		return nil, "", 0, err
	}
	h := sha256.New()
	err = writeLayer(io.MultiWriter(f, h), spec)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		_ = f.Close()
		_ = os.Remove(f.Name())
		return nil, "", 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		_ = os.Remove(f.Name())
		return nil, "", 0, err
	}
	return f, "sha256:" + hex.EncodeToString(h.Sum(nil)), fi.Size(), nil
}

// writeImage writes img as an OCI layout tarball to w; the layer goes through a temporary
// file in tmpDir. It returns the manifest digest.
func writeImage(w io.Writer, tmpDir string, img image) (string, error) {
	layer, layerDigest, layerSize, err := buildLayer(tmpDir, img.layer)
	if err != nil {
		return "", fmt.Errorf("layer: %w", err)
	}
	defer func() { _ = layer.Close(); _ = os.Remove(layer.Name()) }()

	cfg, err := json.Marshal(imageConfig{
		Architecture: "amd64", OS: "linux", Created: epoch.UTC().Format("2006-01-02T15:04:05Z"),
		Config: runConfig{Entrypoint: img.entrypoint, Cmd: img.cmd, Env: img.env, WorkingDir: "/"},
		RootFS: rootfsConfig{Type: "layers", DiffIDs: []string{layerDigest}},
	})
	if err != nil {
		return "", err
	}
	man, err := json.Marshal(manifest{
		SchemaVersion: 2, MediaType: mediaManifest,
		Config: descriptor{MediaType: mediaConfig, Digest: digestOf(cfg), Size: int64(len(cfg))},
		Layers: []descriptor{{MediaType: mediaLayer, Digest: layerDigest, Size: layerSize}},
	})
	if err != nil {
		return "", err
	}
	idx, err := json.Marshal(index{SchemaVersion: 2, MediaType: mediaIndex, Manifests: []descriptor{{
		MediaType: mediaManifest, Digest: digestOf(man), Size: int64(len(man)),
		Platform: &platform{Architecture: "amd64", OS: "linux"},
		Annotations: map[string]string{
			"io.containerd.image.name":          img.name,
			"org.opencontainers.image.ref.name": refTag(img.name),
		},
	}}})
	if err != nil {
		return "", err
	}

	tw := tar.NewWriter(w)
	add := func(name string, size int64, r io.Reader) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size, ModTime: epoch}); err != nil {
			return err
		}
		_, err := io.Copy(tw, r)
		return err
	}
	blob := func(d string) string { return "blobs/sha256/" + strings.TrimPrefix(d, "sha256:") }
	layout := []byte(`{"imageLayoutVersion":"1.0.0"}`)
	for _, e := range []struct {
		name string
		size int64
		r    io.Reader
	}{
		{"oci-layout", int64(len(layout)), strings.NewReader(string(layout))},
		{"index.json", int64(len(idx)), strings.NewReader(string(idx))},
		{blob(layerDigest), layerSize, layer},
		{blob(digestOf(cfg)), int64(len(cfg)), strings.NewReader(string(cfg))},
		{blob(digestOf(man)), int64(len(man)), strings.NewReader(string(man))},
	} {
		if err := add(e.name, e.size, e.r); err != nil {
			return "", fmt.Errorf("write %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	return digestOf(man), nil
}
