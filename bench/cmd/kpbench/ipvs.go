package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kproxy/kproxy/bench/internal/load"
	"github.com/kproxy/kproxy/bench/internal/record"
	"github.com/kproxy/kproxy/bench/internal/sandbox"
	"github.com/kproxy/kproxy/bench/internal/stats"
	"github.com/kproxy/kproxy/e2e/harness"
)

// -mode ipvs: kproxy --mode=ipvs against kube-proxy --proxy-mode=ipvs inside the IPVS VM
// (e2e/vm: Debian's stock kernel under qemu; the host kernel has no IPVS).
//
// The host half (this file) starts the sandbox's control plane (etcd, kube-apiserver: the
// harness, no proxy on the host), creates the VM's Node object, serves a small ctl API on
// 127.0.0.1 that writes to the apiserver for the guest (load, change, delete: the loader's CPU
// stays on the host, off the VM's one vCPU), and boots the VM with e2e/vm/run-test.sh: one
// guestfwd for the apiserver (192.0.2.100:6443), one for the ctl API (192.0.2.100:7000). The
// guest half (ipvs_guest.go: kpbench -ipvs-guest, the same static binary) runs the proxies and
// takes every time on its own clock; it posts its sections back, and the host summarises,
// prints and writes them like the iptables sections.

const vmNodeIP = "192.0.2.15" // the guest's eth0 (run-test.sh -n)

func runIPVS(cfg config) error {
	if err := preflight(&cfg, "qemu, network namespaces, /var/cache"); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := sandbox.CheckStatic(self); err != nil {
		return fmt.Errorf("%s goes into the VM: %w (build it with CGO_ENABLED=0)", self, err)
	}
	sel := selectIPVSProxies(cfg.Only, cfg.BaseBin != "")
	if len(sel) == 0 {
		return fmt.Errorf("-only %q matches no proxy of -mode ipvs", cfg.Only)
	}
	files := []string{cfg.KProxyBin}
	for _, p := range sel {
		if p.Name == "kube-proxy ipvs" {
			files = append(files, filepath.Join(cfg.K8sBin, "kube-proxy"))
		}
	}
	if cfg.BaseBin != "" {
		files = append(files, cfg.BaseBin)
	}
	for _, b := range files {
		if err := sandbox.CheckStatic(b); err != nil {
			return fmt.Errorf("%s goes into the VM: %w", b, err)
		}
	}
	unlock, err := sandbox.LockPrefix(cfg.Prefix)
	if err != nil {
		return err
	}
	defer unlock()
	if err := sandbox.RemoveLeftovers(cfg.Prefix, logf); err != nil {
		return err
	}
	res := &results{Header: record.NewHeader(machine(),
		map[string]any{"mode": "ipvs", "services": cfg.Ns, "endpointsPerService": cfg.E, "rounds": cfg.Rounds,
			"changes": cfg.Changes, "changeSpacing": cfg.Spacing.String(), "workers": cfg.Workers, "floors": cfg.Floors,
			"phaseCap": cfg.Cap.String(), "quietCap": cfg.QuietCap.String(), "settle": cfg.Settle.String(), "pollGap": cfg.Gap.String(), "bulkPollGap": cfg.BulkGap.String(),
			"quick": cfg.Quick, "prefix": cfg.Prefix, "vmMem": cfg.VMMem, "vmTimeout": cfg.VMTimeout.String(),
			"vm": "e2e/vm/run-test.sh: qemu TCG, 1 vCPU; control plane on the host, reached through guestfwd"},
		versions(cfg), commandEnv...)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Ctrl-C / SIGTERM: stop the VM (run-test.sh's TERM trap ends qemu), then the deferred
	// cleanups remove the sandbox.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		if s, ok := <-sigs; ok {
			logf("%v: stopping the VM and removing sandbox %s", s, cfg.Prefix)
			cancel()
		}
	}()
	sctx, scancel := context.WithTimeout(ctx, 2*time.Minute)
	c, err := harness.Start(sctx, harness.Options{Prefix: cfg.Prefix, Nodes: 1, PodsPerNode: 0, Proxy: harness.ProxyNone,
		K8sBin: cfg.K8sBin, EchoBin: cfg.EchoBin, Logf: func(string, ...any) {}})
	scancel()
	defer func() {
		if c != nil {
			c.Close()
		}
		if _, err := harness.Cleanup(cfg.Prefix); err != nil {
			logf("cleanup: %v", err)
		}
	}()
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	_, apiPort, err := net.SplitHostPort(c.APIForwarderAddr())
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "kpbv-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	// run-test.sh -f keeps a file's name: the binaries go in as /kproxy/kproxy and
	// /kproxy/kproxy-base whatever they are called here.
	if files[0], err = copyAs(cfg.KProxyBin, filepath.Join(dir, "kproxy")); err != nil {
		return err
	}
	if cfg.BaseBin != "" {
		if files[len(files)-1], err = copyAs(cfg.BaseBin, filepath.Join(dir, "kproxy-base")); err != nil {
			return err
		}
	}
	kc := filepath.Join(dir, "kubeconfig")
	if err := c.WriteProxyKubeconfig(kc, "https://"+harness.VMAPIServerIP.String()+":6443"); err != nil {
		return err
	}
	if err := createGuestNode(ctx, c.Client); err != nil {
		return err
	}
	if err := c.EnsureNamespace(ctx, benchNS); err != nil {
		return err
	}
	cs, err := load.FastClient(c.RESTConfig)
	if err != nil {
		return err
	}
	srv := &ctlServer{cs: cs, workers: cfg.Workers, dumpDir: cfg.DumpDir}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv.mux(), ReadHeaderTimeout: time.Minute}
	go func() { _ = hs.Serve(ln) }()
	defer func() { _ = hs.Close() }()
	_, ctlPort, _ := net.SplitHostPort(ln.Addr().String())

	args := []string{"-n", apiPort, "-n", "7000:" + ctlPort, "-t", strconv.Itoa(int(cfg.VMTimeout.Seconds()))}
	for _, f := range append(files, kc) {
		args = append(args, "-f", f)
	}
	for _, kv := range strings.Split(cfg.VMEnv, ",") {
		if kv != "" {
			args = append(args, "-e", kv) // the guest's environment, which the proxies inherit
		}
	}
	args = append(args, self, "-ipvs-guest")
	args = append(args, guestFlags(cfg)...)
	cmd := exec.CommandContext(ctx, filepath.Join(record.RepoRoot(), "e2e", "vm", "run-test.sh"), args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	cmd.Env = append(os.Environ(), "VM_MEM="+cfg.VMMem, "VM_QUIET=0")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr // the guest's console is progress
	logf("kpbench -mode ipvs: N=%v E=%d rounds=%d changes=%d; VM %s, timeout %v; apiserver 127.0.0.1:%s, ctl 127.0.0.1:%s",
		cfg.Ns, cfg.E, cfg.Rounds, cfg.Changes, cfg.VMMem, cfg.VMTimeout, apiPort, ctlPort)
	tVM := time.Now()
	vmErr := cmd.Run()
	logf("VM run: %.1fs (%v)", time.Since(tVM).Seconds(), vmErr)
	rep := srv.report()
	if rep == nil {
		return fmt.Errorf("the guest posted no results (VM: %w)", vmErr)
	}
	if !rep.Complete {
		res.Config["partial"] = "the VM run stopped before the end: the sections hold the runs that finished"
		logf("the VM run stopped before the end: reporting the runs that finished")
	}
	res.Machine["vmKernel"] = rep.Kernel
	res.Machine["vmRunSeconds"] = stats.Round(time.Since(tVM).Seconds(), 1)
	for k, v := range rep.Versions {
		res.Versions["vm."+k] = v
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		res.Machine["loadavgAtEnd"] = strings.TrimSpace(string(b))
	}
	for _, sec := range rep.Sections {
		sec.summarise()
		res.Sections = append(res.Sections, sec)
		if err := sec.printTable(os.Stdout, res); err != nil {
			return err
		}
	}
	if err := writeResults(cfg, res); err != nil {
		return err
	}
	if rep.Error != "" {
		return fmt.Errorf("guest: %s", rep.Error)
	}
	return vmErr
}

