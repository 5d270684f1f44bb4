package record

import (
	"encoding/json"
	"os"
	"path/filepath"
	"time"
)

// Base is a results file's path without its extension: <dir>/<UTC date>-<what>. The JSON
// goes to Base+".json"; commands put their Markdown or plot beside it.
func Base(dir, what string) string {
	return filepath.Join(dir, time.Now().UTC().Format("2006-01-02")+"-"+what)
}

// WriteJSON writes v, indented, with a final newline, to path, making its directory.
func WriteJSON(path string, v any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Header is the start of a proxy benchmark's results file: when, the command, the machine,
// the configuration and the versions. Commands embed it first in their results type, which
// keeps these fields first in the JSON.
type Header struct {
	Date     string            `json:"date"`
	Command  string            `json:"command"`
	Machine  map[string]any    `json:"machine"`
	Config   map[string]any    `json:"config"`
	Versions map[string]string `json:"versions"`
}

// NewHeader is a Header dated now (UTC, RFC 3339) for the command as run (CommandLine of
// envKeys).
func NewHeader(machine, config map[string]any, versions map[string]string, envKeys ...string) Header {
	return Header{Date: time.Now().UTC().Format(time.RFC3339), Command: CommandLine(envKeys...),
		Machine: machine, Config: config, Versions: versions}
}
