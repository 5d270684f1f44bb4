#!/usr/bin/env bash
# make demo-down: remove the demo sandbox (processes, network namespaces, state) and check
# that nothing is left.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=kpdemo
[[ $(id -u) == 0 ]] || { echo "demo-down: run as root"; exit 1; }
if [[ -x $ROOT/bin/sandbox ]]; then
  "$ROOT/bin/sandbox" down --prefix "$PREFIX"
else
  (cd "$ROOT" && GOTOOLCHAIN=local go run ./e2e/cmd/sandbox down --prefix "$PREFIX")
fi
left_ns=$(ip netns list | awk '{print $1}' | grep "^$PREFIX-" || true)
left_procs=$(pgrep -af -- "$PREFIX" || true)
if [[ -n $left_ns || -n $left_procs || -e /run/kproxy-e2e/$PREFIX ]]; then
  echo "demo-down: LEFT OVER:"
  [[ -z $left_ns ]] || echo "  netns: $left_ns"
  [[ -z $left_procs ]] || echo "  processes: $left_procs"
  [[ ! -e /run/kproxy-e2e/$PREFIX ]] || echo "  /run/kproxy-e2e/$PREFIX"
  exit 1
fi
echo "demo-down: verified: no $PREFIX-* netns, no $PREFIX process, no /run/kproxy-e2e/$PREFIX"
