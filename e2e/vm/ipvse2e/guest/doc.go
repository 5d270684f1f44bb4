// Package guest is the in-VM half of the IPVS e2e test (build tag vm): a node-like setup
// in the guest's root namespace (cni0 bridge, pod namespaces with echo servers), kproxy
// --mode=ipvs fed by the real apiserver on the host, and real traffic. See ../doc.go.
package guest
