package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CleanupReport says what Cleanup removed and what it could not.
type CleanupReport struct {
	Killed   []string // "name (pid N)"
	Netns    []string
	Dirs     []string
	Leftover []string // anything still there afterwards; empty on success
}

// Empty reports whether there was nothing to clean up.
func (r *CleanupReport) Empty() bool {
	return len(r.Killed) == 0 && len(r.Netns) == 0 && len(r.Dirs) == 0
}

// String is a human summary.
func (r *CleanupReport) String() string {
	if r.Empty() && len(r.Leftover) == 0 {
		return "nothing to remove"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "killed %d processes", len(r.Killed))
	if len(r.Killed) > 0 {
		fmt.Fprintf(&b, " [%s]", strings.Join(r.Killed, ", "))
	}
	fmt.Fprintf(&b, "; deleted %d netns", len(r.Netns))
	if len(r.Netns) > 0 {
		fmt.Fprintf(&b, " [%s]", strings.Join(r.Netns, " "))
	}
	fmt.Fprintf(&b, "; removed %s", strings.Join(r.Dirs, " "))
	if len(r.Leftover) > 0 {
		fmt.Fprintf(&b, "; LEFT OVER: %s", strings.Join(r.Leftover, ", "))
	}
	return b.String()
}

// Cleanup removes everything a run with this prefix may have left: every process in a network
// namespace named prefix-*, every process of the pid files in the state directory, those
// namespaces (with the veths, bridges and rules in them), the state directory and etcd's data.
// It is safe to call when nothing is there. The error lists what is left over.
func Cleanup(prefix string) (*CleanupReport, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	rep := &CleanupReport{}
	names, err := listNetns(prefix)
	if err != nil {
		return nil, err
	}
	victims := map[int]string{}
	for _, ns := range names {
		for _, pid := range pidsInNetns(NetnsPath(ns)) {
			victims[pid] = procName(pid) + " in " + ns
		}
	}
	for _, r := range readPidFiles(StateDir(prefix)) {
		if st, err := procStartTime(r.pid); err == nil && st == r.start && alive(r.pid) {
			if _, ok := victims[r.pid]; !ok {
				victims[r.pid] = r.name
			}
		}
	}
	delete(victims, os.Getpid())
	var pids []int
	for pid, what := range victims {
		pids = append(pids, pid)
		rep.Killed = append(rep.Killed, fmt.Sprintf("%s (pid %d)", what, pid))
	}
	sort.Strings(rep.Killed)
	for _, pid := range killAll(pids, 500*time.Millisecond) {
		rep.Leftover = append(rep.Leftover, fmt.Sprintf("process %d (%s)", pid, victims[pid]))
	}
	for _, ns := range names {
		if err := ip("netns", "del", ns); err != nil {
			rep.Leftover = append(rep.Leftover, "netns "+ns+": "+err.Error())
			continue
		}
		rep.Netns = append(rep.Netns, ns)
	}
	for _, dir := range []string{StateDir(prefix), etcdDir(prefix)} {
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			rep.Leftover = append(rep.Leftover, dir+": "+err.Error())
			continue
		}
		rep.Dirs = append(rep.Dirs, dir)
	}
	if left, _ := listNetns(prefix); len(left) > 0 {
		rep.Leftover = append(rep.Leftover, "netns "+strings.Join(left, " "))
	}
	if len(rep.Leftover) > 0 {
		return rep, fmt.Errorf("cleanup %s: left over: %s", prefix, strings.Join(rep.Leftover, "; "))
	}
	return rep, nil
}

// pidsInNetns lists the processes whose network namespace is the one bound at path (what
// `ip netns pids` does).
func pidsInNetns(path string) []int {
	var want syscall.Stat_t
	if err := syscall.Stat(path, &want); err != nil {
		return nil
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	var pids []int
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil {
			continue
		}
		var st syscall.Stat_t
		if err := syscall.Stat(p+"/ns/net", &st); err != nil {
			continue
		}
		if st.Dev == want.Dev && st.Ino == want.Ino && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}
