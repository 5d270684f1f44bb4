package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kproxy/kproxy/bench/internal/echo"
	"github.com/kproxy/kproxy/bench/internal/stats"
	"github.com/kproxy/kproxy/internal/netnsutil"
)

// The measurements: a server in pod B (one goroutine per connection, in this process: the
// listener is made on a thread that joined pod B's namespace, and the connections it accepts
// stay there), and the client in pod A, a child process (this binary with -client, started by
// `ip netns exec <pod A>`): a process wholly in pod A's namespace, with no goroutine locked
// to a thread, so that no per-connection setns and no locked-thread hand-off (a futex wake-up
// per blocking read) is measured. The child prints its result as JSON.

const benchPort = "7788"

// server listens on pod B. A connection's first byte picks the mode: 'e' echoes what it
// reads, 's' counts bytes until EOF and answers "<bytes> <nanoseconds>\n", the time from
// the mode byte to EOF as the receiver saw it.
type server struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]bool
}

func startServer(ns, ip string) (*server, error) {
	s := &server{conns: map[net.Conn]bool{}}
	err := netnsutil.Do(netnsutil.Path(ns), func() (err error) {
		s.ln, err = net.Listen("tcp", net.JoinHostPort(ip, benchPort))
		return err
	})
	if err != nil {
		return nil, err
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = true
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				serve(c)
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			}()
		}
	}()
	return s, nil
}

// close stops the listener and every connection and waits for their goroutines: nothing of
// the server holds pod B's namespace afterwards.
func (s *server) close() {
	_ = s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func serve(c net.Conn) {
	defer func() { _ = c.Close() }()
	mode := []byte{0}
	if _, err := io.ReadFull(c, mode); err != nil {
		return
	}
	switch mode[0] {
	case 'e':
		echo.Conn(c, 512)
	case 's':
		start := time.Now()
		buf := make([]byte, 1<<20)
		var total int64
		for {
			n, err := c.Read(buf)
			total += int64(n)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return
			}
		}
		elapsed := time.Since(start)
		_, _ = fmt.Fprintf(c, "%d %d\n", total, elapsed.Nanoseconds())
	}
}

