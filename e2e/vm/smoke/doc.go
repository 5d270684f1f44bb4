// Package smoke is the IPVS VM's own check, run inside the VM by e2e/vm/run-test.sh
// (build tag vm): a dummy kube-ipvs0 holding a service IP, an IPVS virtual server made
// with moby/ipvs, two real servers in two namespaces joined by veth, and real TCP from a
// client namespace through the virtual server. Everything happens in namespaces the
// test creates; it refuses to run outside the VM (KPROXY_IN_VM unset).
//
// It imports no kproxy package: it checks the VM and the kernel features kproxy's IPVS
// mode relies on, not kproxy.
package smoke
