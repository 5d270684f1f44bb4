package netnsutil

import (
	"crypto/rand"
	"encoding/hex"
	"os/exec"
)

// T is the part of testing.TB that Create uses; the package does not import testing, so
// production code may call Do.
type T interface {
	Helper()
	Cleanup(func())
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// Suffix returns a random hex suffix for namespace names, so that runs side by side never
// collide.
func Suffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Create makes the named network namespace with lo up for a test, deletes it when the test
// ends, and returns its path. Equivalent to: `ip netns add NAME; ip -n NAME link set lo up`.
func Create(t T, name string) string {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s link set lo up: %v: %s", name, err, out)
	}
	return Path(name)
}

// CreateTemp is Create with the name prefix-<random>; it returns the name and the path.
func CreateTemp(t T, prefix string) (name, path string) {
	t.Helper()
	name = prefix + "-" + Suffix()
	return name, Create(t, name)
}
