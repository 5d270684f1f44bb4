//go:build vm

package guest

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// SCTP echo, on raw one-to-one sockets (SOCK_STREAM, IPPROTO_SCTP): Go's net package has no
// SCTP, and a one-to-one SCTP socket is used like a TCP one (connect, accept, read, write),
// so golang.org/x/sys/unix is enough; no SCTP library. The servers answer the first message
// of each association with the echo server's line, "name=NAME client=IP:PORT\n".

// sctpTimeout bounds every blocking call of the client and of a server's association.
const sctpTimeout = 2 * time.Second

// sctpAvailable reports whether the kernel has SCTP sockets (the VM loads the sctp module at
// boot; the host kernel lacks it), with the error when it has not.
func sctpAvailable() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP)
	if err != nil {
		return fmt.Errorf("socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP): %w", err)
	}
	return unix.Close(fd)
}

// startSCTPServer listens on SCTP port in the namespace ns and answers each association in
// a goroutine, for the life of the process (the VM powers off after the test).
func startSCTPServer(ns, name string, port int) error {
	var fd int
	err := inNS(ns, func() error {
		var err error
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port}); err != nil {
			return err
		}
		return unix.Listen(fd, 64)
	})
	if err != nil {
		return fmt.Errorf("sctp server in %s: %w", ns, err)
	}
	go func() {
		for {
			nfd, sa, err := unix.Accept(fd)
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
				continue
			}
			if err != nil {
				fmt.Printf("KPVM sctp server %s: accept: %v\n", name, err)
				return
			}
			go serveSCTP(nfd, name, sa)
		}
	}()
	return nil
}

func serveSCTP(fd int, name string, peer unix.Sockaddr) {
	defer func() { _ = unix.Close(fd) }()
	if err := setTimeouts(fd); err != nil {
		return
	}
	buf := make([]byte, 1024)
	if _, err := readRetry(fd, buf); err != nil {
		return
	}
	_, _ = unix.Write(fd, []byte(fmt.Sprintf("name=%s client=%s\n", name, sockaddrString(peer))))
	// Wait for the client's SHUTDOWN (read returns 0) so our close does not abort the
	// association before the reply is acknowledged.
	_, _ = readRetry(fd, buf)
}

// sctpRequest connects from ns to addr (IP:port) over SCTP, sends one line and returns the
// reply, as request does for TCP.
func sctpRequest(ns, addr string) (reply, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return reply{}, err
	}
	var r reply
	err = inNS(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP)
		if err != nil {
			return err
		}
		defer func() { _ = unix.Close(fd) }()
		if err := setTimeouts(fd); err != nil {
			return err
		}
		// connect waits for the association (INIT, INIT-ACK, COOKIE-ECHO, COOKIE-ACK) up
		// to SO_SNDTIMEO; an ABORT in answer to the INIT is ECONNREFUSED.
		if err := connectRetry(fd, &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}); err != nil {
			return fmt.Errorf("connect: %w", err)
		}
		if _, err := unix.Write(fd, []byte("hello\n")); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		buf := make([]byte, 1024)
		n, err := readRetry(fd, buf)
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		m := replyRE.FindStringSubmatch(string(buf[:n]))
		if m == nil {
			return fmt.Errorf("unexpected reply %q", buf[:n])
		}
		r = reply{name: m[1], client: m[2]}
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("sctp %s from %s: %w", addr, nsName(ns), err)
	}
	return r, nil
}

// connectRetry is connect(2) that survives a signal: connect with a timeout is not
// restarted after one (EINTR) while the association setup goes on, so it is asked again
// (EALREADY while in progress, EISCONN once done) until sctpTimeout. SO_SNDTIMEO running
// out gives EINPROGRESS.
func connectRetry(fd int, sa unix.Sockaddr) error {
	deadline := time.Now().Add(sctpTimeout)
	for {
		err := unix.Connect(fd, sa)
		switch {
		case err == nil, errors.Is(err, unix.EISCONN):
			return nil
		case !errors.Is(err, unix.EINTR) && !errors.Is(err, unix.EALREADY) && !errors.Is(err, unix.EINPROGRESS):
			return err
		case time.Now().After(deadline):
			return unix.ETIMEDOUT
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func setTimeouts(fd int) error {
	tv := unix.NsecToTimeval(sctpTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
}

// readRetry is read(2), retried on EINTR (the Go runtime's preemption signals).
func readRetry(fd int, buf []byte) (int, error) {
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return n, err
	}
}

func sockaddrString(sa unix.Sockaddr) string {
	if in4, ok := sa.(*unix.SockaddrInet4); ok {
		return netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port)).String()
	}
	return fmt.Sprint(sa)
}
