package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ: /proc/<pid>/stat counts CPU time in 1/100 s on Linux.
const clockTicks = 100

// ProxyPid is the pid of the proxy the harness started on node (its pid file in stateDir:
// "pid starttime").
func ProxyPid(stateDir, node string) (int, error) {
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

// CPUTimes is a process's own CPU seconds (utime+stime) and that of the children it has
// waited for (cutime+cstime: iptables-restore, iptables-save, nft...).
type CPUTimes struct{ Self, Children float64 }

// Sub is a - b.
func (a CPUTimes) Sub(b CPUTimes) CPUTimes {
	return CPUTimes{Self: a.Self - b.Self, Children: a.Children - b.Children}
}

// Total is Self + Children.
func (a CPUTimes) Total() float64 { return a.Self + a.Children }

// ReadCPU reads pid's CPU times from /proc/<pid>/stat, fields 14-17.
func ReadCPU(pid int) (CPUTimes, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return CPUTimes{}, err
	}
	return parseStat(string(b), pid)
}

func parseStat(s string, pid int) (CPUTimes, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return CPUTimes{}, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return CPUTimes{}, fmt.Errorf("short /proc/%d/stat", pid)
	}
	v := make([]float64, 4)
	for k := range v {
		n, err := strconv.ParseUint(f[11+k], 10, 64) // fields 14-17: utime stime cutime cstime
		if err != nil {
			return CPUTimes{}, err
		}
		v[k] = float64(n) / clockTicks
	}
	return CPUTimes{Self: v[0] + v[1], Children: v[2] + v[3]}, nil
}
