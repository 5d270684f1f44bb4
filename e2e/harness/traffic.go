package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Errors of a request made with the echo client, from its exit code.
var (
	ErrRefused     = errors.New("connection refused")
	ErrTimeout     = errors.New("timeout")
	ErrUnreachable = errors.New("unreachable")
)

// Exit codes of `echo client`.
const (
	ExitRefused     = 1
	ExitTimeout     = 2
	ExitUnreachable = 3
)

// Reply is what an echo server answered: its --name and the client address it saw.
type Reply struct {
	Name   string
	Client netip.AddrPort
	Raw    string
}

// ParseReply parses "name=N client=IP:PORT".
func ParseReply(line string) (Reply, error) {
	r := Reply{Raw: strings.TrimSpace(line)}
	for _, f := range strings.Fields(r.Raw) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "name":
			r.Name = v
		case "client":
			ap, err := netip.ParseAddrPort(v)
			if err != nil {
				return r, fmt.Errorf("reply %q: %w", r.Raw, err)
			}
			r.Client = ap
		}
	}
	if r.Name == "" || !r.Client.IsValid() {
		return r, fmt.Errorf("reply %q: want name=NAME client=IP:PORT", r.Raw)
	}
	return r, nil
}

// Proto is "tcp" or "udp".
type Proto string

// Protocols the echo client speaks.
const (
	TCP Proto = "tcp"
	UDP Proto = "udp"
)

// RequestOptions are the optional parts of a request.
type RequestOptions struct {
	Timeout time.Duration // the echo client's overall timeout (default 1 s)
	Src     netip.Addr    // source address to bind (default: the kernel's choice)
	SrcPort uint16        // source port to bind (default: the kernel's choice)
}

// Request runs `echo client --PROTO addr --timeout T` inside the namespace ns (a pod, a node or
// the external client) and returns the reply. A refused connection is ErrRefused, no answer
// ErrTimeout.
func (c *Cluster) Request(ctx context.Context, ns string, proto Proto, addr string, timeout time.Duration) (Reply, error) {
	return c.RequestWith(ctx, ns, proto, addr, RequestOptions{Timeout: timeout})
}

// RequestWith is Request with options (a source address).
func (c *Cluster) RequestWith(ctx context.Context, ns string, proto Proto, addr string, o RequestOptions) (Reply, error) {
	if o.Timeout == 0 {
		o.Timeout = time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout+5*time.Second)
	defer cancel()
	args := []string{"--net=" + NetnsPath(ns), "--", c.Opts.EchoBin, "client", "--" + string(proto), addr, "--timeout", o.Timeout.String()}
	if o.Src.IsValid() {
		args = append(args, "--src", o.Src.String())
	}
	if o.SrcPort != 0 {
		args = append(args, "--sport", strconv.Itoa(int(o.SrcPort)))
	}
	out, err := exec.CommandContext(ctx, "nsenter", args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			msg := strings.TrimSpace(string(ee.Stderr))
			switch ee.ExitCode() {
			case ExitRefused:
				return Reply{}, fmt.Errorf("%s %s from %s: %w (%s)", proto, addr, ns, ErrRefused, msg)
			case ExitTimeout:
				return Reply{}, fmt.Errorf("%s %s from %s: %w (%s)", proto, addr, ns, ErrTimeout, msg)
			case ExitUnreachable:
				return Reply{}, fmt.Errorf("%s %s from %s: %w (%s)", proto, addr, ns, ErrUnreachable, msg)
			}
			return Reply{}, fmt.Errorf("%s %s from %s: %w: %s", proto, addr, ns, err, msg)
		}
		return Reply{}, fmt.Errorf("%s %s from %s: %w", proto, addr, ns, err)
	}
	return ParseReply(string(out))
}

// HeldConn is a long-lived TCP connection to an echo server in hold mode, made from inside a
// namespace by the test process itself.
type HeldConn struct {
	conn net.Conn
	rd   *bufio.Reader
}

// Hold opens a TCP connection from ns to addr, asks the echo server to hold it open ("hold"
// line) and returns it with the server's first reply.
func Hold(ctx context.Context, ns, addr string) (*HeldConn, Reply, error) {
	conn, err := DialIn(ctx, ns, "tcp", addr)
	if err != nil {
		return nil, Reply{}, fmt.Errorf("hold %s from %s: %w", addr, ns, err)
	}
	h := &HeldConn{conn: conn, rd: bufio.NewReader(conn)}
	r, err := h.exchange("hold")
	if err != nil {
		_ = conn.Close()
		return nil, Reply{}, fmt.Errorf("hold %s from %s: %w", addr, ns, err)
	}
	return h, r, nil
}

// Ping sends a line on the held connection and returns the server's answer.
func (h *HeldConn) Ping() (Reply, error) { return h.exchange("ping") }

func (h *HeldConn) exchange(line string) (Reply, error) {
	_ = h.conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(h.conn, "%s\n", line); err != nil {
		return Reply{}, err
	}
	got, err := h.rd.ReadString('\n')
	if err != nil {
		return Reply{}, err
	}
	return ParseReply(got)
}

// Close closes the held connection.
func (h *HeldConn) Close() error { return h.conn.Close() }

// TB is the part of testing.TB the harness uses.
type TB interface {
	Helper()
	Logf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// Eventually calls fn every 100 ms until it returns nil, and fails the test with fn's last
// error if that does not happen within timeout. It returns how long it took.
func Eventually(t TB, timeout time.Duration, fn func() error) time.Duration {
	t.Helper()
	t0 := time.Now()
	if err := Poll(context.Background(), 100*time.Millisecond, timeout, fn); err != nil {
		t.Fatalf("not true within %v: %v", timeout, err)
	}
	return time.Since(t0)
}

// Poll calls fn every interval until it returns nil, ctx ends or timeout passes; then it
// returns fn's last error.
func Poll(ctx context.Context, interval, timeout time.Duration, fn func() error) error {
	return poll(ctx, interval, timeout, fn)
}
