package healthcheck

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
)

// Options configures a Server.
type Options struct {
	// Addresses are the node-port addresses to listen on (--nodeport-addresses resolved to
	// this node's IPs). Empty means every address (":port").
	Addresses []netip.Addr
	// ProxyHealthy reports whether the proxy itself is healthy (the /healthz verdict). A
	// health-check port answers 503 while it returns false. nil means always healthy.
	ProxyHealthy func() bool
	// Logger receives one line per opened or closed port and one per listen failure. The
	// zero value means klog.Background().
	Logger klog.Logger
}

// Server runs the health-check node ports. Its methods may be called from any goroutine.
type Server struct {
	opts   Options
	logger klog.Logger

	// mu guards services and failing, held across listens and closes.
	mu       sync.Mutex
	services map[types.NamespacedName]*instance
	// failing holds the port of each service whose listen failed at the last SyncServices.
	failing map[types.NamespacedName]uint16

	countsMu sync.RWMutex
	counts   map[types.NamespacedName]int

	wg sync.WaitGroup // the Serve goroutines
}

// instance is the listeners of one service's health-check port.
type instance struct {
	port      uint16
	servers   []*http.Server
	listeners []net.Listener
}

// NewServer builds a Server. It opens nothing until SyncServices.
func NewServer(opts Options) *Server {
	logger := opts.Logger
	if logger.GetSink() == nil {
		logger = klog.Background()
	}
	return &Server{
		opts:     opts,
		logger:   logger,
		services: map[types.NamespacedName]*instance{},
		failing:  map[types.NamespacedName]uint16{},
		counts:   map[types.NamespacedName]int{},
	}
}

// ErrInvalidPort is the error of a ListenError for health-check port 0.
var ErrInvalidPort = errors.New("invalid health check node port 0")

// ListenError is a service whose health-check port could not be opened.
type ListenError struct {
	Service types.NamespacedName
	Port    uint16
	// First is true when this is the first failure for this service and port since it last
	// listened (or since it asked for this port): the time to emit an event.
	First bool
	Err   error
}

func (e *ListenError) Error() string {
	return fmt.Sprintf("open health check node port %d for service %s: %v", e.Port, e.Service, e.Err)
}

func (e *ListenError) Unwrap() error { return e.Err }

// SyncError lists the services whose health-check port could not be opened, sorted by
// service. The others were synced.
type SyncError struct {
	Failed []*ListenError
}

func (e *SyncError) Error() string {
	msgs := make([]string, len(e.Failed))
	for i, f := range e.Failed {
		msgs[i] = f.Error()
	}
	return strings.Join(msgs, "; ")
}

// Unwrap gives the ListenErrors to errors.Is and errors.As.
func (e *SyncError) Unwrap() []error {
	out := make([]error, len(e.Failed))
	for i, f := range e.Failed {
		out[i] = f
	}
	return out
}

// SyncServices makes the set of open health-check ports exactly services (service →
// healthCheckNodePort): it closes the ports of services no longer listed or whose port
// changed, then opens the missing ones. Services whose port fails to open (in use, or 0) are
// returned in a *SyncError and retried at the next call; they never stop the others.
func (s *Server) SyncServices(services map[types.NamespacedName]uint16) error {
	s.mu.Lock()
	defer s.mu.Unlock()

	for name, inst := range s.services {
		if port, ok := services[name]; ok && port == inst.port {
			continue
		}
		s.logger.V(2).Info("Closing health check node port", "service", name, "port", inst.port)
		inst.close(s.logger, name)
		delete(s.services, name)
	}
	for name, port := range s.failing {
		if p, ok := services[name]; !ok || p != port {
			delete(s.failing, name)
		}
	}

	var failed []*ListenError
	for name, port := range services {
		if s.services[name] != nil {
			continue
		}
		inst, err := s.listen(name, port)
		if err != nil {
			_, seen := s.failing[name]
			s.failing[name] = port
			lerr := &ListenError{Service: name, Port: port, First: !seen, Err: err}
			if !seen {
				s.logger.Error(err, "Failed to open health check node port", "service", name, "port", port)
			}
			failed = append(failed, lerr)
			continue
		}
		delete(s.failing, name)
		s.logger.V(2).Info("Opened health check node port", "service", name, "port", port)
		s.services[name] = inst
	}
	if len(failed) == 0 {
		return nil
	}
	slices.SortFunc(failed, func(a, b *ListenError) int {
		return strings.Compare(a.Service.String(), b.Service.String())
	})
	return &SyncError{Failed: failed}
}

// SyncEndpoints sets the number of local ready endpoints of each service; services not
// listed have none.
func (s *Server) SyncEndpoints(counts map[types.NamespacedName]int) {
	cp := make(map[types.NamespacedName]int, len(counts))
	for name, n := range counts {
		cp[name] = n
	}
	s.countsMu.Lock()
	s.counts = cp
	s.countsMu.Unlock()
}

// Close closes every health-check port and waits for their servers to stop.
func (s *Server) Close() {
	s.mu.Lock()
	for name, inst := range s.services {
		inst.close(s.logger, name)
	}
	s.services = map[types.NamespacedName]*instance{}
	s.failing = map[types.NamespacedName]uint16{}
	s.mu.Unlock()
	s.wg.Wait()
}

// Ports returns the open health-check port of each service.
func (s *Server) Ports() map[types.NamespacedName]uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[types.NamespacedName]uint16, len(s.services))
	for name, inst := range s.services {
		out[name] = inst.port
	}
	return out
}

// listenAddrs returns the host:port strings to listen on for port.
func (s *Server) listenAddrs(port uint16) []string {
	if len(s.opts.Addresses) == 0 {
		return []string{net.JoinHostPort("", strconv.Itoa(int(port)))}
	}
	out := make([]string, 0, len(s.opts.Addresses))
	for _, a := range s.opts.Addresses {
		out = append(out, netip.AddrPortFrom(a, port).String())
	}
	return out
}

// listen opens port on every address and starts serving; on failure it closes what it opened.
func (s *Server) listen(name types.NamespacedName, port uint16) (*instance, error) {
	if port == 0 {
		return nil, ErrInvalidPort
	}
	inst := &instance{port: port}
	h := handler{name: name, server: s}
	for _, addr := range s.listenAddrs(port) {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			inst.close(s.logger, name)
			return nil, err
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second}
		inst.servers = append(inst.servers, srv)
		inst.listeners = append(inst.listeners, l)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.logger.Error(err, "Health check node port server stopped", "service", name, "address", addr)
			}
		}()
	}
	return inst, nil
}

// close stops the instance's servers and connections. It closes the listeners itself, so
// the port is free when it returns, even if a Serve goroutine has not started yet.
func (inst *instance) close(logger klog.Logger, name types.NamespacedName) {
	for _, srv := range inst.servers {
		if err := srv.Close(); err != nil {
			logger.Error(err, "Failed to close health check node port", "service", name, "port", inst.port)
		}
	}
	for _, l := range inst.listeners {
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			logger.Error(err, "Failed to close health check node port", "service", name, "port", inst.port)
		}
	}
	inst.servers, inst.listeners = nil, nil
}

// localEndpoints returns the number of local ready endpoints of a service.
func (s *Server) localEndpoints(name types.NamespacedName) int {
	s.countsMu.RLock()
	defer s.countsMu.RUnlock()
	return s.counts[name]
}

func (s *Server) proxyHealthy() bool {
	return s.opts.ProxyHealthy == nil || s.opts.ProxyHealthy()
}
