// Package ipvse2e is the VM end-to-end test with a real apiserver: the harness runs
// kube-apiserver and etcd on the host (prefix kpvm<pid>, no proxy on the host), and kproxy
// runs inside the IPVS test VM (e2e/vm/run-test.sh -n), reaching the apiserver through qemu's
// user network (restrict=on, guestfwd 192.0.2.100:6443 → the API forwarder on the host's
// 127.0.0.1). The pods are network namespaces inside the VM. The host half (here, build tags
// e2e and vm, so the ordinary e2e run does not include it) creates the services, writes
// services.json for the guest and rewrites EndpointSlices when the guest asks (KPVM-STEP
// lines on the console); the in-guest half is ./guest (build tag vm), which runs the same
// traffic scenarios in each mode of KPVM_MODES (default ipvs,iptables), switching modes with
// kproxy restarts, then kproxy --cleanup. See ../README.md.
//
//	sudo e2e/vm/ipvs-e2e.sh        # or: go test -tags 'e2e vm' -count=1 -v ./e2e/vm/ipvse2e
package ipvse2e
