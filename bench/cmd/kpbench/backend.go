package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/kproxy/kproxy/e2e/harness"
)

// The iptables backends a section can run on. The machine-wide alternative is never changed:
// a section puts a directory of symlinks (iptables, iptables-save, iptables-restore and the
// ip6tables ones, to xtables-nft-multi or xtables-legacy-multi) first in PATH, which every
// process kpbench starts inherits: the proxies (both exec "iptables-restore" and friends by
// name), the harness's nsenter and kpbench's own kernel reads.
const (
	backendNFT    = "nft"
	backendLegacy = "legacy"
)

var backendMulti = map[string]string{backendNFT: "xtables-nft-multi", backendLegacy: "xtables-legacy-multi"}

// backendEnv is PATH set up for one backend.
type backendEnv struct {
	name, dir, origPath string
}

// useBackend makes name the iptables of every process started from now on, until restore.
func useBackend(name string) (*backendEnv, error) {
	multi, ok := backendMulti[name]
	if !ok {
		return nil, fmt.Errorf("backend %q: want nft or legacy", name)
	}
	bin, err := exec.LookPath(multi)
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", name, err)
	}
	dir, err := os.MkdirTemp("", "kpbench-"+name+"-")
	if err != nil {
		return nil, err
	}
	for _, tool := range []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"} {
		if err := os.Symlink(bin, filepath.Join(dir, tool)); err != nil {
			return nil, err
		}
	}
	env := &backendEnv{name: name, dir: dir, origPath: os.Getenv("PATH")}
	if err := os.Setenv("PATH", dir+":"+env.origPath); err != nil {
		return nil, err
	}
	out, err := exec.Command("iptables", "--version").CombinedOutput()
	if err != nil {
		env.restore()
		return nil, fmt.Errorf("backend %s: iptables --version: %w", name, err)
	}
	if want := "(" + map[string]string{backendNFT: "nf_tables", backendLegacy: "legacy"}[name] + ")"; !strings.Contains(string(out), want) {
		env.restore()
		return nil, fmt.Errorf("backend %s: iptables --version says %q, not %s", name, strings.TrimSpace(string(out)), want)
	}
	return env, nil
}

func (e *backendEnv) restore() {
	_ = os.Setenv("PATH", e.origPath)
	_ = os.RemoveAll(e.dir)
}

// iptablesVersion is what iptables --version says now (with the section's PATH).
func iptablesVersion() string {
	out, err := exec.Command("iptables", "--version").CombinedOutput()
	if err != nil {
		return "? (" + err.Error() + ")"
	}
	return strings.TrimSpace(string(out))
}

// flushRules empties the node's packet filter: every nftables table (iptables-nft's and
// nft's) and, with the legacy backend, the legacy iptables tables too.
func flushRules(ctx context.Context, node, backend string) error {
	if _, err := harness.Exec(ctx, node, "nft", "flush", "ruleset"); err != nil {
		return err
	}
	if backend != backendLegacy {
		return nil
	}
	for _, table := range []string{"nat", "filter", "mangle", "raw"} {
		for _, op := range []string{"-F", "-X"} {
			if _, err := harness.Exec(ctx, node, "iptables", "-w", "-t", table, op); err != nil {
				return err
			}
		}
	}
	return nil
}
