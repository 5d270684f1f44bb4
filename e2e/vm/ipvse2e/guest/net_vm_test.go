//go:build vm

package guest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/netnsutil"
)

// reply is what an echo server answered: its name and the client address it saw.
type reply struct{ name, client string }

// clientIP is the address part of the client address the server saw.
func (r reply) clientIP() string {
	host, _, _ := net.SplitHostPort(r.client)
	return host
}

var replyRE = regexp.MustCompile(`name=(\S+) client=(\S+)`)

// inNS runs fn in the named network namespace; "" is the VM's own (the node).
func inNS(ns string, fn func() error) error {
	if ns == "" {
		return fn()
	}
	return netnsutil.Do(netnsutil.Path(ns), fn)
}

// request sends one request (proto "tcp" or "udp") from the namespace ns ("" = the node)
// to addr and returns the reply. A TCP connection is closed with a reset, so that IPVS
// forgets it within 10 s (its CLOSE state) rather than 2 minutes (TIME_WAIT): graceful
// termination waits for every connection of a removed real server.
func request(ns, proto, addr string) (reply, error) {
	if proto == "sctp" {
		return sctpRequest(ns, addr)
	}
	return requestFrom(ns, proto, addr, from{})
}

// from is a client's source address: IP "" and port 0 leave the choice to the kernel.
type from struct {
	ip   string
	port int
}

func (f from) addr(proto string) net.Addr {
	if f == (from{}) {
		return nil
	}
	ip := net.ParseIP(f.ip)
	if proto == "udp" {
		return &net.UDPAddr{IP: ip, Port: f.port}
	}
	return &net.TCPAddr{IP: ip, Port: f.port}
}

// requestFrom is request (TCP or UDP) from a given source address.
func requestFrom(ns, proto, addr string, src from) (reply, error) {
	var r reply
	err := inNS(ns, func() error {
		d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: src.addr(proto)}
		c, err := d.Dial(proto, addr)
		if err != nil {
			return err
		}
		defer func() {
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			_ = c.Close()
		}()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.WriteString(c, "hello\n"); err != nil {
			return err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		m := replyRE.FindStringSubmatch(line)
		if m == nil {
			return fmt.Errorf("unexpected reply %q", line)
		}
		r = reply{name: m[1], client: m[2]}
		return nil
	})
	if err != nil {
		if src != (from{}) {
			return r, fmt.Errorf("%s %s from %s (%s:%d): %w", proto, addr, nsName(ns), src.ip, src.port, err)
		}
		return r, fmt.Errorf("%s %s from %s: %w", proto, addr, nsName(ns), err)
	}
	return r, nil
}

// timedOut reports whether err is a timeout (a dropped packet), not a refusal.
func timedOut(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func nsName(ns string) string {
	if ns == "" {
		return "the node"
	}
	return ns
}

func refused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// spread sends n requests and returns the replies' names, counted, and the client addresses
// the servers saw.
func spread(t *testing.T, ns, proto, addr string, n int) (map[string]int, []string) {
	t.Helper()
	names := map[string]int{}
	var clients []string
	for i := 0; i < n; i++ {
		r, err := request(ns, proto, addr)
		if err != nil {
			t.Fatal(err)
		}
		names[r.name]++
		if !slices.Contains(clients, r.clientIP()) {
			clients = append(clients, r.clientIP())
		}
	}
	return names, clients
}

// waitForAll sends requests until every one of want has answered (up to timeout) and
// returns the client addresses the servers saw.
func waitForAll(t *testing.T, ns, proto, addr string, timeout time.Duration, want ...string) []string {
	t.Helper()
	seen := map[string]bool{}
	var clients []string
	waitFor(t, timeout, fmt.Sprintf("%v answer %s %s from %s", want, proto, addr, nsName(ns)), func() error {
		r, err := request(ns, proto, addr)
		if err != nil {
			return err
		}
		seen[r.name] = true
		if !slices.Contains(clients, r.clientIP()) {
			clients = append(clients, r.clientIP())
		}
		for _, w := range want {
			if !seen[w] {
				return fmt.Errorf("answered so far: %v", keys(seen))
			}
		}
		return nil
	})
	for n := range seen {
		if !slices.Contains(want, n) {
			t.Errorf("%s %s from %s: answered by %s, not one of %v", proto, addr, nsName(ns), n, want)
		}
	}
	return clients
}

// heldConn is a long-lived TCP connection to an echo server in hold mode.
type heldConn struct {
	c  net.Conn
	rd *bufio.Reader
}

// hold opens a TCP connection from ns to addr in the echo server's hold mode and returns it
// with the name of the server that answered.
func hold(ns, addr string) (*heldConn, string, error) {
	var h *heldConn
	err := inNS(ns, func() error {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return err
		}
		h = &heldConn{c: c, rd: bufio.NewReader(c)}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	r, err := h.exchange("hold")
	if err != nil {
		h.close()
		return nil, "", err
	}
	return h, r.name, nil
}

func (h *heldConn) exchange(line string) (reply, error) {
	_ = h.c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(h.c, line+"\n"); err != nil {
		return reply{}, err
	}
	got, err := h.rd.ReadString('\n')
	if err != nil {
		return reply{}, err
	}
	m := replyRE.FindStringSubmatch(got)
	if m == nil {
		return reply{}, fmt.Errorf("unexpected reply %q", got)
	}
	return reply{name: m[1], client: m[2]}, nil
}

// ping sends a line on the held connection and returns who answered.
func (h *heldConn) ping() (string, error) {
	r, err := h.exchange("ping")
	return r.name, err
}

// close resets the connection (IPVS: CLOSE state, 10 s).
func (h *heldConn) close() {
	if tc, ok := h.c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = h.c.Close()
}

type stop struct{ error }

// waitFor calls fn every 100 ms until it returns nil, and fails the test with its last
// error when that does not happen within timeout (at once for a stop error). It returns
// how long it took.
func waitFor(t *testing.T, timeout time.Duration, what string, fn func() error) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		err := fn()
		if err == nil {
			return time.Since(start)
		}
		var s stop
		if errors.As(err, &s) {
			t.Fatalf("%s: %v", what, s.error)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func sh(t *testing.T, args ...string) string {
	t.Helper()
	o, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, o)
	}
	return string(o)
}

func out(args ...string) string {
	o, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%s%s: %v\n", o, strings.Join(args, " "), err)
	}
	return string(o)
}

func keys[V any](m map[string]V) []string {
	var k []string
	for x := range m {
		k = append(k, x)
	}
	slices.Sort(k)
	return k
}
