// Package cni renders and writes the CNI network configuration list kproxy's datapath
// installs on a node (10-kproxy.conflist): the upstream `bridge` plugin (bridge cni0,
// gateway, hairpin, MTU of the backend, no masquerade of its own: kproxy's datapath
// masquerades egress), `host-local` IPAM on the node's pod subnets with a default route,
// and `portmap` for hostPort. The plugins themselves are upstream's, built by
// build-plugins.sh from github.com/containernetworking/plugins; kproxy never re-implements
// them and does not link them (they are not in go.mod).
//
// RenderConflist is pure; WriteConflist writes atomically (temp file + rename, so the
// runtime never reads half a file) and only when the content changed. It imports no other
// kproxy package.
package cni
