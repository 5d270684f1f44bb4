#!/usr/bin/env bash
# e2e/vm/run-test.sh: run one static Go test binary inside a qemu VM that boots Debian's
# stock kernel (IPVS, dummy, ipset, iptables, veth, bridge, vxlan), and exit with the
# binary's exit code. The host kernel has no IPVS; this is how IPVS code is tested.
#
#   CGO_ENABLED=0 go test -c -o /tmp/pkg.test ./some/pkg
#   e2e/vm/run-test.sh [-e KEY=VALUE]... [-f FILE]... [-t SECONDS] /tmp/pkg.test [-test.v -test.run X ...]
#
#   -e KEY=VALUE  environment variable for the binary in the guest (repeatable). The guest
#                 always sets KPROXY_IN_VM=1.
#   -f FILE       copy FILE into the guest's /kproxy/ (repeatable), e.g. bin/kproxy.
#   -t SECONDS    timeout of the whole qemu run (default $VM_TIMEOUT or 300).
#   -n [GPORT:]HOSTPORT
#                 opt-in network (repeatable): the guest gets one virtio NIC on qemu's
#                 user-mode network with restrict=on (nothing leaves the VM), eth0 is
#                 192.0.2.15/24, and a guestfwd maps 192.0.2.100:GPORT (default 6443) in the
#                 guest to 127.0.0.1:HOSTPORT on the host through socat (e.g. the e2e API
#                 forwarder). Without -n the guest has no NIC at all.
#
# Environment: KPROXY_CACHE (default /var/cache/kproxy), VM_MEM (512M), VM_QUIET=1 (do
# not stream the guest console; it is still printed on failure), KPKG (pin the kernel
# package, e.g. linux-image-6.1.0-56-amd64; default: what linux-image-amd64 depends on),
# VM_KEEP=1 (keep the run directory with the console log), VM_SHELL=1 (console on this
# terminal, and a shell in the guest after the binary; quit with Ctrl-A x).
#
# Exit status: the binary's; 124 when the VM timed out; 125 when the guest ended without
# a result (kernel panic, /init failure); 2 on a host-side error. On any failure the last
# 50 console lines are printed.
#
# By default the guest has no NIC (-nic none): everything the test does stays inside the VM. Its
# /init (guest-init.sh) brings lo up, loads the modules, runs the binary (as
# /kproxy/<its name>, from /kproxy) with the given arguments, prints "KPROXY-VM-RESULT exit=<code>" and powers off.
#
# Needs root (apt-get, /var/cache). Installs what it lacks. Cached, keyed by kernel
# version and a hash of build-base.sh: $KPROXY_CACHE/vm-<kver>-<hash>/{vmlinux,base.cpio}.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_ROOT=${KPROXY_CACHE:-/var/cache/kproxy}
TIMEOUT=${VM_TIMEOUT:-300}
MEM=${VM_MEM:-512M}
now() { date +%s.%N; }
el() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }
log() { echo "vm: $*" >&2; }
die() { log "error: $*"; exit 2; }
T0=$(now)

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }
ENVS=() FILES=() NETFWD=()
while [ $# -gt 0 ]; do
  case "$1" in
    -e) [ $# -ge 2 ] || usage; [[ $2 == *=* ]] || die "-e wants KEY=VALUE, got '$2'"; ENVS+=("$2"); shift 2 ;;
    -f) [ $# -ge 2 ] || usage; [ -f "$2" ] || die "-f $2: no such file"; FILES+=("$2"); shift 2 ;;
    -t) [ $# -ge 2 ] || usage; TIMEOUT=$2; shift 2 ;;
    -n) [ $# -ge 2 ] || usage
        [[ $2 =~ ^([0-9]{1,5}:)?[0-9]{1,5}$ ]] || die "-n wants [GUESTPORT:]HOSTPORT, got '$2'"
        [[ $2 == *:* ]] && NETFWD+=("$2") || NETFWD+=("6443:$2"); shift 2 ;;
    -h|--help) usage ;;
    --) shift; break ;;
    -*) usage ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || usage
BIN=$1; shift
[ -f "$BIN" ] || die "$BIN: no such file"
[ "$(id -u)" = 0 ] || die "needs root (apt-get, $CACHE_ROOT)"
# The guest has no libc for the test: it must be static.
if ldd "$BIN" >/dev/null 2>&1; then
  die "$BIN is dynamically linked: build it with CGO_ENABLED=0 go test -c"
fi
for a in "$@"; do [[ $a != *$'\n'* ]] || die "arguments cannot contain newlines"; done

mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/vm.lock"
flock 9   # one preparer at a time (apt, kernel download, base build); released before the boot

# ---------------------------------------------------------------- host packages
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have qemu-system-x86_64 || need+=(qemu-system-x86)
{ [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || need+=(busybox-static)
have ipvsadm || need+=(ipvsadm)
have ipset || need+=(ipset)
{ [ -x /usr/sbin/xtables-nft-multi ] && [ -x /usr/sbin/xtables-legacy-multi ]; } || need+=(iptables)
[ -x /usr/bin/ip ] || need+=(iproute2)
have xz || need+=(xz-utils)
have conntrack || need+=(conntrack)
[ ${#NETFWD[@]} -eq 0 ] || have socat || need+=(socat)
APT_UPDATED=0
apt_update() {
  [ "$APT_UPDATED" = 1 ] && return 0
  apt-get update -qq >/dev/null 2>&1 || log "apt-get update failed (continuing with the lists there are)"
  APT_UPDATED=1
}
if [ ${#need[@]} -gt 0 ]; then
  t=$(now)
  log "installing ${need[*]}"
  apt_update
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || die "apt-get install ${need[*]} failed"
  log "installed in $(el "$t")s"
fi

# ---------------------------------------------------------------- kernel + base initramfs
kpkg() { apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -1; }
KPKG=${KPKG:-$(kpkg)}
if [ -z "$KPKG" ]; then apt_update; KPKG=$(kpkg); fi
[ -n "$KPKG" ] || die "no kernel package: 'apt-cache depends linux-image-amd64' names none"
KVER=${KPKG#linux-image-}
HASH=$(sha256sum "$HERE/build-base.sh" | cut -c1-12)
DIR=$CACHE_ROOT/vm-$KVER-$HASH
if [ -f "$DIR/ok" ]; then
  log "kernel $KVER and base initramfs cached ($DIR)"
else
  t=$(now)
  log "building $DIR (kernel download, base initramfs)"
  mkdir -p "$DIR"
  bash "$HERE/build-base.sh" "$KPKG" "$DIR" || die "build-base.sh failed"
  log "cache ready in $(el "$t")s"
  for old in "$CACHE_ROOT"/vm-*; do
    [ "$old" != "$DIR" ] && [ -d "$old" ] && log "note: older VM cache $old can be removed"
  done
fi
flock -u 9

# ---------------------------------------------------------------- per-run initramfs
t=$(now)
RUN=$(mktemp -d /tmp/kproxy-vm.XXXXXX)
QPID=
cleanup() {
  local rc=$?
  [ -n "$QPID" ] && kill "$QPID" 2>/dev/null
  if [ "${VM_KEEP:-0}" = 1 ]; then
    log "run directory kept: $RUN (initrd.img, root/, console.log)"
  elif [ $rc -ne 0 ] && [ -s "$RUN/console.log" ]; then
    rm -rf "$RUN/initrd.img" "$RUN/root"
    log "console log kept: $RUN/console.log"
  else
    rm -rf "$RUN"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
R=$RUN/root
mkdir -p "$R/kproxy"
install -m 0755 "$HERE/guest-init.sh" "$R/init"
# (under its own name: a multi-call binary such as busybox picks its applet by argv[0])
install -m 0755 "$BIN" "$R/kproxy/$(basename "$BIN")"
basename "$BIN" > "$R/kproxy/cmd"
for f in ${FILES[@]+"${FILES[@]}"}; do install -m 0755 "$f" "$R/kproxy/"; done
: > "$R/kproxy/args"
for a in "$@"; do printf '%s\n' "$a" >> "$R/kproxy/args"; done
: > "$R/kproxy/env"
for kv in ${ENVS[@]+"${ENVS[@]}"}; do printf '%s\n' "$kv" >> "$R/kproxy/env"; done
# Both archives uncompressed: a compressed one followed by a plain one fails to unpack.
{ cat "$DIR/base.cpio"; (cd "$R" && find . | busybox cpio -o -H newc 2>/dev/null); } > "$RUN/initrd.img"
log "initrd: $(du -h "$RUN/initrd.img" | cut -f1) (test binary $(du -h "$BIN" | cut -f1)) in $(el "$t")s"

# ---------------------------------------------------------------- boot
# Quiet console (serial output is slow under TCG); no KASLR or mitigations; skip the
# legacy keyboard probes. panic=-1 + -no-reboot: a guest crash ends qemu at once.
APPEND="console=ttyS0 panic=-1 oops=panic loglevel=4 mitigations=off nokaslr tsc=reliable no_timer_check"
APPEND+=" i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on"
# TCG: /dev/kvm on these hosts cannot run a stock kernel (see the ipvs-vm recipe). One
# vCPU is faster than two under TCG on a 2-core host.
SERIAL=(-serial "file:$RUN/console.log" -monitor none)
[ "${VM_SHELL:-0}" = 1 ] && { SERIAL=(-serial mon:stdio); APPEND+=" kproxy.shell=1"; }
NIC=(-nic none)
if [ ${#NETFWD[@]} -gt 0 ]; then
  # restrict=on isolates the guest (slirp answers any
  # other connect with a RST); each guest connection to 192.0.2.100:GPORT starts one socat to
  # the host's loopback. socat must log nowhere: its stdio is the guest connection.
  SOCAT=$(command -v socat)
  ND="user,id=n0,net=192.0.2.0/24,host=192.0.2.2,dhcpstart=192.0.2.15,ipv6=off,restrict=on"
  for fw in "${NETFWD[@]}"; do
    ND+=",guestfwd=tcp:192.0.2.100:${fw%%:*}-cmd:$SOCAT -lf /dev/null - TCP:127.0.0.1:${fw#*:}"
  done
  NIC=(-netdev "$ND" -device "virtio-net-pci,netdev=n0,romfile=")
  APPEND+=" kproxy.net=1"
fi
QEMU=(qemu-system-x86_64 -M pc -accel tcg,thread=multi -cpu max -smp 1 -m "$MEM"
  -nodefaults -no-user-config -display none -no-reboot "${NIC[@]}" "${SERIAL[@]}"
  -kernel "$DIR/vmlinux" -initrd "$RUN/initrd.img" -append "$APPEND")
if [ "${VM_SHELL:-0}" = 1 ]; then
  log "booting $KVER with the console here; a shell follows the binary (Ctrl-A x quits)"
  "${QEMU[@]}" || true
  exit 0
fi
NETNOTE=
[ ${#NETFWD[@]} -eq 0 ] || NETNOTE=", net: 192.0.2.100:{${NETFWD[*]}} -> 127.0.0.1"
log "booting $KVER (tcg, 1 vCPU, $MEM, timeout ${TIMEOUT}s$NETNOTE): $(basename "$BIN") $*"
tb=$(now)
: > "$RUN/console.log"
# qemu (under timeout) in the background, so that INT/TERM reach the traps at once
timeout -k 5 "$TIMEOUT" "${QEMU[@]}" < /dev/null > "$RUN/qemu.stderr" 2>&1 &
QPID=$!
TPID=
if [ "${VM_QUIET:-0}" != 1 ]; then
  # stream the console as it comes, without the serial line's carriage returns
  tail -n +1 -f -s 0.1 --pid="$QPID" "$RUN/console.log" | stdbuf -oL tr -d '\r' &
  TPID=$!
fi
set +e
wait "$QPID"; QRC=$?
QPID=
[ -n "$TPID" ] && wait "$TPID"
set -e
TQ=$(el "$tb")

LINE=$(tr -d '\r' < "$RUN/console.log" | grep -a '^KPROXY-VM-RESULT exit=[0-9]*$' | tail -1 || true)
G_INIT=$(tr -d '\r' < "$RUN/console.log" | sed -n 's/^KPROXY-VM-T init uptime=\([0-9.]*\).*/\1/p' | head -1)
G_END=$(tr -d '\r' < "$RUN/console.log" | sed -n 's/^KPROXY-VM-T end uptime=\([0-9.]*\).*/\1/p' | head -1)
if [ -n "$LINE" ]; then
  RC=${LINE#KPROXY-VM-RESULT exit=}
  log "guest exit=$RC; qemu ${TQ}s (guest: /init at ${G_INIT:-?}s, test done at ${G_END:-?}s), total $(el "$T0")s"
else
  if [ "$QRC" = 124 ] || [ "$QRC" = 137 ]; then
    RC=124; log "timed out after ${TIMEOUT}s (qemu exit $QRC)"
  else
    RC=125; log "guest ended without a result (qemu exit $QRC)"
  fi
  [ -s "$RUN/qemu.stderr" ] && { log "qemu stderr:"; head -20 "$RUN/qemu.stderr" >&2; }
fi
if [ "$RC" != 0 ]; then
  log "last 50 console lines:"
  tr -d '\r' < "$RUN/console.log" | tail -50 | sed 's/^/  | /' >&2
fi
exit "$RC"
