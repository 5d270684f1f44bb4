#!/bin/busybox sh
# /init (PID 1) of the conformance VM, packed by vm.sh on top of e2e/vm's base initramfs (busybox,
# the IPVS/netfilter/bridge modules and their list in /etc/kproxy/modules). It loads those modules
# and the ones vm.sh adds under /kpci/ko (9p over virtio for the host's files, overlay for
# containerd), then builds the guest's root file system and hands over to guest.sh in it:
#
#   /               overlay: lower = the host's / over 9p, read-only (tag hostroot); upper = tmpfs
#                   (so the host's Debian userland runs unchanged: containerd, runc, bash,
#                   iptables, ...; nothing the guest writes reaches the host)
#   /kpci-out       the only writable host directory (tag kpciout): results, logs, timings
#   /usr/lib/modules/<kver>   the guest kernel's modules (from this initramfs)
#
# Then switch_root to /newroot, where a bash (PID 1, reaping orphans) runs guest.sh, prints
# "KPCI-VM-RESULT exit=<code>" and powers off.
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /newroot /mnt/lower /mnt/upper
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
up() { cut -d' ' -f1 /proc/uptime; }
echo "KPCI-VM-T init uptime=$(up) kernel=$(uname -r)"
finish() {
  echo "KPCI-VM-T end uptime=$(up)"
  echo "KPCI-VM-RESULT exit=$1"
  sync
  poweroff -f
  sleep 5; echo o > /proc/sysrq-trigger
}
/usr/bin/ip link set lo up
failed=""
for m in $(cat /etc/kproxy/modules); do modprobe "$m" 2>/dev/null || failed="$failed $m"; done
modprobe virtio_pci 2>/dev/null || failed="$failed virtio_pci"
for m in $(cat /kpci/ko/order); do insmod "/kpci/ko/$m.ko" 2>/dev/null || grep -q "^$m " /proc/modules || failed="$failed $m"; done
[ -z "$failed" ] || echo "KPCI-VM-WARN modules not loaded:$failed"
echo "KPCI-VM-T modules uptime=$(up)"

o=trans=virtio,version=9p2000.L,msize=262144
mount -t 9p -o "$o,ro,cache=loose" hostroot /mnt/lower || { echo "KPCI-VM-WARN 9p hostroot mount failed"; finish 125; }
mount -t tmpfs -o mode=0755 tmpfs /mnt/upper && mkdir -p /mnt/upper/u /mnt/upper/w
mount -t overlay overlay -o lowerdir=/mnt/lower,upperdir=/mnt/upper/u,workdir=/mnt/upper/w /newroot \
  || { echo "KPCI-VM-WARN overlay root failed"; finish 125; }
mkdir -p /newroot/kpci-out
mount -t 9p -o "$o,rw" kpciout /newroot/kpci-out || { echo "KPCI-VM-WARN 9p kpciout mount failed"; finish 125; }
KVER=$(uname -r)
mkdir -p "/newroot/usr/lib/modules/$KVER"
cp -a "/usr/lib/modules/$KVER/." "/newroot/usr/lib/modules/$KVER/"
mkdir -p /newroot/proc /newroot/sys /newroot/dev
mount -t proc proc /newroot/proc; mount -t sysfs sysfs /newroot/sys; mount -t devtmpfs devtmpfs /newroot/dev
echo "KPCI-VM-T root uptime=$(up)"
# switch_root, not chroot: the overlay must become the mount namespace's root. From a chroot,
# `runc exec` (kubectl exec) lands in the namespace's root, this initramfs, not in the container.
umount /proc /sys /dev 2>/dev/null
exec switch_root /newroot /bin/bash -c '
  . /kpci-out/env && /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root TERM=dumb /bin/bash "$KPCI_REPO/e2e/conformance/vm/guest.sh"
  rc=$?
  echo "KPCI-VM-T end uptime=$(cut -d" " -f1 /proc/uptime)"
  echo "KPCI-VM-RESULT exit=$rc"
  sync
  echo o > /proc/sysrq-trigger
  sleep 30'
