package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// dumpSectionLines is how many lines of each section DumpNode logs; the whole dump goes to a
// file. A failing test's own messages stand above its dumps, and a log that ends in thousands
// of rule lines hides them from whoever reads only its tail (a CI summary).
const dumpSectionLines = 25

// DumpNode shows what a person debugging a failure on node n wants to see: its nat and filter
// rules, routes, links, neighbours, FDB, conntrack entries and the tail of its proxy log. The
// whole dump is written to a file under $KPROXY_E2E_DUMP_DIR (default
// /tmp/kproxy-e2e-dumps/<test>/<node>.txt); the test log gets the first lines of each section
// and the file's path.
func (c *Cluster) DumpNode(t TB, n *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// keepEnd: the test log gets a section's last lines (a log) instead of its first.
	type section struct {
		title, body string
		keepEnd     bool
	}
	var sections []section
	for _, cmd := range [][]string{
		{"iptables-save"},
		{"ip", "-br", "addr"},
		{"ip", "route"},
		{"ip", "-d", "link"},
		{"ip", "neigh"},
		{"bridge", "fdb", "show", "br", nodeBridge},
		{"bridge", "fdb", "show", "dev", "kproxy.1"},
		{"conntrack", "-L"},
	} {
		out, err := Exec(ctx, n.Name, cmd...)
		if err != nil {
			out += fmt.Sprintf("(%v)\n", err)
		}
		sections = append(sections, section{title: strings.Join(cmd, " "), body: out})
	}
	if c.Opts.Proxy != ProxyNone {
		sections = append(sections, section{title: "tail -60 " + c.ProxyLog(n), body: tailFile(c.ProxyLog(n), 60) + "\n", keepEnd: true})
	}
	header := fmt.Sprintf("===== node %s (%s, pod CIDR %s, proxy %s) =====\n", n.Name, n.IP, n.PodCIDR, c.Opts.Proxy)
	var full, short strings.Builder
	full.WriteString(header)
	for _, s := range sections {
		fmt.Fprintf(&full, "----- %s\n%s", s.title, s.body)
	}
	test := "dump"
	if named, ok := t.(interface{ Name() string }); ok {
		test = named.Name()
	}
	path, werr := writeDump(test, n.Name, full.String())
	short.WriteString(header)
	if werr != nil {
		fmt.Fprintf(&short, "(whole dump not written: %v)\n", werr)
	} else {
		fmt.Fprintf(&short, "whole dump: %s\n", path)
	}
	for _, s := range sections {
		lines := strings.Split(strings.TrimRight(s.body, "\n"), "\n")
		fmt.Fprintf(&short, "----- %s\n", s.title)
		if s.keepEnd && len(lines) > dumpSectionLines {
			lines = lines[len(lines)-dumpSectionLines:]
		} else if len(lines) > dumpSectionLines {
			more := len(lines) - dumpSectionLines
			lines = append(lines[:dumpSectionLines], fmt.Sprintf("(+%d lines in the whole dump)", more))
		}
		short.WriteString(strings.Join(lines, "\n") + "\n")
	}
	t.Logf("%s", short.String())
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// writeDump writes one node's dump for a test and returns its path.
func writeDump(test, node, text string) (string, error) {
	dir := os.Getenv("KPROXY_E2E_DUMP_DIR")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "kproxy-e2e-dumps")
	}
	dir = filepath.Join(dir, unsafeName.ReplaceAllString(test, "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, node+".txt")
	return path, os.WriteFile(path, []byte(text), 0o644)
}
