// Command kproxy is a Kubernetes service proxy: a drop-in replacement for kube-proxy.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "v0.0.0-dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run returns the process exit code: 0 on a clean stop, 1 when kproxy fails at run time,
// 2 for a bad command line or config file. `kproxy inspect ...` is the inspect subcommand
// (inspect.go), with exit codes of its own.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "inspect" {
		return runInspect(args[1:], stdout, stderr)
	}
	cfg, showVersion, err := parseConfig(args, stdout)
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	var ue usageError
	if errors.As(err, &ue) {
		_, _ = fmt.Fprintf(stderr, "kproxy: %v (see kproxy --help)\n", err)
		return 2
	}
	if showVersion {
		_, _ = fmt.Fprintf(stdout, "kproxy %s\n", version)
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if cfg.Cleanup {
		if err := runCleanup(ctx, cfg.IPVSExcludeCIDRs); err != nil {
			_, _ = fmt.Fprintf(stderr, "kproxy: --cleanup: %v\n", err)
			return 1
		}
		return 0
	}
	if err := serve(ctx, cfg); err != nil {
		_, _ = fmt.Fprintf(stderr, "kproxy: %v\n", err)
		return 1
	}
	return 0
}
