// Command echo is the e2e pods' server and the tests' client, one static binary.
//
//	echo server [--name NAME] [--port 8080]
//	    TCP and UDP on the same port. A TCP client gets "name=NAME client=IP:PORT\n" after it
//	    sends its first line (or after 200 ms of silence, for nc users), then the connection is
//	    closed; an HTTP GET gets the same line as a 200 response body, so curl works. A first
//	    line "hold" keeps the connection open: the line is sent again for every line the
//	    client sends, until it closes (long-lived connections across proxy restarts). Each UDP
//	    datagram gets the line back.
//	echo client (--tcp ADDR | --udp ADDR) [--timeout 1s] [--src IP]
//	    Prints the server's line. Exit 0 on a reply, 1 when refused, 2 on timeout, 3 when the
//	    network is unreachable (or another error), with the error on stderr.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	exitRefused     = 1
	exitTimeout     = 2
	exitUnreachable = 3
	exitUsage       = 64
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "server":
		err := server(os.Args[2:])
		fmt.Fprintf(os.Stderr, "echo: %v\n", err)
		os.Exit(1)
	case "client":
		os.Exit(client(os.Args[2:]))
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: echo server [--name NAME] [--port 8080]\n       echo client (--tcp ADDR | --udp ADDR) [--timeout 1s] [--src IP]")
	os.Exit(exitUsage)
}

// server runs until it fails.
func server(args []string) error {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	host, _ := os.Hostname()
	name := fs.String("name", host, "name to report")
	port := fs.Int("port", 8080, "TCP and UDP port")
	_ = fs.Parse(args)
	addr := ":" + strconv.Itoa(*port)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("echo server %q on tcp+udp %s\n", *name, addr)
	go serveUDP(pc, *name)
	for {
		c, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("accept: %w", err)
		}
		go serveTCP(c, *name)
	}
}

func replyLine(name string, client net.Addr) string {
	return fmt.Sprintf("name=%s client=%s\n", name, client)
}

// serveTCP reads the client's first line (so closing never resets unread data), then
// answers with the line, or with an HTTP response if the client sent a GET.
func serveTCP(c net.Conn, name string) {
	defer func() { _ = c.Close() }()
	line := replyLine(name, c.RemoteAddr())
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	r := bufio.NewReader(c)
	first, _ := r.ReadString('\n')
	if strings.TrimSpace(first) == "hold" {
		hold(c, r, line)
		return
	}
	if strings.HasPrefix(first, "GET ") {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		for { // the rest of the request head
			l, err := r.ReadString('\n')
			if err != nil || strings.TrimSpace(l) == "" {
				break
			}
		}
		_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(line), line)
		return
	}
	_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	_, _ = io.WriteString(c, line)
}

// hold answers line to the "hold" request and to every line after it, with no deadline.
func hold(c net.Conn, r *bufio.Reader, line string) {
	_ = c.SetDeadline(time.Time{})
	for {
		if _, err := io.WriteString(c, line); err != nil {
			return
		}
		if _, err := r.ReadString('\n'); err != nil {
			return
		}
	}
}

func serveUDP(pc net.PacketConn, name string) {
	buf := make([]byte, 64*1024)
	for {
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			fmt.Fprintf(os.Stderr, "echo: udp: %v\n", err)
			os.Exit(1)
		}
		_, _ = pc.WriteTo([]byte(replyLine(name, from)), from)
	}
}

func client(args []string) int {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	tcp := fs.String("tcp", "", "TCP address to connect to")
	udp := fs.String("udp", "", "UDP address to send a datagram to")
	timeout := fs.Duration("timeout", time.Second, "overall timeout")
	src := fs.String("src", "", "source IP to bind (default: the kernel's choice)")
	sport := fs.Int("sport", 0, "source port to bind (default: the kernel's choice)")
	_ = fs.Parse(args)
	var local net.IP
	if *src != "" {
		if local = net.ParseIP(*src); local == nil {
			fmt.Fprintf(os.Stderr, "--src %q: not an IP\n", *src)
			return exitUsage
		}
	}
	if *sport < 0 || *sport > 65535 {
		fmt.Fprintf(os.Stderr, "--sport %d: out of range\n", *sport)
		return exitUsage
	}
	localPort = *sport
	var reply string
	var err error
	switch {
	case *tcp != "" && *udp == "":
		reply, err = tcpRequest(*tcp, local, *timeout)
	case *udp != "" && *tcp == "":
		reply, err = udpRequest(*udp, local, *timeout)
	default:
		usage()
	}
	if err != nil {
		code, kind := classify(err)
		fmt.Fprintf(os.Stderr, "%s: %v\n", kind, err)
		return code
	}
	fmt.Print(reply)
	return 0
}

// localPort is the source port the client binds (0: the kernel's choice).
var localPort int

func tcpRequest(addr string, local net.IP, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	d := net.Dialer{Timeout: timeout}
	if local != nil || localPort != 0 {
		d.LocalAddr = &net.TCPAddr{IP: local, Port: localPort}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(deadline)
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		return "", err
	}
	return readLine(c)
}

func udpRequest(addr string, local net.IP, timeout time.Duration) (string, error) {
	d := net.Dialer{}
	if local != nil || localPort != 0 {
		d.LocalAddr = &net.UDPAddr{IP: local, Port: localPort}
	}
	c, err := d.Dial("udp", addr)
	if err != nil {
		return "", err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		return "", err
	}
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

func readLine(c net.Conn) (string, error) {
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && line == "" {
		if errors.Is(err, io.EOF) {
			return "", errors.New("connection closed without a reply")
		}
		return "", err
	}
	return line, nil
}

// classify maps an error to the exit code and a word the harness and people can read.
func classify(err error) (int, string) {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return exitRefused, "refused"
	case errors.As(err, &ne) && ne.Timeout():
		return exitTimeout, "timeout"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return exitUnreachable, "unreachable"
	default:
		return exitUnreachable, "error"
	}
}
