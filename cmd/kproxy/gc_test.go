package main

import (
	"runtime/debug"
	"testing"
)

// kproxy sets its own GC target only when GOGC is not in the environment.
func TestSetGCPercent(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))

	debug.SetGCPercent(100)
	got, set := setGCPercent(func(string) string { return "" })
	if now := debug.SetGCPercent(100); now != defaultGCPercent || got != "50" || !set {
		t.Errorf("without GOGC: target %d, reported %q set=%v; want %d, \"50\", true", now, got, set, defaultGCPercent)
	}

	debug.SetGCPercent(100) // as the runtime set it from GOGC=100
	got, set = setGCPercent(func(k string) string {
		if k == "GOGC" {
			return "100"
		}
		return ""
	})
	if now := debug.SetGCPercent(100); now != 100 || got != "100" || set {
		t.Errorf("with GOGC=100: target %d, reported %q set=%v; want 100 left alone", now, got, set)
	}
}
