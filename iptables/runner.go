package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"

	goiptables "github.com/coreos/go-iptables/iptables"
)

// Options configures the real implementation.
type Options struct {
	// IPv6 selects ip6tables instead of iptables.
	IPv6 bool
	// NetNSPath is the network namespace every command runs in (for example
	// /run/netns/node-1), through nsenter --net=PATH. Empty means the caller's namespace.
	NetNSPath string
}

// Runner is the real Interface: it execs iptables-restore, iptables-save and iptables
// (ip6tables-* for IPv6), inside Options.NetNSPath when set. Every command gets -w (wait for
// the xtables lock) where the tool takes it.
type Runner struct {
	opts Options

	backendOnce sync.Once
	nft         bool // the tools are iptables-nft (nftBackend)

	mu sync.Mutex
	// saved is the size of each table's last iptables-save output: the next read's buffer
	// starts that large (a 10,000-service nat table is 18 MB; grown by doubling, the
	// buffer left about twice that behind it).
	saved map[Table]int
}

var _ Interface = (*Runner)(nil)

// New returns a Runner. It runs nothing: a missing binary shows up on the first call.
func New(opts Options) *Runner { return &Runner{opts: opts} }

// Family returns the family the Runner programs.
func (r *Runner) Family() Family {
	if r.opts.IPv6 {
		return IPv6
	}
	return IPv4
}

func (r *Runner) tool(name string) string {
	if r.opts.IPv6 {
		return "ip6" + name
	}
	return "ip" + name
}

// command builds the exec of tool with args, wrapped in nsenter when a namespace is set.
func (r *Runner) command(ctx context.Context, tool string, args ...string) *exec.Cmd {
	if r.opts.NetNSPath == "" {
		return exec.CommandContext(ctx, tool, args...)
	}
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + r.opts.NetNSPath, "--", tool}, args...)...)
}

// run execs the command and returns its stdout, read into a buffer of at least size bytes;
// a failure carries stderr.
func (r *Runner) run(cmd *exec.Cmd, size int) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	stdout.Grow(size)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.Bytes(), &execError{args: cmd.Args, stderr: strings.TrimSpace(stderr.String()), err: err}
	}
	return stdout.Bytes(), nil
}

// execError is a command that failed to run or exited non-zero.
type execError struct {
	args   []string
	stderr string
	err    error
}

func (e *execError) Error() string {
	return fmt.Sprintf("%s: %v: %s", strings.Join(e.args, " "), e.err, e.stderr)
}

func (e *execError) Unwrap() error { return e.err }

