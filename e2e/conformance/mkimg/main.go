package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkimg:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("mkimg", flag.ContinueOnError)
	name := fs.String("name", "", "image reference, e.g. registry.k8s.io/pause:3.10.2 (required)")
	out := fs.String("o", "", "output tarball (required)")
	entrypoint := fs.String("entrypoint", "", "entrypoint, space separated")
	cmd := fs.String("cmd", "", "command (arguments to the entrypoint), space separated")
	rootfs := fs.String("rootfs", "", "directory tree that becomes the image's root")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" || *out == "" {
		return fmt.Errorf("-name and -o are required")
	}
	files, links, err := parseArgs(fs.Args())
	if err != nil {
		return err
	}
	img := image{
		name:       *name,
		entrypoint: strings.Fields(*entrypoint),
		cmd:        strings.Fields(*cmd),
		env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		layer:      layerSpec{rootfs: *rootfs, files: files, links: links},
	}
	// Write next to the output and rename, so an interrupted run leaves no half tarball.
	tmp, err := os.CreateTemp(filepath.Dir(*out), ".mkimg-*.tar")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	digest, err := writeImage(tmp, filepath.Dir(*out), img)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", *out, err)
	}
	if err := os.Rename(tmp.Name(), *out); err != nil {
		return err
	}
	fmt.Printf("%s: %s manifest %s\n", *out, *name, digest)
	return nil
}
