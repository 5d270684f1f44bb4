package main

import (
	"context"

	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/datapath"
	"github.com/kproxy/kproxy/iptables"
)

// newDatapathAgent builds the pod network agent for --datapath; nil for none.
func newDatapathAgent(ctx context.Context, cfg Config, client kubernetes.Interface, nodeName string) (*datapath.Agent, error) {
	backend := datapath.Backend(cfg.Datapath)
	if backend == "" || backend == datapath.BackendNone {
		return nil, nil
	}
	logger := klog.FromContext(ctx)
	opts := datapath.AgentOptions{
		Client:   client,
		NodeName: nodeName,
		Config: datapath.Config{Backend: backend, DirectRouting: cfg.VXLANDirectRouting,
			ClusterCIDRs: cfg.ClusterCIDRs},
		CNIConfDir:        cfg.CNIConfDir,
		UnderlayInterface: cfg.DatapathUnderlayInterface,
		SyncPeriod:        cfg.SyncPeriod,
	}
	for _, p := range cfg.ClusterCIDRs {
		if p.Addr().Is4() {
			opts.IPTables = iptables.New(iptables.Options{})
		} else {
			opts.IP6Tables = iptables.New(iptables.Options{IPv6: true})
		}
	}
	if len(cfg.ClusterCIDRs) == 0 {
		logger.Error(nil, "No --cluster-cidr: the datapath cannot tell pod egress from pod-to-pod traffic, so pod egress is not masqueraded")
	}
	a, err := datapath.NewAgent(opts)
	if err != nil {
		return nil, err
	}
	logger.Info("Datapath", "backend", backend, "directRouting", cfg.VXLANDirectRouting,
		"cniConfDir", cfg.CNIConfDir, "underlayInterface", cfg.DatapathUnderlayInterface,
		"clusterCIDRs", cfg.ClusterCIDRs)
	return a, nil
}
