#!/usr/bin/env bash
# e2e/vm/build-base.sh KPKG DIR
#
# Builds the cached part of the IPVS test VM into DIR (called by run-test.sh, under its
# lock, only when DIR/ok is missing; DIR's name holds the kernel version and a hash of
# this file, so editing this file rebuilds):
#
#   DIR/vmlinux     Debian's kernel KPKG (e.g. linux-image-6.1.0-56-amd64), the ELF cut
#                   out of vmlinuz: qemu boots it directly through its PVH entry note,
#                   which skips ~2.4 s of in-guest xz decompression under TCG.
#   DIR/base.cpio   uncompressed newc initramfs: busybox-static (applet links made here),
#                   ipvsadm, ipset, iproute2 ip, iptables (nft and legacy) with their
#                   libraries and all xtables extensions, conntrack, /etc/protocols, the
#                   kernel modules below with their dependency closure, modules.dep, and
#                   /etc/kproxy/modules (what the guest's /init loads at boot).
#   DIR/ok          written last.
#
# Everything else (the .deb, the unpacked kernel tree, the staging root) is deleted.
set -euo pipefail
KPKG=$1 DIR=$2
KVER=${KPKG#linux-image-}
now() { date +%s.%N; }
el() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }
log() { echo "vm: $*" >&2; }

# Loaded at boot, in this order (crc32c_generic first: libcrc32c, which nf_conntrack,
# nf_nat, ip_vs and nf_tables need, has only a softdep on it, and busybox modprobe
# ignores softdeps).
LOAD="crc32c_generic
 ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_lblc ip_vs_lblcr ip_vs_sh ip_vs_dh ip_vs_sed ip_vs_nq ip_vs_mh
 nf_conntrack nf_conntrack_netlink nf_nat
 veth bridge br_netfilter dummy vxlan ipip sctp
 ip_set ip_set_hash_ip ip_set_hash_ipport ip_set_hash_ipportip ip_set_hash_ipportnet ip_set_hash_net
 ip_set_hash_netport ip_set_bitmap_port ip_set_list_set
 x_tables xt_set xt_ipvs xt_comment xt_mark xt_MASQUERADE xt_conntrack xt_addrtype xt_nat xt_tcpudp
 xt_statistic xt_physdev xt_multiport xt_recent xt_REDIRECT xt_CT xt_NFLOG xt_connmark nfnetlink_log xt_sctp
 ip_tables iptable_nat iptable_filter iptable_mangle iptable_raw ipt_REJECT
 ip6_tables ip6table_nat ip6table_filter ip6table_mangle ip6table_raw ip6t_REJECT
 nf_tables nft_compat nft_chain_nat nft_masq nft_ct nft_nat nft_reject_inet nft_fib_inet nft_fib_ipv4 nft_fib_ipv6"
# In the image but not loaded: a NIC for tiers that reach the host (qemu user networking).
EXTRA="virtio_pci virtio_net"

t=$(now)
W=$DIR/work
rm -rf "$W"; mkdir -p "$W"
(cd "$W" && apt-get download "$KPKG" >/dev/null 2>&1) || {
  log "apt-get download $KPKG failed; apt-get update and retry"
  apt-get update -qq >/dev/null 2>&1 || true
  (cd "$W" && apt-get download "$KPKG" >/dev/null)
}
dpkg -x "$W/${KPKG}"_*.deb "$W/kernel"
MODROOT=$W/kernel/lib/modules/$KVER
[ -d "$MODROOT" ] || MODROOT=$W/kernel/usr/lib/modules/$KVER
VMLINUZ=$W/kernel/boot/vmlinuz-$KVER
# The bzImage's payload is one xz stream: find its magic and decompress from there.
off=$(LC_ALL=C grep -m1 -obUaP '\xfd7zXZ\x00' "$VMLINUZ" | cut -d: -f1)
[ -n "$off" ] || { log "no xz payload in $VMLINUZ"; exit 1; }
# (xz complains about the bytes after the stream: they are the rest of the bzImage)
tail -c +$((off + 1)) "$VMLINUZ" | xz -dc --single-stream > "$DIR/vmlinux.tmp" 2>/dev/null || true
[ -s "$DIR/vmlinux.tmp" ] || { log "vmlinux extraction failed"; exit 1; }
mv "$DIR/vmlinux.tmp" "$DIR/vmlinux"
log "kernel $KVER downloaded and unpacked in $(el "$t")s"

