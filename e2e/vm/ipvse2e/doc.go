// Package ipvse2e is the IPVS-mode end-to-end test with a real apiserver: the harness runs
// kube-apiserver and etcd on the host (prefix kpvm, no proxy on the host), and kproxy
// --mode=ipvs runs inside the IPVS test VM (e2e/vm/run-test.sh -n), reaching the apiserver
// through qemu's user network (restrict=on, guestfwd 192.0.2.100:6443 → the API forwarder
// on the host's 127.0.0.1). The pods are network namespaces inside the VM on a cni0 bridge;
// the in-guest half is ./guest (build tag vm), the host half is the test here (build tags e2e
// and vm, so the ordinary e2e run does not include it).
//
//	sudo e2e/vm/ipvs-e2e.sh        # or: go test -tags 'e2e vm' -count=1 -v ./e2e/vm/ipvse2e
package ipvse2e