// guestFlags are the flags the guest half runs with (the same config).
func guestFlags(cfg config) []string {
	var ns []string
	for _, n := range cfg.Ns {
		ns = append(ns, strconv.Itoa(n))
	}
	base := ""
	if cfg.BaseBin != "" {
		base = "/kproxy/kproxy-base"
	}
	return []string{"-kproxy-base-bin", base, "-n", strings.Join(ns, ","), "-e", strconv.Itoa(cfg.E), "-rounds", strconv.Itoa(cfg.Rounds),
		"-changes", strconv.Itoa(cfg.Changes), "-spacing", cfg.Spacing.String(), "-cap", cfg.Cap.String(),
		"-settle", cfg.Settle.String(), "-poll-gap", cfg.Gap.String(), "-bulk-poll-gap", cfg.BulkGap.String(),
		"-floors=" + strconv.FormatBool(cfg.Floors), "-only", cfg.Only, "-dump-dir", cfg.DumpDir, "-quiet-cap", cfg.QuietCap.String(),
		"-churn-rate", strconv.FormatFloat(cfg.ChurnRate, 'f', -1, 64), "-churn-duration", cfg.ChurnDuration.String(),
		"-churn-sample", strconv.Itoa(cfg.ChurnSample), "-profile-cold", cfg.ProfileCold.String(), "-cold-wait", cfg.ColdWait.String()}
}

// copyAs copies the executable src to dst and returns dst.
func copyAs(src, dst string) (string, error) {
	b, err := os.ReadFile(src)
	if err != nil {
		return "", err
	}
	return dst, os.WriteFile(dst, b, 0o755)
}

