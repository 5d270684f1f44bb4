package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kproxy/kproxy/bench/internal/record"
	"github.com/kproxy/kproxy/bench/internal/sandbox"
)

// -vm: the host half boots the IPVS VM of e2e/vm (run-test.sh: Debian's stock kernel under
// qemu TCG, one vCPU, no NIC) with this same binary as the guest half (-guest), which runs
// the whole campaign in the VM's kernel and reports over the serial console: one line per
// run and one at the end, each "<marker><base64 of JSON>". The host half summarises, prints
// and writes the results, with the host's machine and load and the guest's kernel.

const (
	markRun  = "KPDP-RUN "
	markInfo = "KPDP-INFO "
)

// guestInfo is the guest's last line.
type guestInfo struct {
	Machine     map[string]any    `json:"machine"`
	Unavailable map[string]string `json:"unavailable,omitempty"`
	Orders      [][]string        `json:"orders"`
	Error       string            `json:"error,omitempty"`
}

func emit(mark string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		logf("encode %s: %v", strings.TrimSpace(mark), err)
		return
	}
	if _, err := os.Stdout.WriteString(mark + base64.StdEncoding.EncodeToString(b) + "\n"); err != nil {
		logf("write %s: %v", strings.TrimSpace(mark), err)
	}
}

func runGuest(ctx context.Context, cfg config) error {
	if os.Getenv("KPROXY_IN_VM") != "1" {
		return errors.New("-guest runs only inside the VM (KPROXY_IN_VM=1); use -vm on the host")
	}
	c, err := runCampaign(ctx, cfg, func(r *runResult) { emit(markRun, r) })
	info := guestInfo{Machine: c.Machine, Unavailable: c.Unavailable, Orders: c.Orders}
	if err != nil {
		info.Error = err.Error()
	}
	emit(markInfo, info)
	return err
}

// decodeLine parses one console line: a run, the guest's info, or neither (ok false).
func decodeLine(line string) (run *runResult, info *guestInfo, ok bool, err error) {
	line = strings.TrimRight(line, "\r\n")
	var mark string
	switch {
	case strings.HasPrefix(line, markRun):
		mark, run = markRun, &runResult{}
	case strings.HasPrefix(line, markInfo):
		mark, info = markInfo, &guestInfo{}
	default:
		return nil, nil, false, nil
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(line[len(mark):]))
	if err != nil {
		return nil, nil, true, fmt.Errorf("%s line: %w", strings.TrimSpace(mark), err)
	}
	if run != nil {
		err = json.Unmarshal(b, run)
	} else {
		err = json.Unmarshal(b, info)
	}
	if err != nil {
		return nil, nil, true, fmt.Errorf("%s line: %w", strings.TrimSpace(mark), err)
	}
	return run, info, true, nil
}

// guestArgs are the flags the guest half gets: the campaign's, no results file.
func guestArgs(cfg config) []string {
	return []string{"-guest",
		"-duration", cfg.Duration.String(),
		"-latency-n", strconv.Itoa(cfg.LatencyN),
		"-conn-duration", cfg.ConnDuration.String(),
		"-rounds", strconv.Itoa(cfg.Rounds),
		"-backends", strings.Join(cfg.Backends, ","),
		"-chunk", strconv.Itoa(cfg.Chunk),
		"-settle", cfg.Settle.String(),
		"-prefix", cfg.Prefix,
		"-results", "-",
	}
}

// vmTimeout: the flag, or a generous estimate (TCG: setup and latency take tens of seconds).
func vmTimeout(cfg config) time.Duration {
	if cfg.VMTimeout > 0 {
		return cfg.VMTimeout
	}
	perRun := cfg.Duration + cfg.ConnDuration + cfg.Settle + 90*time.Second
	return time.Duration(cfg.Rounds*len(cfg.Backends))*perRun + 3*time.Minute
}

func runVM(ctx context.Context, cfg config) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if err := sandbox.CheckStatic(exe); errors.Is(err, sandbox.ErrDynamic) {
		return fmt.Errorf("%s is %w: build it with CGO_ENABLED=0 (it also runs in the VM)", exe, err)
	} else if err != nil {
		return err
	}
	script := filepath.Join(record.RepoRoot(), "e2e", "vm", "run-test.sh")
	if _, err := os.Stat(script); err != nil {
		return fmt.Errorf("the VM runner: %w", err)
	}
	res := newResults(cfg, "vm")
	res.Machine = machine()
	res.Notes = append(append([]string{}, commonNotes...), vmNote)
	to := vmTimeout(cfg)
	args := append([]string{"-t", strconv.Itoa(int(to.Seconds())), exe}, guestArgs(cfg)...)
	logf("booting the VM: %s %s (timeout %s, VM_MEM=%s)", script, strings.Join(args, " "), to, cfg.VMMem)
	cmd := exec.CommandContext(ctx, script, args...)
	cmd.Env = append(os.Environ(), "VM_MEM="+cfg.VMMem)
	cmd.Stderr = os.Stderr
	// run-test.sh traps TERM: it kills qemu and removes its run directory.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	c := &campaign{}
	var info *guestInfo
	var decodeErrs []error
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		run, gi, ok, err := decodeLine(sc.Text())
		switch {
		case err != nil:
			decodeErrs = append(decodeErrs, err)
			logf("vm: %v", err)
		case run != nil:
			c.Runs = append(c.Runs, run)
		case gi != nil:
			info = gi
		case !ok:
			fmt.Fprintf(os.Stderr, "vm| %s\n", strings.TrimRight(sc.Text(), "\r"))
		}
	}
	werr := cmd.Wait()
	record.SetLoadavgAtEnd(res.Machine)
	var errs []error
	if werr != nil {
		errs = append(errs, fmt.Errorf("VM run (%s): %w", script, werr))
	}
	errs = append(errs, decodeErrs...)
	if info != nil {
		res.VM = info.Machine
		c.Unavailable, c.Orders = info.Unavailable, info.Orders
		if info.Error != "" {
			errs = append(errs, fmt.Errorf("guest: %s", info.Error))
		}
	} else {
		errs = append(errs, errors.New("the guest sent no final report (partial results)"))
	}
	return finish(cfg, res, c, errors.Join(errs...))
}
