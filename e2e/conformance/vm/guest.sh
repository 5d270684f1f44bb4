#!/usr/bin/env bash
# Runs inside the conformance VM (guest-init.sh chroots into the overlay root and runs this):
# mounts what a node needs (tmpfs /run, /tmp, the tier's state directory; cgroup v1 hierarchies
# like the host's), then runs the tier's own scripts unchanged: up.sh (control plane, nodes),
# and for each proxy proxy.sh + run.sh, with results in /kpci-out (the host's run directory).
# Settings come from /kpci-out/env (written by vm.sh): KPCI_REPO, KPCI_MODE, KPCI_SET,
# KPCI_PROXIES, KPC_* of env.sh, KPROXY_CACHE, KPROXY_BIN, KPC_BUILT.
# Step times go to the console and /kpci-out/timings as "KPCI-VM-T <step> uptime=<s>".
set -uo pipefail
. /kpci-out/env
OUT=/kpci-out
T() { echo "KPCI-VM-T $1 uptime=$(cut -d' ' -f1 /proc/uptime)" | tee -a "$OUT/timings"; }
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/netns /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
mount -t tmpfs tmpfs /dev/shm
ln -sfn /run /var/run 2>/dev/null || true
# cgroup v1, one hierarchy per controller (as on the host, where up.sh's cgroup roots were made)
mount -t tmpfs -o mode=0755 cgroup /sys/fs/cgroup
for c in cpuset cpu,cpuacct memory devices freezer blkio pids hugetlb net_cls,net_prio perf_event; do
  mkdir -p "/sys/fs/cgroup/$c"
  mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" || echo "KPCI-VM-WARN cgroup $c not mounted"
done
ln -s cpu,cpuacct /sys/fs/cgroup/cpu; ln -s cpu,cpuacct /sys/fs/cgroup/cpuacct
ln -s net_cls,net_prio /sys/fs/cgroup/net_cls; ln -s net_cls,net_prio /sys/fs/cgroup/net_prio
# containerd's overlay snapshots cannot live on the overlay root: the state directory is a tmpfs
mkdir -p /var/lib/kproxy-conformance
mount -t tmpfs -o mode=0755 tmpfs /var/lib/kproxy-conformance
hostname kpci-vm
export KPROXY_CACHE KPROXY_BIN KPC_BUILT KPC_PREFIX KPC_NODES KPC_FOCUS KPC_SKIP KPC_E2E_ARGS KPC_IMAGES
[[ -e /proc/net/ip_vs ]] || echo "KPCI-VM-WARN no /proc/net/ip_vs"
T guest-ready

C=$KPCI_REPO/e2e/conformance
rc=0
if "$C/up.sh" --proxy none 2>&1 | tee "$OUT/up.log"; then
  T up
  # KPCI_HOOK (vm.sh's environment): a script run here once the cluster is up, for a look inside
  if [[ -n ${KPCI_HOOK:-} ]]; then "$KPCI_HOOK" > "$OUT/hook.log" 2>&1; T hook; fi
  for p in $KPCI_PROXIES; do
    if "$C/proxy.sh" "$p" "$KPCI_MODE" 2>&1 | tee -a "$OUT/proxy.log"; then
      T "proxy-$p"
      "$C/run.sh" "$KPCI_SET" "$OUT/$p" 2>&1 | tee -a "$OUT/run.log"
      T "run-$p"
    else
      rc=1; T "proxy-$p-failed"
    fi
  done
else
  rc=1; T up-failed
fi
mkdir -p "$OUT/logs"
cp -r "/var/lib/kproxy-conformance/${KPC_PREFIX}/log/." "$OUT/logs/" 2>/dev/null
# the VM powers off after this: no teardown needed (nothing of it exists outside the guest)
exit $rc