t=$(now)
ST=$W/root
mkdir -p "$ST"/{usr/bin,usr/sbin,usr/lib/x86_64-linux-gnu,usr/lib64,etc/kproxy,kproxy}
ln -s usr/bin "$ST/bin"; ln -s usr/sbin "$ST/sbin"; ln -s usr/lib "$ST/lib"; ln -s usr/lib64 "$ST/lib64"
cp /bin/busybox "$ST/usr/bin/busybox"

# Tools and the shared libraries ldd finds; iptables' extensions are dlopen()ed, which
# ldd cannot see: copy the whole xtables directory.
copy_with_libs() {
  local f lib
  for f in "$@"; do
    mkdir -p "$ST$(dirname "$f")"; cp -L "$f" "$ST$f"
    for lib in $(ldd "$f" 2>/dev/null | awk '/=> \//{print $3} /^\t\/.*ld-linux/{print $1}'); do
      [ -e "$ST$lib" ] || { mkdir -p "$ST$(dirname "$lib")"; cp -L "$lib" "$ST$lib"; }
    done
  done
}
copy_with_libs /usr/sbin/ipvsadm /usr/sbin/ipset /usr/bin/ip /usr/sbin/conntrack \
  /usr/sbin/xtables-legacy-multi /usr/sbin/xtables-nft-multi
copy_with_libs /usr/lib/x86_64-linux-gnu/xtables/*.so
for n in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
  ln -sf xtables-nft-multi "$ST/usr/sbin/$n"   # Debian 12's default: the nft backend
  ln -sf xtables-nft-multi "$ST/usr/sbin/${n/tables/tables-nft}"
  ln -sf xtables-legacy-multi "$ST/usr/sbin/${n/tables/tables-legacy}"
done
cp /etc/protocols /etc/services "$ST/etc/"
echo 'root:x:0:0:root:/root:/bin/sh' > "$ST/etc/passwd"
echo 'root:x:0:' > "$ST/etc/group"
# busybox applets, never over a real tool (busybox's ip has no netns support)
for a in $(busybox --list-full); do
  n=${a##*/}
  [ -e "$ST/usr/bin/$n" ] || [ -e "$ST/usr/sbin/$n" ] || [ -L "$ST/usr/bin/$n" ] || [ -L "$ST/usr/sbin/$n" ] && continue
  ln -s /usr/bin/busybox "$ST/usr/bin/$n"
done

# Kernel modules: the wanted ones and their "depends=" closure, read from each .ko's
# modinfo strings (the host has no kmod). Built-ins need nothing.
declare -A MODPATH=() PICKED=()
while read -r p; do b=${p##*/}; b=${b%.ko*}; MODPATH[${b//-/_}]=$p; done < <(cd "$MODROOT" && find kernel -name '*.ko*')
pick() {
  local m=${1//-/_} d
  [ -n "${PICKED[$m]:-}" ] && return 0
  if [ -z "${MODPATH[$m]:-}" ]; then
    grep -q "/$m.ko" "$MODROOT/modules.builtin" || { log "module $m not found in $KPKG"; exit 1; }
    PICKED[$m]=builtin; return 0
  fi
  PICKED[$m]=${MODPATH[$m]}
  for d in $(tr '\0' '\n' < "$MODROOT/${MODPATH[$m]}" | sed -n 's/^depends=//p' | tr ',' ' '); do pick "$d"; done
}
for m in $LOAD $EXTRA; do pick "$m"; done
SMOD=$ST/usr/lib/modules/$KVER
n=0
for m in "${!PICKED[@]}"; do
  p=${PICKED[$m]}; [ "$p" = builtin ] && continue
  mkdir -p "$SMOD/$(dirname "$p")"; cp "$MODROOT/$p" "$SMOD/$p"
  case "$p" in   # Debian 12 ships plain .ko; newer kernels may compress them
    *.xz) unxz "$SMOD/$p";; *.zst) unzstd -q --rm "$SMOD/$p";; *.gz) gunzip "$SMOD/$p";;
  esac
  n=$((n + 1))
done
cp "$MODROOT"/modules.builtin* "$MODROOT/modules.order" "$SMOD/"
busybox depmod -b "$ST" "$KVER"
echo $LOAD | tr ' ' '\n' > "$ST/etc/kproxy/modules"
echo "$KVER" > "$ST/etc/kproxy/kernel"

(cd "$ST" && find . | busybox cpio -o -H newc 2>/dev/null) > "$DIR/base.cpio.tmp"
mv "$DIR/base.cpio.tmp" "$DIR/base.cpio"
rm -rf "$W"
log "base initramfs built in $(el "$t")s: $n modules, $(du -h "$DIR/base.cpio" | cut -f1)"
touch "$DIR/ok"
