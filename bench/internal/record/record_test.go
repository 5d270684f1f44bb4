package record

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestWriteJSON(t *testing.T) {
	dir := t.TempDir()
	path := Base(filepath.Join(dir, "sub"), "what") + ".json"
	if !strings.HasSuffix(path, "-what.json") {
		t.Fatalf("path %s", path)
	}
	if err := WriteJSON(path, map[string]any{"a": 1}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff("{\n  \"a\": 1\n}\n", string(b)); d != "" {
		t.Errorf("file (-want +got):\n%s", d)
	}
}

func TestCommandLine(t *testing.T) {
	t.Setenv("KPB_TEST_SET", "1")
	got := CommandLine("KPB_TEST_SET", "KPB_TEST_UNSET")
	if want := "KPB_TEST_SET=1 " + strings.Join(os.Args, " "); got != want {
		t.Errorf("CommandLine = %q, want %q", got, want)
	}
}

func TestNice(t *testing.T) {
	if _, err := Nice(); err != nil {
		t.Errorf("Nice: %v", err)
	}
}