func dial(addr string, timeout time.Duration) (*net.TCPConn, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// waitReachable does one echo from ns to addr, retrying for up to limit.
func waitReachable(ctx context.Context, ns, addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		err := netnsutil.Do(netnsutil.Path(ns), func() error {
			c, err := dial(addr, time.Second)
			if err != nil {
				return err
			}
			defer func() { _ = c.Close() }()
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Write([]byte("ex")); err != nil {
				return err
			}
			b := []byte{0}
			if _, err := io.ReadFull(c, b); err != nil {
				return err
			}
			if b[0] != 'x' {
				return fmt.Errorf("echo answered %q", b)
			}
			return nil
		})
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// throughputResult is one connection sending for a fixed duration.
type throughputResult struct {
	BytesSent     int64   `json:"bytesSent"`
	BytesReceived int64   `json:"bytesReceived"`
	ReceiverS     float64 `json:"receiverElapsedS"`
	SenderS       float64 `json:"senderElapsedS"`
	Gbps          float64 `json:"gbitPerS"`
	Chunk         int     `json:"chunkBytes"`
}

// measureThroughput sends chunk-sized writes on one connection for dur, then half-closes and
// reads the receiver's count and elapsed time: Gbit/s = bytes received × 8 / receiver time.
func measureThroughput(ctx context.Context, addr string, dur time.Duration, chunk int) (throughputResult, error) {
	res := throughputResult{Chunk: chunk}
	err := func() error {
		c, err := dial(addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer func() { _ = c.Close() }()
		_ = c.SetDeadline(time.Now().Add(dur + 60*time.Second))
		buf := make([]byte, chunk)
		for i := range buf {
			buf[i] = byte(i)
		}
		if _, err := c.Write([]byte{'s'}); err != nil {
			return err
		}
		start := time.Now()
		end := start.Add(dur)
		for time.Now().Before(end) && ctx.Err() == nil {
			n, err := c.Write(buf)
			res.BytesSent += int64(n)
			if err != nil {
				return fmt.Errorf("after %d bytes: %w", res.BytesSent, err)
			}
		}
		if err := c.CloseWrite(); err != nil {
			return err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		res.SenderS = time.Since(start).Seconds()
		if err != nil {
			return fmt.Errorf("read the receiver's count: %w", err)
		}
		var ns int64
		if _, err := fmt.Sscan(strings.TrimSpace(line), &res.BytesReceived, &ns); err != nil {
			return fmt.Errorf("receiver answered %q: %w", line, err)
		}
		res.ReceiverS = float64(ns) / 1e9
		if res.BytesReceived != res.BytesSent {
			return fmt.Errorf("receiver counted %d bytes, sent %d", res.BytesReceived, res.BytesSent)
		}
		return ctx.Err()
	}()
	if err == nil && res.ReceiverS > 0 {
		res.Gbps = float64(res.BytesReceived) * 8 / res.ReceiverS / 1e9
	}
	return res, err
}

// latencyResult is n one-byte request/response round trips on one connection.
type latencyResult struct {
	N      int     `json:"n"`
	Warmup int     `json:"warmup"`
	P50Us  float64 `json:"p50Us"`
	P90Us  float64 `json:"p90Us"`
	P99Us  float64 `json:"p99Us"`
	MeanUs float64 `json:"meanUs"`
	MinUs  float64 `json:"minUs"`
	MaxUs  float64 `json:"maxUs"`
}

const latencyWarmup = 100

// measureLatency writes one byte and reads the echoed byte, n times after a warm-up, timing
// each round trip on the client.
func measureLatency(ctx context.Context, addr string, n int) (latencyResult, error) {
	res := latencyResult{N: n, Warmup: latencyWarmup}
	rtts := make([]time.Duration, 0, n)
	err := func() error {
		c, err := dial(addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer func() { _ = c.Close() }()
		_ = c.SetNoDelay(true)
		if _, err := c.Write([]byte{'e'}); err != nil {
			return err
		}
		b := []byte{'x'}
		for i := 0; i < latencyWarmup+n; i++ {
			if i%1000 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			}
			t := time.Now()
			if _, err := c.Write(b); err != nil {
				return err
			}
			if _, err := io.ReadFull(c, b); err != nil {
				return err
			}
			if i >= latencyWarmup {
				rtts = append(rtts, time.Since(t))
			}
		}
		return nil
	}()
	if err != nil {
		return res, err
	}
	us := stats.Micros(rtts)
	res.P50Us, res.P90Us, res.P99Us = stats.Percentile(us, 50), stats.Percentile(us, 90), stats.Percentile(us, 99)
	res.MeanUs, res.MinUs, res.MaxUs = stats.Mean(us), stats.Percentile(us, 0), stats.Percentile(us, 100)
	return res, nil
}

// connResult is the new-connection loop.
type connResult struct {
	Conns        int     `json:"conns"`
	ElapsedS     float64 `json:"elapsedS"`
	PerS         float64 `json:"connsPerS"`
	ConnectP50Us float64 `json:"connectP50Us"`
	ConnectP99Us float64 `json:"connectP99Us"`
	ConnP50Us    float64 `json:"wholeConnP50Us"`
	Errors       int     `json:"errors"`
	FirstError   string  `json:"firstError,omitempty"`
}

// measureConns connects, echoes one byte and closes (the client closes first), in a loop for
// dur. Connect time: from before the dial to the dial's return (the handshake as the client
// sees it). A connection counts when its echo came back.
func measureConns(ctx context.Context, addr string, dur time.Duration) (connResult, error) {
	var res connResult
	var connects, whole []time.Duration
	err := func() error {
		msg, b := []byte("ex"), []byte{0}
		start := time.Now()
		end := start.Add(dur)
		for time.Now().Before(end) && ctx.Err() == nil {
			t0 := time.Now()
			c, err := dial(addr, 2*time.Second)
			t1 := time.Now()
			if err == nil {
				_ = c.SetDeadline(t1.Add(2 * time.Second))
				if _, err = c.Write(msg); err == nil {
					_, err = io.ReadFull(c, b)
				}
				_ = c.Close()
			}
			if err != nil {
				res.Errors++
				if res.FirstError == "" {
					res.FirstError = err.Error()
				}
				if res.Errors > 100 {
					return fmt.Errorf("%d connections failed, the first: %s", res.Errors, res.FirstError)
				}
				continue
			}
			connects = append(connects, t1.Sub(t0))
			whole = append(whole, time.Since(t0))
		}
		res.ElapsedS = time.Since(start).Seconds()
		return ctx.Err()
	}()
	if err != nil {
		return res, err
	}
	res.Conns = len(connects)
	if res.Conns == 0 {
		return res, fmt.Errorf("no connection succeeded: %s", res.FirstError)
	}
	res.PerS = float64(res.Conns) / res.ElapsedS
	us := stats.Micros(connects)
	res.ConnectP50Us, res.ConnectP99Us = stats.Percentile(us, 50), stats.Percentile(us, 99)
	res.ConnP50Us = stats.Percentile(stats.Micros(whole), 50)
	return res, nil
}

// snmpCounter reads one counter of /proc/net/snmp in namespace ns.
func snmpCounter(ns, group, key string) (int64, error) {
	var n int64
	err := netnsutil.Do(netnsutil.Path(ns), func() error {
		data, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		n, err = snmpValue(string(data), group, key)
		return err
	})
	return n, err
}

// Client kinds (-client).
const (
	clientThroughput = "throughput"
	clientLatency    = "latency"
	clientConns      = "conns"
)

// clientMain is the child process in pod A: one measurement, its result as JSON on stdout.
func clientMain(ctx context.Context, cfg config) error {
	var res any
	var err error
	switch cfg.Client {
	case clientThroughput:
		res, err = measureThroughput(ctx, cfg.Addr, cfg.Duration, cfg.Chunk)
	case clientLatency:
		res, err = measureLatency(ctx, cfg.Addr, cfg.LatencyN)
	case clientConns:
		res, err = measureConns(ctx, cfg.Addr, cfg.ConnDuration)
	default:
		return fmt.Errorf("-client %q: want %s, %s or %s", cfg.Client, clientThroughput, clientLatency, clientConns)
	}
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// runClient runs one measurement as a child process in namespace ns and decodes its result
// into out.
func runClient(ctx context.Context, ns, kind, addr string, cfg config, out any) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"netns", "exec", ns, exe, "-client", kind, "-addr", addr,
		"-duration", cfg.Duration.String(), "-conn-duration", cfg.ConnDuration.String(),
		"-latency-n", strconv.Itoa(cfg.LatencyN), "-chunk", strconv.Itoa(cfg.Chunk)}
	cmd := exec.CommandContext(ctx, "ip", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("client in %s: %w: %s", ns, err, strings.TrimSpace(stderr.String()))
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		return fmt.Errorf("client in %s printed %q: %w", ns, stdout.String(), err)
	}
	return nil
}
