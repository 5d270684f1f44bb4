# syntax=docker/dockerfile:1
#
# kproxy's image: a static kproxy (CGO_ENABLED=0) on Debian slim, with the tools kproxy runs
# (iptables, iptables-save, iptables-restore and the ip6tables ones) and those an operator
# uses on the node (ipset, conntrack, ipvsadm, iproute2: kproxy itself talks netlink for
# ipsets, conntrack and IPVS), plus the upstream CNI plugins the datapath's conflist chains
# (bridge, host-local, portmap, loopback), which deploy/optional/datapath-daemonset.yaml's
# init container copies to the node's /opt/cni/bin.
#
#   docker build -t kproxy:dev .
#   docker build --build-arg IPTABLES_BACKEND=legacy -t kproxy:dev-legacy .
#
# IPTABLES_BACKEND must match the other iptables users of the nodes (kubelet, the CNI):
# nft (Debian's default, iptables-nft) or legacy. Nothing is pulled at run time.

ARG GO_VERSION=1.26
ARG DEBIAN_RELEASE=bookworm

# kproxy, static.
FROM golang:${GO_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=v0.0.0-dev
RUN CGO_ENABLED=0 GOTOOLCHAIN=local go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.version=${VERSION}" -o /out/kproxy ./cmd/kproxy \
 && /out/kproxy --version

# The CNI plugins, pinned, built from Go modules by the same script the tests use.
FROM golang:${GO_VERSION}-${DEBIAN_RELEASE} AS cni
ARG CNI_PLUGINS_VERSION=v1.9.1
ENV KPROXY_CACHE=/cache CNI_PLUGINS_VERSION=${CNI_PLUGINS_VERSION}
COPY datapath/cni/build-plugins.sh /build-plugins.sh
RUN /build-plugins.sh /out/cni

FROM debian:${DEBIAN_RELEASE}-slim
ARG IPTABLES_BACKEND=nft
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      iptables ipset conntrack ipvsadm iproute2 \
 && rm -rf /var/lib/apt/lists/* \
 && for t in iptables ip6tables; do update-alternatives --set $t /usr/sbin/$t-${IPTABLES_BACKEND}; done \
 && iptables --version
COPY --from=build /out/kproxy /usr/local/bin/kproxy
COPY --from=cni /out/cni/ /opt/kproxy/cni/bin/
ENTRYPOINT ["/usr/local/bin/kproxy"]
