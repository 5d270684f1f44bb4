package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kproxy/kproxy/proxier"
)

// redialEvery is how often a refused connection to the apiserver is tried again.
const redialEvery = time.Second

// apiClients are kproxy's two clients of one apiserver: client for the informers, the Node
// lookups and the events, whose connections wait for a restarting apiserver (redialRefused);
// probe for APIContact, which must see a refusal as one.
type apiClients struct {
	client kubernetes.Interface
	probe  kubernetes.Interface
}

func newClients(cfg Config) (apiClients, error) {
	rc, err := restConfig(cfg)
	if err != nil {
		return apiClients{}, err
	}
	probe, err := kubernetes.NewForConfig(rest.CopyConfig(rc))
	if err != nil {
		return apiClients{}, err
	}
	var d net.Dialer
	rc.Dial = redialRefused(d.DialContext, redialEvery)
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return apiClients{}, err
	}
	return apiClients{client: client, probe: probe}, nil
}

func restConfig(cfg Config) (*rest.Config, error) {
	var (
		rc  *rest.Config
		err error
	)
	if cfg.Kubeconfig == "" && cfg.Master == "" {
		rc, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("no --kubeconfig or --master given and not running in a cluster: %w", err)
		}
	} else {
		rc, err = clientcmd.BuildConfigFromFlags(cfg.Master, cfg.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("load kubeconfig %q: %w", cfg.Kubeconfig, err)
		}
	}
	rc.QPS = cfg.APIQPS
	rc.Burst = int(cfg.APIBurst)
	rc.UserAgent = "kproxy/" + version
	rc.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	return rc, nil
}

type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// redialRefused wraps dial so that a refused connection (nothing listens: the apiserver is
// restarting or stopped) is tried again every `every` until it connects, fails otherwise, or
// ctx ends. client-go's reflectors back a failed watch off exponentially, up to [30 s, 60 s)
// between attempts, so after an apiserver outage of a minute the informers would see changes
// up to a minute late; with this dial their next attempt waits in the dial instead, and
// connects within `every` of the apiserver's return. Requests with a deadline still end at
// it (the error then carries the refusal).
func redialRefused(dial dialFunc, every time.Duration) dialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		for {
			conn, err := dial(ctx, network, addr)
			if err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
				return conn, err
			}
			t := time.NewTimer(every)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, fmt.Errorf("%w (last: %w)", ctx.Err(), err)
			case <-t.C:
			}
		}
	}
}

// readyzProbe asks the apiserver's /readyz (readable by every authenticated user through
// system:public-info-viewer).
func readyzProbe(client kubernetes.Interface) func(context.Context) error {
	return func(ctx context.Context) error {
		return client.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error()
	}
}

// apiContact builds the apiserver contact check /healthz reports: a probe every half sync
// period, the apiserver reported lost after 2 × the sync period without an answer.
func apiContact(cfg Config, probe kubernetes.Interface) *proxier.APIContact {
	interval := max(cfg.SyncPeriod/2, time.Second)
	return proxier.NewAPIContact(proxier.APIContactOptions{
		Probe: readyzProbe(probe), Interval: interval, MaxAge: 2 * cfg.SyncPeriod,
	})
}
