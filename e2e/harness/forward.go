package harness

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Forwarder accepts TCP connections on a listener in the caller's network namespace (a
// 127.0.0.1 address of the root namespace) and connects each to a target dialled from inside
// another namespace: the way the root namespace reaches the apiserver in the fabric without any
// sandbox address or route in the root namespace.
type Forwarder struct {
	ln     net.Listener
	ns     string
	target string
	wg     sync.WaitGroup
	logf   func(format string, args ...any)
}

// Forward listens on listen (for example "127.0.0.1:0") and forwards to target dialled in ns.
// logf, if not nil, gets one line per failed dial.
func Forward(listen, ns, target string, logf func(string, ...any)) (*Forwarder, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	f := &Forwarder{ln: ln, ns: ns, target: target, logf: logf}
	f.wg.Add(1)
	go f.serve()
	return f, nil
}

// Addr is the address the forwarder listens on.
func (f *Forwarder) Addr() string { return f.ln.Addr().String() }

// Close stops accepting; open connections end when either side closes.
func (f *Forwarder) Close() error {
	err := f.ln.Close()
	f.wg.Wait()
	return err
}

// Wait blocks until the listener fails or is closed.
func (f *Forwarder) Wait() { f.wg.Wait() }

func (f *Forwarder) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) && f.logf != nil {
				f.logf("forwarder: accept: %v", err)
			}
			return
		}
		go f.pipe(c)
	}
}

func (f *Forwarder) pipe(c net.Conn) {
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	u, err := DialIn(ctx, f.ns, "tcp", f.target)
	cancel()
	if err != nil {
		if f.logf != nil {
			f.logf("forwarder: dial %s in %s: %v", f.target, f.ns, err)
		}
		return
	}
	defer func() { _ = u.Close() }()
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(u, c)
	go cp(c, u)
	<-done
	<-done
}
