package sandbox

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/kproxy/kproxy/e2e/harness"
)

// LockPrefix makes sure no other run (or a suite that takes the same lock) uses the prefix:
// a flock on /run/kproxy-e2e/<prefix>.lock, beside the harness's state directories. The
// returned func releases it.
func LockPrefix(prefix string) (func(), error) {
	if err := os.MkdirAll("/run/kproxy-e2e", 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join("/run/kproxy-e2e", prefix+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("prefix %s is in use by another run (%s.lock): %w", prefix, prefix, err)
	}
	return func() { _ = f.Close() }, nil
}

// K8sBin is dir when given, else the directory with kube-apiserver, etcd and kube-proxy that
// repo's e2e/tools/build-k8s.sh prints last (building them if needed).
func K8sBin(dir, repo string) (string, error) {
	if dir != "" {
		return dir, nil
	}
	out, err := exec.Command(filepath.Join(repo, "e2e", "tools", "build-k8s.sh")).Output()
	if err != nil {
		return "", fmt.Errorf("e2e/tools/build-k8s.sh: %w (or pass -k8s-bin)", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1], nil
}

// ErrDynamic is CheckStatic's error for a dynamically linked binary.
var ErrDynamic = errors.New("dynamically linked")

// CheckStatic fails with ErrDynamic for a dynamically linked ELF (the VM's guest has no
// libc).
func CheckStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return ErrDynamic
		}
	}
	return nil
}

// Guard claims prefix for this run (LockPrefix) and removes the sandbox if the run is
// interrupted: on SIGINT or SIGTERM it runs harness.Cleanup(prefix) (which also SIGKILLs
// stopped proxies) and ends the process with status 130. Only a command's run calls it; the
// returned func releases the lock.
func Guard(prefix string, logf func(format string, args ...any)) (func(), error) {
	unlock, err := LockPrefix(prefix)
	if err != nil {
		return nil, err
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		logf("%v: cleaning up sandbox %s", s, prefix)
		_, _ = harness.Cleanup(prefix)
		os.Exit(130)
	}()
	return unlock, nil
}

// RemoveLeftovers removes what a killed run with prefix left (harness.Cleanup) and logs it,
// if anything. Call it with the prefix locked.
func RemoveLeftovers(prefix string, logf func(format string, args ...any)) error {
	rep, err := harness.Cleanup(prefix)
	if err != nil {
		return fmt.Errorf("cleanup of an earlier run: %w", err)
	}
	if !rep.Empty() {
		logf("removed what an earlier run left: %v", rep)
	}
	return nil
}
