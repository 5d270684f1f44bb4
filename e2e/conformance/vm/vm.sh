#!/usr/bin/env bash
# The conformance tier in IPVS mode: the whole tier (etcd, kube-apiserver, controller manager,
# scheduler, CoreDNS, KPC_NODES nodes with containerd + kubelet + the proxy, e2e.test) inside
# one qemu VM running Debian's stock kernel (the host kernel has no IPVS), under TCG. The guest
# boots e2e/vm's kernel and base initramfs (modules) plus guest-init.sh, mounts the host's /
# read-only over 9p as the lower layer of an overlay root (so the host's containerd, runc,
# tools, the cached builds and this repository are used as they are) and runs guest.sh, which
# runs up.sh, proxy.sh and run.sh unchanged. The guest has no NIC: nothing leaves it. Its only
# writable host directory is OUT.
#
# Usage: vm.sh --mode ipvs|iptables --set vm|quick|full --proxies "kproxy kube-proxy" --out OUT
#   Writes OUT/<proxy>/{junit_01.xml,e2e.log}, OUT/logs/, OUT/console.log, OUT/timings,
#   OUT/{up,proxy,run}.log. Exit status: guest.sh's; 124 on timeout; 125 when the guest ended
#   without a result.
# Environment: KPCI_VM_MEM (6G), KPCI_VM_CPUS (2), KPCI_VM_TIMEOUT (seconds, 5400), KPC_NODES
#   (default 2 here), KPC_PREFIX (kpci), KPC_FOCUS / KPC_SKIP / KPC_E2E_ARGS (run.sh), KPC_IMAGES
#   (up.sh: the images each node imports), KPCI_HOOK (a script the guest runs once up, output in
#   OUT/hook.log),
#   KPROXY_BIN (default bin/kproxy), KPROXY_CACHE, KPKG (kernel package, as e2e/vm).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${KPC_PREFIX:=kpci}" "${KPC_NODES:=2}"
export KPC_PREFIX KPC_NODES
. "$HERE/../env.sh"
MODE=ipvs SET=vm PROXIES="kproxy kube-proxy" OUT=
while [[ $# -gt 0 ]]; do
  case $1 in
    --mode) MODE=$2; shift 2 ;;
    --set) SET=$2; shift 2 ;;
    --proxies) PROXIES=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "usage: $0 --mode ipvs|iptables --set vm|quick|full --proxies \"kproxy kube-proxy\" --out DIR" >&2; exit 64 ;;
  esac
done
[[ -n $OUT ]] || { echo "vm.sh: --out DIR is required" >&2; exit 64; }
# the vm set's specs use no image but agnhost (and pause): importing the other three (the same
# 213 MB layer twice more, and busybox) costs each node about 70 s more under TCG
[[ $SET != vm || -n ${KPC_IMAGES:-} ]] || KPC_IMAGES="pause agnhost"
[[ $(id -u) == 0 ]] || { echo "vm.sh: needs root" >&2; exit 2; }
: "${KPROXY_BIN:=$REPO/bin/kproxy}" "${KPCI_VM_MEM:=6G}" "${KPCI_VM_CPUS:=2}" "${KPCI_VM_TIMEOUT:=5400}"
[[ -x $KPROXY_BIN ]] || { echo "vm.sh: $KPROXY_BIN missing (make build)" >&2; exit 2; }
T0=$SECONDS

# ---- builds (on the host; the guest reads them over 9p) ----
BUILT=$("$CONF_DIR/build.sh")
# ---- e2e/vm's kernel and base initramfs (run-test.sh builds them on first use) ----
kpkg() { apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -1; }
KPKG=${KPKG:-$(kpkg)}
[[ -n $KPKG ]] || { echo "vm.sh: no kernel package (apt-cache depends linux-image-amd64)" >&2; exit 2; }
KVER=${KPKG#linux-image-}
VMDIR=$KPROXY_CACHE/vm-$KVER-$(sha256sum "$REPO/e2e/vm/build-base.sh" | cut -c1-12)
if [[ ! -f $VMDIR/ok ]] || ! command -v qemu-system-x86_64 >/dev/null; then   # (it installs qemu)
  log "building the VM kernel and base initramfs (e2e/vm/run-test.sh)"
  KPKG=$KPKG VM_QUIET=1 "$REPO/e2e/vm/run-test.sh" /bin/busybox true >&2
fi
# ---- the modules e2e/vm's base lacks: 9p over virtio, overlay (containerd's snapshotter) ----
KO=$KPROXY_CACHE/conformance-vm-$KVER/ko
if [[ ! -f $KO/order ]]; then
  log "extracting 9p and overlay modules from $KPKG"
  w=$KPROXY_CACHE/conformance-vm-$KVER/work; rm -rf "$w" "$KO"; mkdir -p "$w" "$KO"
  (cd "$w" && apt-get download "$KPKG" >/dev/null 2>&1) || { apt-get update -qq >/dev/null 2>&1 || true; (cd "$w" && apt-get download "$KPKG" >/dev/null); }
  dpkg -x "$w/${KPKG}"_*.deb "$w/k"
  md=$w/k/lib/modules/$KVER; [[ -d $md ]] || md=$w/k/usr/lib/modules/$KVER
  order="netfs fscache 9pnet 9pnet_virtio 9p overlay"   # each after its depends=
  for m in $order; do
    f=$(find "$md/kernel" -name "$m.ko*" | head -1); [[ -n $f ]] || { echo "vm.sh: $m not in $KPKG" >&2; exit 2; }
    case $f in *.xz) xz -dc "$f" ;; *.zst) zstd -dcq "$f" ;; *) cat "$f" ;; esac > "$KO/$m.ko"
  done
  echo "$order" > "$KO/order.tmp"; mv "$KO/order.tmp" "$KO/order"
  rm -rf "$w"
