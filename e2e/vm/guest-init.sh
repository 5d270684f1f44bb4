#!/bin/busybox sh
# /init (PID 1) of the IPVS test VM, packed by run-test.sh. Mounts the basics, brings
# lo up, loads the modules listed in /etc/kproxy/modules, runs /kproxy/<name in
# /kproxy/cmd> with the arguments in /kproxy/args (one per line) and the environment in /kproxy/env
# (KEY=VALUE per line), prints "KPROXY-VM-RESULT exit=<code>" and powers off.
#
# Pitfalls this avoids (each cost a failed run in the recipe):
#  - Debian's busybox sh runs its own applets before $PATH, and busybox ip has no netns:
#    iproute2 is called by its full path.
#  - IPVS refuses real servers (EINVAL) in a namespace whose lo is down: lo goes up
#    before anything else. Tests must do the same in the namespaces they create.
#  - busybox 1.35 `wget -T` segfaults: use `timeout N wget`.
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /var /root
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
ln -sf /run /var/run
mkdir -p /run/netns
uptime_s() { cut -d' ' -f1 /proc/uptime; }
echo "KPROXY-VM-T init uptime=$(uptime_s) kernel=$(uname -r)"

finish() {
  echo "KPROXY-VM-T end uptime=$(uptime_s)"
  echo "KPROXY-VM-RESULT exit=$1"
  sync
  poweroff -f
  sleep 5; echo o > /proc/sysrq-trigger   # (if poweroff did not)
}

/usr/bin/ip link set lo up
hostname kproxy-vm

failed=""
for m in $(cat /etc/kproxy/modules); do
  modprobe "$m" 2>/dev/null || failed="$failed $m"
done
[ -z "$failed" ] || echo "KPROXY-VM-WARN modprobe failed:$failed"
[ -e /proc/net/ip_vs ] || echo "KPROXY-VM-WARN no /proc/net/ip_vs after modprobe ip_vs"
echo "KPROXY-VM-T modules uptime=$(uptime_s)"

# run-test.sh -n: one virtio NIC on qemu's user network (restrict=on). virtio_net does not
# depend on virtio_pci: without it no eth0 appears. No default route, no DHCP: the
# guestfwd address 192.0.2.100 is on-link and slirp answers its ARP.
if grep -q 'kproxy.net=1' /proc/cmdline; then
  modprobe virtio_pci; modprobe virtio_net
  i=0
  while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  if [ -e /sys/class/net/eth0 ]; then
    /usr/bin/ip link set eth0 up && /usr/bin/ip addr add 192.0.2.15/24 dev eth0 \
      || echo "KPROXY-VM-WARN eth0 setup failed"
    echo "KPROXY-VM-T net uptime=$(uptime_s) eth0=192.0.2.15/24"
  else
    echo "KPROXY-VM-WARN no eth0 after modprobe virtio_pci virtio_net"
  fi
fi

export KPROXY_IN_VM=1
while IFS= read -r kv; do [ -n "$kv" ] && export "$kv"; done < /kproxy/env
set --
while IFS= read -r a; do set -- "$@" "$a"; done < /kproxy/args
cd /kproxy
"/kproxy/$(cat /kproxy/cmd)" "$@"
rc=$?
if grep -q 'kproxy.shell=1' /proc/cmdline; then   # VM_SHELL=1
  echo "KPROXY-VM: binary exited $rc; shell (poweroff -f or Ctrl-A x to end)"
  setsid cttyhack sh
fi
finish $rc
