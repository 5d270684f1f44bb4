package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kproxy/kproxy/bench/internal/echo"
	"github.com/kproxy/kproxy/bench/internal/stats"
)

// The two halves that run inside the pods, each as this binary started with nsenter in the
// pod's network namespace (so no goroutine of the parent sits in a namespace while
// measuring):
//
//	-serve IP:PORT   in the backend pod: reads bytes and writes each back, per connection,
//	                 until the client goes away
//	-client IP:PORT  in the client pod: the closed loop (below), one JSON loopResult on stdout

// serve echoes every byte on every connection until the listener fails.
func serve(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer func() { _ = c.Close() }()
			echo.Conn(c, 64)
		}()
	}
}

// clientCfg is one closed loop.
type clientCfg struct {
	Addr     string
	Workers  int
	Duration time.Duration
	Warmup   time.Duration
	Timeout  time.Duration
}

// loopResult is what one closed loop measured (the client's JSON); the parent adds the
// figures it reads around the loop (conntrack, proxy CPU).
type loopResult struct {
	Target   string  `json:"target"` // "vip" or "pod"
	Addr     string  `json:"addr"`
	Workers  int     `json:"workers"`
	Conns    int     `json:"conns"`
	Errors   int     `json:"errors"`
	FirstErr string  `json:"firstError,omitempty"`
	ElapsedS float64 `json:"elapsedS"`
	Rate     float64 `json:"connsPerS"`
	// Connect is the connect() syscall's time, SYN sent to the handshake's end as the
	// client's kernel sees it: the first packet's trip through the service rules and back.
	Connect stats.Dist `json:"connectUs"`
	// RR is the first request/response on the new connection: write of 1 byte to its echo
	// read back.
	RR stats.Dist `json:"firstRequestResponseUs"`
	// First is connect + first request/response of each connection: the time to the first
	// answer on a new connection. (Part of the handshake's work can land in either half,
	// depending on which CPU runs the softirqs: the sum is steadier than each.)
	First stats.Dist `json:"connectPlusFirstRequestResponseUs"`
	// Filled in by the parent.
	ConntrackAfter int     `json:"conntrackEntriesAfter"`
	ConntrackStats string  `json:"conntrackStatsDelta,omitempty"`
	ProxyCPUS      float64 `json:"proxyCPUSecondsDuringLoop"`
	// RulePosition (iptables kernels, VIP loops): the target's rule in KUBE-SERVICES before
	// and after the loop, "k/n → k/n".
	RulePosition string `json:"kubeServicesRulePosition,omitempty"`
}

// errShort is a response of the wrong size or content.
var errShort = errors.New("short or wrong echo")

// oneConn makes one connection with blocking syscalls: socket, connect, write 1 byte, read
// it back, close with SO_LINGER 0 (an RST: no TIME_WAIT on either side, and the node's
// conntrack entry moves to CLOSE, 10 s, not TIME_WAIT, 120 s). It returns the connect() time
// and the request/response time.
func oneConn(sa *unix.SockaddrInet4, timeout time.Duration) (time.Duration, time.Duration, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, 0, fmt.Errorf("socket: %w", err)
	}
	defer func() { _ = unix.Close(fd) }()
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	// SO_SNDTIMEO bounds a blocking connect(), SO_RCVTIMEO the read.
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return 0, 0, err
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return 0, 0, err
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		return 0, 0, err
	}
	if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}); err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	err = unix.Connect(fd, sa)
	for errors.Is(err, unix.EINTR) || errors.Is(err, unix.EALREADY) {
		// A signal interrupted the blocking connect: the handshake goes on; ask again.
		err = unix.Connect(fd, sa)
		if errors.Is(err, unix.EISCONN) {
			err = nil
		}
	}
	t1 := time.Now()
	if err != nil {
		return 0, 0, fmt.Errorf("connect: %w", err)
	}
	b := [1]byte{'x'}
	if _, err := unix.Write(fd, b[:]); err != nil {
		return 0, 0, fmt.Errorf("write: %w", err)
	}
	var r [1]byte
	n, err := unix.Read(fd, r[:])
	for errors.Is(err, unix.EINTR) {
		n, err = unix.Read(fd, r[:])
	}
	t2 := time.Now()
	if err != nil {
		return 0, 0, fmt.Errorf("read: %w", err)
	}
	if n != 1 || r[0] != 'x' {
		return 0, 0, errShort
	}
	return t1.Sub(t0), t2.Sub(t1), nil
}