// createGuestNode creates the VM's Node (kube-proxy reads its IP from it).
func createGuestNode(ctx context.Context, cs kubernetes.Interface) error {
	obj := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: guestNode, Labels: map[string]string{"kubernetes.io/hostname": guestNode, "kubernetes.io/os": "linux"}},
		Spec:       corev1.NodeSpec{PodCIDR: "100.64.9.0/24", PodCIDRs: []string{"100.64.9.0/24"}},
	}
	created, err := cs.CoreV1().Nodes().Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create node %s: %w", guestNode, err)
	}
	now := metav1.Now()
	created.Status = corev1.NodeStatus{
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: vmNodeIP}, {Type: corev1.NodeHostName, Address: guestNode}},
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KPBench",
			Message: "the IPVS benchmark VM", LastHeartbeatTime: now, LastTransitionTime: now}},
	}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("node %s status: %w", guestNode, err)
	}
	return nil
}

// ctlServer writes to the apiserver for the guest: POST /load {n, e} (the bulk load; replies
// with the loader's time and the ClusterIPs in order), /change {i, addr} (the i-th service's
// first endpoint becomes addr), /delete (every service and slice of the load), /report (the
// guest's results).
type ctlServer struct {
	cs      kubernetes.Interface
	workers int
	dumpDir string
	mu      sync.Mutex
	svcs    []*benchService
	rep     *guestReport
}

func (s *ctlServer) report() *guestReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rep
}

func (s *ctlServer) mux() *http.ServeMux {
	m := http.NewServeMux()
	handle := func(path string, fn func(ctx context.Context, body []byte) (any, error)) {
		m.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			s.mu.Lock()
			out, err := fn(r.Context(), body)
			s.mu.Unlock()
			if err != nil {
				logf("ctl %s: %v", path, err)
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(out)
		})
	}
	handle("/load", func(ctx context.Context, body []byte) (any, error) {
		var in struct{ N, E int }
		if err := json.Unmarshal(body, &in); err != nil {
			return nil, err
		}
		t0 := time.Now()
		svcs, err := loadServices(ctx, s.cs, in.N, in.E, s.workers)
		s.svcs = svcs
		if err != nil {
			return nil, err
		}
		out := struct {
			APIS float64  `json:"apiS"`
			VIPs []string `json:"vips"`
		}{APIS: time.Since(t0).Seconds()}
		for _, sv := range svcs {
			out.VIPs = append(out.VIPs, sv.vip)
		}
		return out, nil
	})
	handle("/change", func(ctx context.Context, body []byte) (any, error) {
		var in struct {
			I    int
			Addr string
		}
		if err := json.Unmarshal(body, &in); err != nil {
			return nil, err
		}
		if in.I < 0 || in.I >= len(s.svcs) {
			return nil, fmt.Errorf("no service %d", in.I)
		}
		return struct{}{}, changeEndpoint(ctx, s.cs, s.svcs[in.I], in.Addr)
	})
	handle("/churn", func(ctx context.Context, body []byte) (any, error) {
		var in struct {
			Rate, DurationS float64
			Stride          int
		}
		if err := json.Unmarshal(body, &in); err != nil {
			return nil, err
		}
		lags, err := hostChurn(ctx, s.cs, s.svcs, in.Rate, time.Duration(in.DurationS*float64(time.Second)), max(in.Stride, 1))
		return struct {
			LagsMs []float64 `json:"lagsMs"`
		}{lags}, err
	})
	handle("/delete", func(ctx context.Context, _ []byte) (any, error) {
		t0 := time.Now()
		var live []*benchService
		for _, sv := range s.svcs {
			if sv != nil {
				live = append(live, sv)
			}
		}
		if err := deleteAll(ctx, s.cs, live, s.workers); err != nil {
			return nil, err
		}
		s.svcs = nil
		return struct {
			APIS float64 `json:"apiS"`
		}{time.Since(t0).Seconds()}, nil
	})
	handle("/log", func(_ context.Context, body []byte) (any, error) {
		var in struct{ Name, Log string }
		if err := json.Unmarshal(body, &in); err != nil {
			return nil, err
		}
		if s.dumpDir == "" || in.Name != filepath.Base(in.Name) {
			return nil, fmt.Errorf("log %q: no -dump-dir or a bad name", in.Name)
		}
		if err := os.MkdirAll(s.dumpDir, 0o755); err != nil {
			return nil, err
		}
		return struct{}{}, os.WriteFile(filepath.Join(s.dumpDir, in.Name), []byte(in.Log), 0o644)
	})
	handle("/report", func(_ context.Context, body []byte) (any, error) {
		var rep guestReport
		if err := json.Unmarshal(body, &rep); err != nil {
			return nil, err
		}
		s.rep = &rep
		return struct{}{}, nil
	})
	return m
}
