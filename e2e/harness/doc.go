// Package harness builds and tears down kproxy's end-to-end sandbox: a real kube-apiserver
// and etcd, N node network namespaces on a fabric bridge, pods in namespaces of their own
// running the echo server, and one service proxy per node (kproxy or upstream kube-proxy).
// The e2e tests (build tag e2e), the sandbox CLI (e2e/cmd/sandbox) and hack/demo.sh all use it.
//
// Topology, for prefix p (kpe2e for tests, kpdemo for the demo), node i and pod j:
//
//	netns p-fab     bridge kpbr0 192.0.2.1/24; etcd on 127.0.0.1:2379; kube-apiserver on
//	                0.0.0.0:6443 (advertised as 192.0.2.1); routes 100.64.i.0/24 via 192.0.2.1i;
//	                unreachable 100.100.0.0/16
//	  | veth p-ni <-> eth0 of the node
//	netns p-ni      eth0 192.0.2.(10+i)/24; bridge cni0 100.64.i.1/24; ip_forward=1;
//	                100.100.0.0/16 via 192.0.2.1 (node-originated ClusterIP traffic needs a route
//	                for its first lookup); 100.64.k.0/24 via 192.0.2.(10+k) for every other node;
//	                the proxy under test (healthz 0.0.0.0:10256, metrics 127.0.0.1:10249)
//	  | veth vpj (on cni0) <-> eth0 of the pod
//	netns p-ni-pj   eth0 100.64.i.(10+j)/24, default via 100.64.i.1; echo server on :8080 TCP+UDP
//	                With Options.Datapath (kproxy --datapath=vxlan|host-gw|ipip) neither the
//	                fabric nor the nodes get routes to pod subnets: kproxy programs them (datapath.go)
//	netns p-ext     the external client on kpbr0: sends from 198.51.100.10 to node IPs, to LB
//	                ingress IPs and externalIPs (routed per node); see external.go
//
// Options.RoutedNodes puts the last nodes on a second underlay subnet, 192.0.2.128/25 behind
// a router namespace p-rtr, the fabric keeping 192.0.2.0/25 (topology.go), so that direct
// routing and host-gw meet a peer off their L2 subnet. Options.CNIBin has the upstream CNI
// plugins attach the pods through libcni, with the conflist each node's kproxy wrote,
// instead of the harness's veths (cni.go).
//
// Rules it keeps (see /work/shared/TESTING.md): nothing of this plan is ever put in the root
// network namespace; no namespace has a default route except pods, whose default route is their
// own node. The test process (root namespace) reaches the apiserver through a forwarder on
// 127.0.0.1 that dials 192.0.2.1:6443 from a thread that joined p-fab; node and pod traffic is
// made by the echo binary in client mode, run with nsenter in the pod or node namespace.
//
// Daemons are started with `nsenter --net=/run/netns/X -- binary ...` in a session of their own,
// so the pid is the daemon's and the pid file under /run/kproxy-e2e/p/pids stops it. Everything
// of a run (pid files, logs, certificates, kubeconfigs) lives in /run/kproxy-e2e/p/ and etcd's
// data in /dev/shm/kproxy-e2e-p/. Cleanup(p) removes all of it: every process in every netns
// named p-*, every process of the pid files, the namespaces (which takes the veths, bridges and
// rules with them) and the directories. It runs before a start (a run that was killed is cleaned
// up by the next one) and after it.
//
// This package must not import kproxy's own packages: it tests the binaries from outside.
package harness