// runClient runs cfg.Workers closed loops for cfg.Warmup (not counted), then for
// cfg.Duration, and summarises them.
func runClient(cfg clientCfg) (loopResult, error) {
	res := loopResult{Addr: cfg.Addr, Workers: cfg.Workers}
	ap, err := netip.ParseAddrPort(cfg.Addr)
	if err != nil || !ap.Addr().Is4() {
		return res, fmt.Errorf("-client %q: want IPv4:port", cfg.Addr)
	}
	sa := &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	// Every worker blocks in syscalls; one P each, so none waits for a P when its syscall
	// returns (the OS scheduler shares the CPUs).
	// (With the default GOMAXPROCS, 2 here, the 8-worker loop measured fewer connections
	// per second and a p99 connect() 3-4 times as long.)
	runtime.GOMAXPROCS(cfg.Workers + 1)
	type workerOut struct {
		connect, rr, first []float64 // µs
		errs               int
		firstErr           error
	}
	outs := make([]workerOut, cfg.Workers)
	start := time.Now()
	measureFrom := start.Add(cfg.Warmup)
	end := measureFrom.Add(cfg.Duration)
	var wg sync.WaitGroup
	for w := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := &outs[w]
			o.connect = make([]float64, 0, 1<<14)
			o.rr = make([]float64, 0, 1<<14)
			o.first = make([]float64, 0, 1<<14)
			for {
				now := time.Now()
				if !now.Before(end) {
					return
				}
				counted := !now.Before(measureFrom)
				c, r, err := oneConn(sa, cfg.Timeout)
				if err != nil {
					if counted {
						o.errs++
						if o.firstErr == nil {
							o.firstErr = err
						}
					}
					time.Sleep(10 * time.Millisecond)
					continue
				}
				if counted {
					o.connect = append(o.connect, float64(c.Nanoseconds())/1e3)
					o.rr = append(o.rr, float64(r.Nanoseconds())/1e3)
					o.first = append(o.first, float64((c+r).Nanoseconds())/1e3)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(measureFrom)
	var connect, rr, first []float64
	for _, o := range outs {
		connect = append(connect, o.connect...)
		rr = append(rr, o.rr...)
		first = append(first, o.first...)
		res.Errors += o.errs
		if o.firstErr != nil && res.FirstErr == "" {
			res.FirstErr = o.firstErr.Error()
		}
	}
	res.Conns = len(connect)
	res.ElapsedS = stats.Round(elapsed.Seconds(), 3)
	res.Rate = stats.Round(float64(res.Conns)/elapsed.Seconds(), 1)
	res.Connect = stats.Summarize(connect)
	res.RR = stats.Summarize(rr)
	res.First = stats.Summarize(first)
	return res, nil
}

// clientMain is -client: run the loop and print its JSON.
func clientMain(cfg clientCfg, w io.Writer) error {
	res, err := runClient(cfg)
	if err != nil {
		return err
	}
	return json.NewEncoder(w).Encode(res)
}

// probe does one connection with an echo from the calling process's namespace (the -probe
// mode, run in the client pod): the target answers.
func probe(addr string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte{'p'}); err != nil {
		return err
	}
	b := []byte{0}
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if b[0] != 'p' {
		return errShort
	}
	return nil
}

func exitOn(err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "kpdataplane: %v\n", err)
		os.Exit(1)
	}
}
