package main

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// epoch is every entry's modification time, for reproducible digests.
var epoch = time.Unix(0, 0)

// fileSpec is one SRC:/DST[:MODE] argument: a host file copied to an absolute image path.
type fileSpec struct {
	src  string
	dst  string
	mode int64
}

// linkSpec is one ln=TARGET:/PATH argument: a symbolic link in the image.
type linkSpec struct {
	target string
	path   string
}

// layerSpec is what goes into the image's one layer, in this order.
type layerSpec struct {
	rootfs string
	files  []fileSpec
	links  []linkSpec
}

// parseArgs splits the positional arguments into files and links.
func parseArgs(args []string) ([]fileSpec, []linkSpec, error) {
	var files []fileSpec
	var links []linkSpec
	for _, a := range args {
		if rest, ok := strings.CutPrefix(a, "ln="); ok {
			target, p, ok := strings.Cut(rest, ":")
			if !ok || !path.IsAbs(p) {
				return nil, nil, fmt.Errorf("link %q: want ln=TARGET:/PATH", a)
			}
			links = append(links, linkSpec{target: target, path: p})
			continue
		}
		f := strings.Split(a, ":")
		if len(f) < 2 || len(f) > 3 || !path.IsAbs(f[1]) {
			return nil, nil, fmt.Errorf("file %q: want SRC:/DST[:MODE]", a)
		}
		spec := fileSpec{src: f[0], dst: f[1], mode: 0o755}
		if len(f) == 3 {
			m, err := strconv.ParseInt(f[2], 8, 32)
			if err != nil {
				return nil, nil, fmt.Errorf("file %q: mode: %w", a, err)
			}
			spec.mode = m
		}
		files = append(files, spec)
	}
	return files, links, nil
}

// layerWriter writes tar entries and remembers which directories and files exist, so that
// parents are created once and defaults are added only where nothing else put a file.
type layerWriter struct {
	tw    *tar.Writer
	dirs  map[string]bool
	files map[string]bool
}

func newLayerWriter(w io.Writer) *layerWriter {
	return &layerWriter{tw: tar.NewWriter(w), dirs: map[string]bool{".": true}, files: map[string]bool{}}
}

// ensureParents writes a directory entry for every missing parent of name (relative).
func (l *layerWriter) ensureParents(name string) error {
	var missing []string
	for d := path.Dir(name); !l.dirs[d]; d = path.Dir(d) {
		missing = append(missing, d)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := l.writeDir(missing[i], 0o755); err != nil {
			return err
		}
	}
	return nil
}

func (l *layerWriter) writeDir(name string, mode int64) error {
	l.dirs[name] = true
	return l.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: epoch})
}

func (l *layerWriter) writeLink(name, target string) error {
	if err := l.ensureParents(name); err != nil {
		return err
	}
	l.files[name] = true
	return l.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: epoch})
}

// writeFile copies the host file src (following symbolic links) to name.
func (l *layerWriter) writeFile(name, src string, mode int64) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", src)
	}
	if err := l.ensureParents(name); err != nil {
		return err
	}
	l.files[name] = true
	h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: fi.Size(), ModTime: epoch}
	if err := l.tw.WriteHeader(h); err != nil {
		return err
	}
	n, err := io.Copy(l.tw, f)
	if err == nil && n != fi.Size() {
		err = fmt.Errorf("%s changed while being read", src)
	}
	return err
}

func (l *layerWriter) writeBytes(name string, b []byte) error {
	if err := l.ensureParents(name); err != nil {
		return err
	}
	l.files[name] = true
	if err := l.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: epoch}); err != nil {
		return err
	}
	_, err := l.tw.Write(b)
	return err
}

// addTree adds every directory, regular file and symbolic link under root, in lexical order.
func (l *layerWriter) addTree(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		mode := int64(fi.Mode().Perm())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return l.writeLink(name, target)
		case fi.IsDir():
			return l.writeDir(name, mode)
		case fi.Mode().IsRegular():
			return l.writeFile(name, p, mode)
		default:
			return nil // devices, sockets, fifos: not part of an image
		}
	})
}

// defaultPasswd and defaultGroup let runAsUser and `id` resolve root and nobody.
const (
	defaultPasswd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
	defaultGroup  = "root:x:0:\nnogroup:x:65534:\n"
)

// writeLayer writes the layer tar of spec to w.
func writeLayer(w io.Writer, spec layerSpec) error {
	l := newLayerWriter(w)
	if spec.rootfs != "" {
		if err := l.addTree(spec.rootfs); err != nil {
			return fmt.Errorf("rootfs %s: %w", spec.rootfs, err)
		}
	}
	for _, f := range spec.files {
		if err := l.writeFile(strings.TrimPrefix(f.dst, "/"), f.src, f.mode); err != nil {
			return fmt.Errorf("add %s: %w", f.dst, err)
		}
	}
	for _, s := range spec.links {
		if err := l.writeLink(strings.TrimPrefix(s.path, "/"), s.target); err != nil {
			return fmt.Errorf("link %s: %w", s.path, err)
		}
	}
	for _, d := range []string{"etc", "tmp", "proc", "sys", "dev"} {
		if !l.dirs[d] && !l.files[d] {
			mode := int64(0o755)
			if d == "tmp" {
				mode = 0o1777
			}
			if err := l.writeDir(d, mode); err != nil {
				return err
			}
		}
	}
	// a slice, not a map: the entries' order is part of the layer's digest
	for _, f := range []struct{ name, content string }{{"etc/passwd", defaultPasswd}, {"etc/group", defaultGroup}} {
		if !l.files[f.name] {
			if err := l.writeBytes(f.name, []byte(f.content)); err != nil {
				return err
			}
		}
	}
	return l.tw.Close()
}
