package main

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

// A refused dial is tried again until something listens; a dial with a deadline ends at it
// with the refusal in its error; another error is not retried.
func TestRedialRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	// A refusing dialer (not the kernel: on a loaded machine a real dial can outlast a short
	// deadline before it is ever refused) redialled until the deadline: both errors.
	refusals := 0
	refusing := redialRefused(func(context.Context, string, string) (net.Conn, error) {
		refusals++
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	}, 10*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := refusing(ctx, "tcp", addr); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, syscall.ECONNREFUSED) || refusals < 2 {
		t.Errorf("dial with a deadline to nothing: %v after %d refusals, want the deadline and the refusal after several", err, refusals)
	}

	var d net.Dialer
	dial := redialRefused(d.DialContext, 20*time.Millisecond)

	done := make(chan error, 1)
	go func() {
		conn, err := dial(context.Background(), "tcp", addr)
		if err == nil {
			_ = conn.Close()
		}
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("dial to nothing returned %v, want it to wait", err)
	default:
	}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s taken meanwhile: %v", addr, err)
	}
	defer func() { _ = ln.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("dial once something listens: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("dial did not connect within 2 s of the listener's start")
	}

	calls := 0
	other := redialRefused(func(context.Context, string, string) (net.Conn, error) {
		calls++
		return nil, syscall.EHOSTUNREACH
	}, time.Millisecond)
	if _, err := other(context.Background(), "tcp", addr); !errors.Is(err, syscall.EHOSTUNREACH) || calls != 1 {
		t.Errorf("another error: %v after %d calls, want it at once", err, calls)
	}
}
