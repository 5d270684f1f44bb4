// Package netnsutil runs Go code inside another network namespace. Tests and the e2e harness
// use it to open sockets in the namespaces they create; production code binds kernel handles
// to a namespace path where it can (netlink.NewHandleAt, nsenter for execs) and uses Do where
// only a thread in the namespace will do (ipvs.Kernel opening /proc/thread-self/net/ip_vs).
package netnsutil

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// Path is the file of a named network namespace (as `ip netns add NAME` creates it).
func Path(name string) string { return filepath.Join("/run/netns", name) }

// Do runs fn on an OS thread that has joined the network namespace at path, then puts the
// thread back into the namespace it came from. If it cannot, the thread stays locked and the
// Go runtime discards it when the goroutine ends, so no other goroutine ever runs in the
// wrong namespace. Sockets created by fn stay in the namespace they were created in. fn runs
// on another goroutine: it must not call testing.T's Fatal methods.
func Do(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer func() { _ = orig.Close() }()
		target, err := os.Open(path)
		if err != nil {
			errc <- fmt.Errorf("open netns: %w", err)
			return
		}
		defer func() { _ = target.Close() }()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", path, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}
