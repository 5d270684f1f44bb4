package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	libipvs "github.com/moby/ipvs"
	"k8s.io/client-go/kubernetes"
)

// Churn in IPVS mode: the same schedule as the iptables mode's (churn.go: -churn-rate
// single-endpoint changes per second for -churn-duration, round-robin over the load's
// services with stride 7, 8 writers), but the writes are made by the host (/churn, the
// apiserver's side) and the latencies are read in the guest, on its own clock.
//
// The guest starts the schedule when it sends /churn: change k is due at that instant plus
// k × interval (guest clock); the host reports, per change, how late its write started
// against its own copy of the schedule (write lag), and the latency of change k is from
// (due + lag) to the midpoint of the guest's netlink read of that virtual server's real
// servers that first showed the new one. The /churn request's one-way delay over qemu's
// guestfwd (a few ms) is inside that latency: an upper bound by that much. A tracked change
// whose service is due to change again before it was seen is "superseded" and not counted.
// After the host's reply (the last write): drain = time until every service's real servers
// are the last written ones (whole /proc/net/ip_vs reads).

// hostChurn makes the schedule's writes against the apiserver and returns each write's lag
// behind the schedule, in ms, in schedule order.
func hostChurn(ctx context.Context, cs kubernetes.Interface, svcs []*benchService, rate float64, d time.Duration, stride int) ([]float64, error) {
	total := int(rate * d.Seconds())
	if total <= 0 || len(svcs) == 0 {
		return nil, nil
	}
	if total > maxChurnChanges {
		return nil, fmt.Errorf("churn: %d changes, at most %d addresses", total, maxChurnChanges)
	}
	interval := time.Duration(float64(time.Second) / rate)
	lags := make([]float64, total)
	due := make([]time.Time, total)
	var mu sync.Mutex
	var writeErr error
	svc := func(k int) *benchService { return svcs[(k*stride)%len(svcs)] }
	pacedWrites(total, interval, svc,
		func(k int, at time.Time) {
			mu.Lock()
			due[k] = at
			mu.Unlock()
		},
		func(k int) {
			tw := time.Now()
			err := changeEndpoint(ctx, cs, svc(k), netip.AddrPortFrom(churnAddr(k), targetPort).String())
			mu.Lock()
			lags[k] = float64(tw.Sub(due[k]).Microseconds()) / 1000
			if err != nil && writeErr == nil {
				writeErr = err
			}
			mu.Unlock()
		})
	return lags, writeErr
}

// guestChurn runs the churn phase from the guest: it sends /churn and reads the kernel.
func guestChurn(cfg config, ctl *ctlClient, h *libipvs.Handle, svcs []*benchService, ps *guestPollStats, rr *runResult) error {
	total := int(cfg.ChurnRate * cfg.ChurnDuration.Seconds())
	if total <= 0 {
		return nil
	}
	interval := time.Duration(float64(time.Second) / cfg.ChurnRate)
	stride := 1
	if len(svcs) > 7 {
		stride = 7
	}
	changes := make([]*churnChange, total)
	next := make([]int, total) // the next change of the same service, or -1
	last := map[*benchService]int{}
	start := time.Now()
	for k := range total {
		s := svcs[(k*stride)%len(svcs)]
		changes[k] = &churnChange{svc: s, addr: netip.AddrPortFrom(churnAddr(k), targetPort).String(),
			scheduled: start.Add(time.Duration(k) * interval)}
		next[k] = -1
		if j, ok := last[s]; ok {
			next[j] = k
		}
		last[s] = k
	}
	var reply struct {
		LagsMs []float64 `json:"lagsMs"`
	}
	written := make(chan error, 1)
	go func() {
		written <- ctl.call(context.Background(), "/churn",
			map[string]any{"rate": cfg.ChurnRate, "durationS": cfg.ChurnDuration.Seconds(), "stride": stride}, &reply)
	}()

	// The tracked changes' poller, until stop.
	var mu sync.Mutex // guards changes[*].seen and .superseded
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-stop:
				return
			default:
			}
			now := time.Now()
			for k := 0; k < total; k += cfg.ChurnSample {
				c := changes[k]
				if c.scheduled.After(now) {
					break
				}
				mu.Lock()
				done := !c.seen.IsZero() || c.superseded
				if !done && next[k] >= 0 && !changes[next[k]].scheduled.After(now) {
					c.superseded, done = true, true
				}
				mu.Unlock()
				if done {
					continue
				}
				t0 := time.Now()
				ok := hasRealServer(h, c.svc.vip, c.addr)
				t1 := time.Now()
				ps.endpoint.add(t1.Sub(t0))
				if ok {
					mu.Lock()
					c.seen = t0.Add(t1.Sub(t0) / 2)
					mu.Unlock()
				}
			}
			time.Sleep(cfg.Gap)
		}
	}()

	werr := <-written
	lastWrite := time.Now()
	if werr == nil && len(reply.LagsMs) != total {
		werr = fmt.Errorf("churn: the host reported %d writes, want %d", len(reply.LagsMs), total)
	}
	if werr != nil {
		close(stop)
		<-stopped
		return werr
	}
	for _, c := range changes { // the state the host wrote last
		c.svc.eps = append([]string{c.addr}, c.svc.eps[1:]...)
	}
	res, err := pollIPVS(cfg.Gap, cfg.Cap, &ps.full, func() bool { return true }, func(st ipvsState) bool {
		for _, s := range svcs {
			if !ipvsOK(st, s) {
				return false
			}
		}
		return true
	})
	time.Sleep(4 * cfg.Gap) // the tracked poller's last round sees what the drain saw
	close(stop)
	<-stopped
	if err != nil {
		return err
	}
	if res.Capped {
		rr.Capped = append(rr.Capped, "churn.drain_s")
		return fmt.Errorf("churn: final state not in IPVS within %v of the last write", cfg.Cap)
	}
	for k, c := range changes {
		c.wrote = c.scheduled.Add(time.Duration(reply.LagsMs[k] * float64(time.Millisecond)))
	}
	summariseChurn(cfg, changes, start, lastWrite, res, rr)
	return nil
}

// hasRealServer reports whether the virtual server vip:80/TCP has the real server addr
// ("ip:port") with a weight above 0.
func hasRealServer(h *libipvs.Handle, vip, addr string) bool {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return false
	}
	vs := &libipvs.Service{AddressFamily: syscall.AF_INET, Protocol: syscall.IPPROTO_TCP,
		Address: net.ParseIP(vip), Port: servicePort}
	dests, err := h.GetDestinations(vs)
	if err != nil {
		return false
	}
	for _, d := range dests {
		if d.Port == ap.Port() && d.Weight > 0 && d.Address.Equal(net.IP(ap.Addr().AsSlice())) {
			return true
		}
	}
	return false
}
