// Package guest is the in-VM half of the VM e2e test (build tag vm): a node-like setup in the
// guest's root namespace (cni0 with this node's pods, cni1 with "another node's" pods, an
// external client namespace; IPv4 and IPv6), foreign IPVS/ipset/iptables objects, kproxy
// fed by the real apiserver on the host (dual-stack), and real traffic (TCP, UDP, SCTP): one
// set of scenarios run in each proxy mode, the IPVS-only checks (ipvsadm, kube-ipvs0,
// kproxy inspect), endpoint changes made on the host, restart and tampering, mode switches,
// the --ipvs-* flags and kproxy --cleanup. See ../doc.go and ../../README.md.
package guest
