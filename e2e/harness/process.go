package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// process is a daemon the harness started: its own session (so a terminal's Ctrl-C reaches
// only the harness, which then cleans up), stdout and stderr to a log file, stdin /dev/null.
type process struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and was reaped
	err  error         // its exit status, valid after done
}

// startOptions describes one daemon.
type startOptions struct {
	name string   // pid and log file name
	ns   string   // network namespace name; "" runs it in the caller's namespace
	args []string // binary and arguments
}

// start launches a daemon and records its pid under the state directory. With a netns it is
// `nsenter --net=/run/netns/NS -- binary args`: nsenter execs, so the pid is the daemon's.
func start(stateDir string, o startOptions) (*process, error) {
	argv := o.args
	if o.ns != "" {
		argv = append([]string{"nsenter", "--net=" + NetnsPath(o.ns), "--"}, o.args...)
	}
	logPath := filepath.Join(stateDir, "logs", o.name+".log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer func() { _ = logf.Close() }()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = daemonEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", o.name, err)
	}
	p := &process{name: o.name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	if err := writePidFile(stateDir, o.name, cmd.Process.Pid); err != nil {
		_ = cmd.Process.Kill()
		return nil, err
	}
	return p, nil
}

// exited reports whether the process has ended, with its status.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// checkAlive returns an error with the log tail if the process has ended.
func (p *process) checkAlive() error {
	if gone, err := p.exited(); gone {
		if err == nil {
			err = errors.New("exit status 0")
		}
		return fmt.Errorf("%s exited (%w); last lines of %s:\n%s", p.name, err, p.log, tailFile(p.log, 25))
	}
	return nil
}

// daemonEnv is the environment without ETCD_* variables (etcd reads them as flags).
func daemonEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") {
			env = append(env, kv)
		}
	}
	return env
}

// A pid file holds "pid starttime": the start time (clock ticks since boot, /proc/pid/stat
// field 22) tells a recycled pid from ours.
func writePidFile(stateDir, name string, pid int) error {
	dir := filepath.Join(stateDir, "pids")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	st, err := procStartTime(pid)
	if err != nil {
		return fmt.Errorf("pid file for %s: %w", name, err)
	}
	return os.WriteFile(filepath.Join(dir, name+".pid"), fmt.Appendf(nil, "%d %d\n", pid, st), 0o644)
}

// pidRecord is one pid file.
type pidRecord struct {
	name  string
	pid   int
	start uint64
}

func readPidFiles(stateDir string) []pidRecord {
	files, _ := filepath.Glob(filepath.Join(stateDir, "pids", "*.pid"))
	var recs []pidRecord
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var r pidRecord
		if _, err := fmt.Sscanf(string(b), "%d %d", &r.pid, &r.start); err != nil || r.pid <= 1 {
			continue
		}
		r.name = strings.TrimSuffix(filepath.Base(f), ".pid")
		recs = append(recs, r)
	}
	return recs
}

// procStat returns the state letter and start time of a process.
func procStat(pid int) (state byte, start uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) may hold spaces: parse after its closing parenthesis.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, errors.New("bad /proc stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, 0, errors.New("short /proc stat")
	}
	start, err = strconv.ParseUint(f[19], 10, 64) // field 22 overall
	return f[0][0], start, err
}

func procStartTime(pid int) (uint64, error) {
	_, st, err := procStat(pid)
	return st, err
}

// alive reports whether pid runs (a zombie counts as gone).
func alive(pid int) bool {
	state, _, err := procStat(pid)
	return err == nil && state != 'Z' && state != 'X'
}

// procName is the process's command name, for reports.
func procName(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return "?"
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	return filepath.Base(args[0])
}

// killAll sends SIGTERM to every pid, waits up to grace for them to end, then sends SIGKILL
// to the rest and waits for them to disappear. It returns the pids still alive.
func killAll(pids []int, grace time.Duration) []int {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	left := waitGone(pids, grace)
	for _, pid := range left {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return waitGone(left, 3*time.Second)
}

func waitGone(pids []int, d time.Duration) []int {
	deadline := time.Now().Add(d)
	for {
		var left []int
		for _, pid := range pids {
			if alive(pid) {
				left = append(left, pid)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tailFile returns the last n lines of a file.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
