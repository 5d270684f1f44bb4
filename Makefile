# kproxy: a Kubernetes service proxy that replaces kube-proxy.
#
#   make demo        bring up a two-node sandbox with kproxy and show a cross-node ClusterIP request
#   make demo-down   remove the sandbox
#   make test        unit tests, then (as root) kernel contract tests and the end-to-end suite
#   make build       bin/kproxy, bin/echo, bin/sandbox
#   make vm-test     IPVS/ipset tests inside a qemu VM (the host kernel has no IPVS)
#   make lint        gofmt, go vet, golangci-lint
#   make conformance MODE=iptables   upstream sig-network e2e specs on two real nodes (kubelet,
#                    containerd), kproxy and upstream kube-proxy side by side (e2e/conformance/)

SHELL        := /bin/bash
export GOTOOLCHAIN := local
GO           ?= go
VERSION      ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)
LDFLAGS      := -X main.version=$(VERSION)
KPROXY_CACHE ?= /var/cache/kproxy
export KPROXY_CACHE
GOLANGCI_VERSION := v2.15.0
GOLANGCI     := $(KPROXY_CACHE)/tools/golangci-lint-$(GOLANGCI_VERSION)/golangci-lint
IS_ROOT      := $(shell [ "$$(id -u)" = 0 ] && echo yes)
# Debian packages the kernel-facing tiers need (command → package).
DEB_TOOLS    := iptables:iptables iptables-restore:iptables ipset:ipset ipvsadm:ipvsadm \
                conntrack:conntrack nft:nftables ip:iproute2 nsenter:util-linux curl:curl
# Debian packages of the real-node conformance tier: the container runtime, and the tools its
# images copy from this machine (OpenBSD nc, dig, socat, a static busybox).
CONFORMANCE_DEB := containerd runc netcat-openbsd bind9-dnsutils socat busybox-static openssl bash wget
MODE         ?= iptables

.PHONY: all build deps k8s unit netns vm-test vm-e2e e2e bench bench-iptables bench-ipvs bench-datapath bench-dataplane test lint demo demo-down clean \
        conformance-deps conformance conformance-quick conformance-down

all: build

build:
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/ ./cmd/... ./e2e/cmd/...
	@echo "built: $$(ls bin | tr '\n' ' ')"

# deps installs the Debian packages the kernel tiers need, only those missing.
deps:
	@missing=""; for pair in $(DEB_TOOLS); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$(IS_ROOT)" != yes ]; then echo "deps: missing$$missing; run 'make deps' as root"; exit 1; fi; \
	  echo "deps: installing$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq $$(echo $$missing | tr ' ' '\n' | sort -u) >/dev/null; \
	else echo "deps: iptables, ipset, ipvsadm, conntrack, nftables, iproute2, curl present"; fi

# conformance-deps installs the conformance tier's Debian packages, only those missing.
conformance-deps:
	@missing=""; for pkg in $(CONFORMANCE_DEB); do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$(IS_ROOT)" != yes ]; then echo "conformance-deps: missing$$missing; run as root"; exit 1; fi; \
	  echo "conformance-deps: installing$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "conformance-deps: $(CONFORMANCE_DEB) present"; fi

# conformance runs the upstream [sig-network] Services and Conformance specs (e2e.test of the
# pinned Kubernetes version) on two real nodes, with kproxy and then upstream kube-proxy in
# MODE, and prints one table; results in e2e/conformance/results/latest/. MODE=ipvs on a kernel
# without IPVS (this host's) runs the whole tier inside e2e/vm's qemu VM, four specs (README there,
# "IPVS mode"). conformance-quick: the Services [Conformance] specs against kproxy deployed
# as an operator does it: deploy/ applied, its image written locally (kproxy-image.sh), run by the kubelets.
conformance: deps conformance-deps build
	e2e/conformance/conformance.sh --mode $(MODE) --set full

conformance-quick: deps conformance-deps build
	e2e/conformance/conformance.sh --mode iptables --set quick --proxies kproxy-daemonset

conformance-down:
	e2e/conformance/down.sh

# k8s builds kube-apiserver, etcd, kubectl and upstream kube-proxy once per version.
k8s:
	@e2e/tools/build-k8s.sh >/dev/null && echo "k8s: binaries in $$(e2e/tools/build-k8s.sh 2>/dev/null | tail -1)"

unit:
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

netns: deps
	$(GO) test -tags netns -count=1 ./iptables/... ./ipset/... ./proxier/conntrack/... ./datapath/... ./cmd/...

# vm-test boots Debian's stock kernel under qemu (the host kernel has no IPVS) and runs the
# IPVS smoke test and the ipset contract tests inside it; cached in $(KPROXY_CACHE)/vm-*.
vm-test:
	e2e/vm/vm-test.sh

