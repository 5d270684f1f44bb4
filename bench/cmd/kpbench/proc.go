package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ: /proc/<pid>/stat counts CPU time in 1/100 s on Linux.
const clockTicks = 100

// proxyPid is the pid of the proxy the harness started on node (its pid file: "pid starttime").
func proxyPid(stateDir, node string) (int, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, "pids", "proxy-"+node+".pid"))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("empty pid file for proxy-%s", node)
	}
	return strconv.Atoi(f[0])
}

// cpuTimes is the process's own CPU seconds (utime+stime) and that of the children it has
// waited for (cutime+cstime: iptables-restore, iptables-save, nft...).
type cpuTimes struct{ Self, Children float64 }

func readCPU(pid int) (cpuTimes, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return cpuTimes{}, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return cpuTimes{}, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return cpuTimes{}, fmt.Errorf("short /proc/%d/stat", pid)
	}
	v := make([]float64, 4)
	for k := range v {
		n, err := strconv.ParseUint(f[11+k], 10, 64) // fields 14-17: utime stime cutime cstime
		if err != nil {
			return cpuTimes{}, err
		}
		v[k] = float64(n) / clockTicks
	}
	return cpuTimes{Self: v[0] + v[1], Children: v[2] + v[3]}, nil
}

func (a cpuTimes) sub(b cpuTimes) cpuTimes {
	return cpuTimes{Self: a.Self - b.Self, Children: a.Children - b.Children}
}

// peakRSSMB is VmHWM (peak resident set) in MiB.
func peakRSSMB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				kb, err := strconv.ParseFloat(f[1], 64)
				return kb / 1024, err
			}
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// resetPeakRSS makes VmHWM start again from the current RSS (clear_refs 5, Linux ≥ 4.0), so
// the next peakRSSMB is the peak of one phase.
func resetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0o200)
}
