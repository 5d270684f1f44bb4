#!/usr/bin/env bash
# Removes everything up.sh made, also after a failed or interrupted run, and only that: the
# processes of its pid files, the containers of its own containerds (and their shims), the
# mounts under its state directory (container root file systems, pod netns, kubelet volumes),
# the namespaces $P-fab and $P-n*, the cgroup roots $P-n*, libcni's cache entries of network
# $P-podnet, the root-namespace unreachable route if up.sh added it; restores the sysctls the
# kubelet rewrote. Safe to run twice. Keeps $STATE/log for a look.
set -uo pipefail
. "$(cd "$(dirname "$0")" && pwd)/env.sh"
RUN=$STATE/run
[[ -d $STATE ]] || { log "nothing to remove ($STATE missing)"; exit 0; }
s=$SECONDS
# the nodes an earlier up.sh made, whatever KPC_NODES says now
NODES=$( { for d in "$STATE"/n[0-9]*; do [[ -d $d ]] && echo "${d##*/n}"; done
           ip netns list | awk -v p="$P-n" 'index($1, p) == 1 {print substr($1, length(p) + 1)}'; } | grep -E '^[0-9]+$' | sort -un | paste -sd' ')

stop() { # names...: TERM every process of $RUN/<name>.pid at once, KILL what is left after 5 s
  local n f p pids=() names=()
  for n in "$@"; do
    f=$RUN/$n.pid
    [[ -f $f ]] || continue
    p=$(cat "$f"); rm -f "$f"
    kill "$p" 2>/dev/null && pids+=("$p") && names+=("$n")
  done
  for _ in $(seq 50); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [[ $alive == 0 ]] && return 0
    sleep 0.1
  done
  for n in "${!pids[@]}"; do
    kill -9 "${pids[$n]}" 2>/dev/null && log "${names[$n]} still ran 5 s after SIGTERM: killed"
  done
  return 0
}
nodes() { local i; for i in $NODES; do echo "$1$i"; done; }
# shellcheck disable=SC2046 # one name per word
stop $(nodes proxy) kube-scheduler kube-controller-manager coredns $(nodes kubelet)
for i in $NODES; do
  sock=$STATE/n$i/containerd/containerd.sock c=(ctr -a "$STATE/n$i/containerd/containerd.sock" -n k8s.io)
  if [[ -S $sock ]] && "${c[@]}" version >/dev/null 2>&1; then
    for t in $("${c[@]}" tasks ls -q 2>/dev/null); do "${c[@]}" tasks kill -s KILL "$t" >/dev/null 2>&1; done
    for t in $("${c[@]}" containers ls -q 2>/dev/null); do
      "${c[@]}" tasks rm -f "$t" >/dev/null 2>&1; "${c[@]}" containers rm "$t" >/dev/null 2>&1
    done
  fi
done
# shellcheck disable=SC2046
stop $(nodes containerd) kube-apiserver etcd
for i in $NODES; do
  # shims outlive containerd; ours name our socket on their command line
  for p in $(pgrep -f -- "-address $STATE/n$i/containerd/containerd.sock" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
done
t_proc=$((SECONDS - s))

# mounts under the state directory, deepest first (overlay rootfs, pod netns, kubelet volumes)
awk -v s="$STATE/" 'index($2, s) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
  umount "$m" 2>/dev/null || umount -l "$m"
done
for ns in $(ip netns list | awk -v p="$P-" 'index($1, p) == 1 {print $1}'); do
  case $ns in "$FAB"|"$P"-n[0-9]*) ip netns del "$ns" ;; esac
done
rm -f /var/lib/cni/results/"$P"-podnet-* 2>/dev/null
for i in $NODES; do
  for c in /sys/fs/cgroup/*/"$P-n$i"; do
    [[ -d $c ]] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null
    [[ -d $c ]] && log "could not remove $c"
  done
done
if [[ -f $RUN/root-unreachable-added ]]; then
  ip route del unreachable "$SERVICE_CIDR" 2>/dev/null; rm -f "$RUN/root-unreachable-added"
fi
if [[ -f $RUN/sysctl.saved ]]; then
  { read -r a; read -r b; read -r c; } < "$RUN/sysctl.saved"
  sysctl -qw kernel.panic="$a" kernel.panic_on_oops="$b" vm.overcommit_memory="$c" && rm -f "$RUN/sysctl.saved"
fi
rm -rf "$STATE/etcd" "$STATE"/n[0-9]*/containerd/state "$STATE"/n[0-9]*/runc
log "down in $((SECONDS - s))s (processes and containers ${t_proc}s)"