# vm-e2e runs kproxy inside the VM against the real apiserver on the host: the same traffic
# scenarios in ipvs, iptables and ipvs mode again.
vm-e2e: deps k8s
	KPROXY_K8S_BIN=$$(e2e/tools/build-k8s.sh 2>/dev/null | tail -1) e2e/vm/ipvs-e2e.sh

e2e: deps build k8s
	KPROXY_BIN=$(CURDIR)/bin/kproxy KPROXY_ECHO_BIN=$(CURDIR)/bin/echo \
	  KPROXY_K8S_BIN=$$(e2e/tools/build-k8s.sh 2>/dev/null | tail -1) \
	  $(GO) test -tags e2e -count=1 -v -timeout 15m ./e2e/...

test: lint unit
ifeq ($(IS_ROOT),yes)
	$(MAKE) --no-print-directory netns
	$(MAKE) --no-print-directory vm-test
	$(MAKE) --no-print-directory e2e
	$(MAKE) --no-print-directory vm-e2e
	$(MAKE) --no-print-directory conformance-quick
else
	@echo "test: not root: skipped the kernel contract and end-to-end tiers (run 'sudo make test')"
endif

$(GOLANGCI):
	GOBIN=$(dir $(GOLANGCI)) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)

lint: $(GOLANGCI)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags netns ./...
	$(GO) vet -tags e2e ./...
	$(GOLANGCI) run --allow-serial-runners ./...
	$(GOLANGCI) run --allow-serial-runners --build-tags netns ./...
	$(GOLANGCI) run --allow-serial-runners --build-tags e2e,vm ./...

# bench runs both modes' benchmarks, one after the other: bench-iptables, then bench-ipvs, each
# at N = 1,000 and 10,000 (hours: the IPVS section at 10,000 alone takes over an hour on 2
# cores). BENCH_ARGS go to both and win over these sizes (e.g. BENCH_ARGS="-n 1000 -rounds 1");
# BENCH_QUICK=1 for short runs (N=200). Results (table, JSON, PNG) in bench/results/.
BENCH_SIZES := $(if $(filter 1,$(BENCH_QUICK)),,-n 1000,10000)
bench: bench-iptables bench-ipvs

# bench-iptables runs kproxy and upstream kube-proxy (iptables, nftables) side by side on the
# host.
bench-iptables: deps build k8s
	CGO_ENABLED=0 $(GO) build -o bin/kpbench ./bench/cmd/kpbench
	bin/kpbench -kproxy-bin $(CURDIR)/bin/kproxy -echo-bin $(CURDIR)/bin/echo \
	  -k8s-bin $$(e2e/tools/build-k8s.sh 2>/dev/null | tail -1) $(BENCH_SIZES) $(BENCH_ARGS)

# bench-ipvs runs kproxy --mode=ipvs and upstream kube-proxy --proxy-mode=ipvs side by side in the
# IPVS VM (e2e/vm; the host kernel has no IPVS); kpbench is static: it also runs in the VM.
bench-ipvs: deps build k8s
	CGO_ENABLED=0 $(GO) build -o bin/kpbench ./bench/cmd/kpbench
	bin/kpbench -mode ipvs -kproxy-bin $(CURDIR)/bin/kproxy -echo-bin $(CURDIR)/bin/echo \
	  -k8s-bin $$(e2e/tools/build-k8s.sh 2>/dev/null | tail -1) $(BENCH_SIZES) $(BENCH_ARGS)

# bench-datapath measures pod-to-pod TCP throughput, 1-byte RTT and new-connection rate across two
# node namespaces over the datapath backends (vxlan, host-gw; ipip where the kernel has it) against
# a plain veth pair (bench/README.md, "Datapath"). BENCH_ARGS=-vm runs it in the IPVS VM (ipip too).
bench-datapath: deps
	CGO_ENABLED=0 $(GO) build -o bin/kpdatapath ./bench/cmd/kpdatapath
	bin/kpdatapath $(BENCH_ARGS)

# bench-dataplane measures new connections per second and first-packet latency from a pod through a
# ClusterIP with 10 and 10,000 other Services programmed: kproxy --mode=iptables against kube-proxy
# iptables and nftables, and the pod IP with no proxy as the limit (bench/README.md, "Data plane").
bench-dataplane: deps build k8s
	CGO_ENABLED=0 $(GO) build -o bin/kpdataplane ./bench/cmd/kpdataplane
	bin/kpdataplane -kproxy-bin $(CURDIR)/bin/kproxy -echo-bin $(CURDIR)/bin/echo \
	  -k8s-bin $$(e2e/tools/build-k8s.sh 2>/dev/null | tail -1) $(BENCH_ARGS)

demo: deps build k8s
	hack/demo.sh

demo-down:
	hack/demo-down.sh

clean:
	rm -rf bin
