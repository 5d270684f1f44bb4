// Package vmtest runs the IPVS mode's Proxier against a real IPVS kernel, inside the test VM
// (e2e/vm/run-test.sh; build tag vm): namespaces for a node, a client and two backends, a
// ClusterIP service applied through Proxier.Apply, ipvsadm -Ln, real TCP through the VIP,
// a restart that writes nothing, and graceful termination of a removed endpoint. It refuses
// to run outside the VM (KPROXY_IN_VM unset).
package vmtest
