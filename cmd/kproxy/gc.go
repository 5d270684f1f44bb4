package main

import (
	"runtime/debug"
	"strconv"
)

// defaultGCPercent is kproxy's garbage collector target when the GOGC environment variable
// does not set one: a collection once the heap has grown by half of what was live after the
// last one, where Go's default waits until it has doubled. The proxy's resident size is its
// live heap (informer objects, the tracker, the backend's known state: about 120 MB at 10,000
// services in iptables mode) plus that growth, so at 10,000 services Go's default made its
// peak resident size twice to three times the live heap. Measured at 10,000 services
// (bench/results/2026-12-07-iptables-gogc50-n10000.md): 50 gave 0.70-0.86 × the default's
// peak resident size in every phase for 0.95-1.11 × the CPU. kproxy runs on every node, where
// memory is what is reserved for it; its CPU is a fraction of kube-proxy's.
const defaultGCPercent = 50

// setGCPercent applies defaultGCPercent unless the environment sets GOGC (the operator's
// choice wins, "off" included). It returns the target in force and whether kproxy set it.
func setGCPercent(getenv func(string) string) (percent string, set bool) {
	if v := getenv("GOGC"); v != "" {
		return v, false
	}
	debug.SetGCPercent(defaultGCPercent)
	return strconv.Itoa(defaultGCPercent), true
}