// exitCode returns the command's exit status, or -1 when it did not run to an exit.
func (e *execError) exitCode() int {
	var ee *exec.ExitError
	if errors.As(e.err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// Restore runs iptables-restore --noflush -w with data on stdin.
func (r *Runner) Restore(ctx context.Context, data []byte) error {
	cmd := r.command(ctx, r.tool("tables-restore"), "--noflush", "-w")
	cmd.Stdin = bytes.NewReader(data)
	_, err := r.run(cmd, 0)
	var ee *execError
	if errors.As(err, &ee) && ee.exitCode() > 0 && !strings.HasPrefix(ee.stderr, "nsenter:") {
		return parseRestoreError(ee.stderr)
	}
	return err
}

// Save runs iptables-save -t table.
func (r *Runner) Save(ctx context.Context, table Table) ([]byte, error) {
	r.mu.Lock()
	last := r.saved[table]
	r.mu.Unlock()
	out, err := r.run(r.command(ctx, r.tool("tables-save"), "-t", string(table)), last+last/16+4096)
	if err == nil {
		r.mu.Lock()
		if r.saved == nil {
			r.saved = map[Table]int{}
		}
		r.saved[table] = len(out)
		r.mu.Unlock()
	}
	return out, err
}

// EnsureChain runs iptables -w -t table -N chain; "Chain already exists" means it existed.
func (r *Runner) EnsureChain(ctx context.Context, table Table, chain Chain) (bool, error) {
	_, err := r.run(r.command(ctx, r.tool("tables"), "-w", "-t", string(table), "-N", string(chain)), 0)
	var ee *execError
	if errors.As(err, &ee) && ee.exitCode() == 1 && strings.Contains(ee.stderr, "already exists") {
		return true, nil
	}
	return false, err
}

// EnsureRule runs iptables -C, and -I or -A when the rule is not there. -C exits 1 when the
// rule does not exist; anything else is an error.
func (r *Runner) EnsureRule(ctx context.Context, pos RulePosition, table Table, chain Chain, args ...string) (bool, error) {
	base := []string{"-w", "-t", string(table)}
	_, err := r.run(r.command(ctx, r.tool("tables"), append(append(base, "-C", string(chain)), args...)...), 0)
	if err == nil {
		return true, nil
	}
	var ee *execError
	if !errors.As(err, &ee) || ee.exitCode() != 1 {
		return false, err
	}
	_, err = r.run(r.command(ctx, r.tool("tables"), append(append(base, string(pos), string(chain)), args...)...), 0)
	return false, err
}

// HasRandomFully reports whether the installed iptables supports MASQUERADE --random-fully
// (iptables 1.6.2 and later). It only looks at the binary's version, which does not depend on
// the network namespace.
func (r *Runner) HasRandomFully() (bool, error) {
	proto := goiptables.ProtocolIPv4
	if r.opts.IPv6 {
		proto = goiptables.ProtocolIPv6
	}
	ipt, err := goiptables.New(goiptables.IPFamily(proto))
	if err != nil {
		return false, fmt.Errorf("detect iptables version: %w", err)
	}
	return ipt.HasRandomFully(), nil
}

var (
	// "iptables-restore v1.8.9 (nf_tables): Chain 'X' does not exist\nError occurred at line: 4"
	reOccurred = regexp.MustCompile(`Error occurred at line: (\d+)`)
	// "iptables-restore: line 2 failed: No chain/target/match by that name."
	reFailed = regexp.MustCompile(`line (\d+) failed:?\s*(.*)`)
	// "line 2: CHAIN_DEL failed (Device or resource busy): chain KUBE-SVC-A"
	reLineColon = regexp.MustCompile(`(?m)^line (\d+): (.*)`)
	// "iptables-restore: COMMIT expected at line 4"
	reCommit = regexp.MustCompile(`(COMMIT expected) at line (\d+)`)
	// "iptables-restore v1.8.9 (nf_tables): " prefix of messages
	rePrefix = regexp.MustCompile(`^ip6?tables-restore( v[^:]*)?:\s*`)
)

// parseRestoreError turns iptables-restore's stderr into a *RestoreError.
func parseRestoreError(stderr string) *RestoreError {
	atoi := func(s string) int { n, _ := strconv.Atoi(s); return n }
	if m := reOccurred.FindStringSubmatch(stderr); m != nil {
		return &RestoreError{Line: atoi(m[1]), Msg: firstMessage(stderr[:strings.Index(stderr, m[0])])}
	}
	if m := reLineColon.FindStringSubmatch(stderr); m != nil {
		return &RestoreError{Line: atoi(m[1]), Msg: strings.TrimSpace(m[2])}
	}
	if m := reFailed.FindStringSubmatch(stderr); m != nil {
		return &RestoreError{Line: atoi(m[1]), Msg: strings.TrimSpace(m[2])}
	}
	if m := reCommit.FindStringSubmatch(stderr); m != nil {
		return &RestoreError{Line: atoi(m[2]), Msg: m[1]}
	}
	return &RestoreError{Msg: firstMessage(stderr)}
}

// firstMessage returns the first non-empty line of s without the tool's name prefix.
func firstMessage(s string) string {
	for _, line := range strings.Split(s, "\n") {
		if line = strings.TrimSpace(rePrefix.ReplaceAllString(strings.TrimSpace(line), "")); line != "" {
			return line
		}
	}
	return strings.TrimSpace(s)
}
