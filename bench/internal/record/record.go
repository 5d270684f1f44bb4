package record

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// CommandLine is the command as run: the given environment variables that are set
// (KEY=value), then os.Args.
func CommandLine(envKeys ...string) string {
	var env []string
	for _, k := range envKeys {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return strings.TrimSpace(strings.Join(env, " ") + " " + strings.Join(os.Args, " "))
}

// Machine is what every results file says of the machine: "nproc", and, where /proc has
// them, "kernel", "cpu" (the model name) and "loadavgAtStart". Commands add their own keys.
func Machine() map[string]any {
	m := map[string]any{"nproc": runtime.NumCPU()}
	if s, err := readTrim("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = s
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				m["cpu"] = strings.TrimSpace(l[strings.IndexByte(l, ':')+1:])
				break
			}
		}
	}
	if s, err := readTrim("/proc/loadavg"); err == nil {
		m["loadavgAtStart"] = s
	}
	return m
}

// SetLoadavgAtEnd records the load average now as m's "loadavgAtEnd", where /proc has it.
func SetLoadavgAtEnd(m map[string]any) {
	if s, err := readTrim("/proc/loadavg"); err == nil {
		m["loadavgAtEnd"] = s
	}
}

// Loadavg is /proc/loadavg's line, "?" when it cannot be read.
func Loadavg() string {
	s, err := readTrim("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return s
}

// Nice is this process's nice value (field 19 of /proc/self/stat).
func Nice() (int, error) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("bad /proc/self/stat")
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3
	if len(f) < 17 {
		return 0, errors.New("short /proc/self/stat")
	}
	return strconv.Atoi(f[16])
}

// ToolVersion is the first line of what name args... prints (its --version, say), or
// "? (<error>)".
func ToolVersion(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return "? (" + err.Error() + ")"
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}

// ProxyVersions are the versions every proxy benchmark records: Go, the kproxy binary (and
// its path), kube-proxy and kube-apiserver in k8sBin, and the repository's commit. Commands
// add the kernel tools they use.
func ProxyVersions(kproxyBin, k8sBin string) map[string]string {
	return map[string]string{
		"go":             runtime.Version(),
		"kproxy":         ToolVersion(kproxyBin, "--version"),
		"kproxyBinary":   kproxyBin,
		"kube-proxy":     ToolVersion(filepath.Join(k8sBin, "kube-proxy"), "--version"),
		"kube-apiserver": ToolVersion(filepath.Join(k8sBin, "kube-apiserver"), "--version"),
		"repo":           GitDescribe(RepoRoot()),
	}
}

// GitDescribe is the repository's commit as git describe --always --dirty says it.
func GitDescribe(repo string) string {
	return ToolVersion("git", "-C", repo, "describe", "--always", "--dirty")
}

// RepoRoot is the git work tree holding the working directory, else the one holding this
// binary (bin/<command>), else the working directory.
func RepoRoot() string {
	dirs := []string{""}
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Dir(exe))
	}
	for _, d := range dirs {
		cmd := exec.Command("git", "rev-parse", "--show-toplevel")
		cmd.Dir = d
		if out, err := cmd.Output(); err == nil {
			return strings.TrimSpace(string(out))
		}
	}
	wd, _ := os.Getwd()
	return wd
}

func readTrim(path string) (string, error) {
	b, err := os.ReadFile(path)
	return strings.TrimSpace(string(b)), err
}