fi

# ---- the run directory, the guest's settings, the per-run initramfs ----
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
printf '%s\n' "$BUILT" > "$OUT/built.env"
q() { printf '%q' "$1"; }
cat > "$OUT/env" <<EOT
KPCI_REPO=$(q "$REPO")
KPCI_MODE=$(q "$MODE")
KPCI_SET=$(q "$SET")
KPCI_PROXIES=$(q "$PROXIES")
KPROXY_CACHE=$(q "$KPROXY_CACHE")
KPROXY_BIN=$(q "$KPROXY_BIN")
KPC_BUILT=/kpci-out/built.env
KPC_PREFIX=$(q "$KPC_PREFIX")
KPC_NODES=$(q "$KPC_NODES")
KPC_FOCUS=$(q "${KPC_FOCUS:-}")
KPC_SKIP=$(q "${KPC_SKIP:-}")
KPC_E2E_ARGS=$(q "${KPC_E2E_ARGS:-}")
KPC_IMAGES=$(q "${KPC_IMAGES:-}")
KPCI_HOOK=$(q "${KPCI_HOOK:-}")
EOT
[[ -n ${KPC_FOCUS:-} ]] || sed -i '/^KPC_FOCUS=/d' "$OUT/env"   # run.sh: unset means the set's focus
: > "$OUT/timings"
R=$(mktemp -d /tmp/kpci-vm.XXXXXX)
QPID=
cleanup() {
  [[ -n $QPID ]] && kill "$QPID" 2>/dev/null
  rm -rf "$R"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$R/root/kpci/ko"
install -m 0755 "$HERE/guest-init.sh" "$R/root/init"
cp "$KO"/* "$R/root/kpci/ko/"
{ cat "$VMDIR/base.cpio"; (cd "$R/root" && find . | busybox cpio -o -H newc 2>/dev/null); } > "$R/initrd.img"

APPEND="console=ttyS0 panic=-1 oops=panic loglevel=4 mitigations=off nokaslr tsc=reliable no_timer_check"
APPEND+=" i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on"
# No NIC. The host's / is exported read-only (readonly=on: the guest cannot write it); OUT is
# the one writable export. multidevs=remap: / spans several host file systems.
QEMU=(qemu-system-x86_64 -M pc -accel tcg,thread=multi -cpu max -smp "$KPCI_VM_CPUS" -m "$KPCI_VM_MEM"
  -nodefaults -no-user-config -display none -no-reboot -nic none
  -serial "file:$OUT/console.log" -monitor none
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap
  -virtfs "local,path=$OUT,mount_tag=kpciout,security_model=none,multidevs=remap"
  -kernel "$VMDIR/vmlinux" -initrd "$R/initrd.img" -append "$APPEND")
log "booting $KVER (tcg, $KPCI_VM_CPUS vCPUs, $KPCI_VM_MEM, timeout ${KPCI_VM_TIMEOUT}s): $MODE $SET, $PROXIES, $KPC_NODES nodes → $OUT"
: > "$OUT/console.log"
tb=$SECONDS
timeout -k 5 "$KPCI_VM_TIMEOUT" "${QEMU[@]}" < /dev/null > "$OUT/qemu.stderr" 2>&1 &
QPID=$!
tail -n +1 -f -s 1 --pid="$QPID" "$OUT/console.log" | stdbuf -oL tr -d '\r' | stdbuf -oL grep -a -E '^(KPCI-VM|[0-9:]+ conformance:|Ran [0-9]+ of|FAIL!|SUCCESS!)' >&2 &
TPID=$!
set +e
wait "$QPID"; QRC=$?
QPID=
wait "$TPID"
set -e
line=$(tr -d '\r' < "$OUT/console.log" | grep -a '^KPCI-VM-RESULT exit=[0-9]*$' | tail -1 || true)
if [[ -n $line ]]; then
  RC=${line#KPCI-VM-RESULT exit=}
elif [[ $QRC == 124 || $QRC == 137 ]]; then
  RC=124; log "VM timed out after ${KPCI_VM_TIMEOUT}s"
else
  RC=125; log "the guest ended without a result (qemu exit $QRC)"; tr -d '\r' < "$OUT/console.log" | tail -30 >&2
fi
log "VM done in $((SECONDS - tb))s (guest exit $RC), total $((SECONDS - T0))s"
exit "$RC"
