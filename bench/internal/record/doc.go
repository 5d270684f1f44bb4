// Package record records where and how a benchmark ran, for its results file: the command
// line, the machine (CPUs, kernel, CPU model, load average, nice), the tools' versions, the
// repository's commit; and writes the file, <dir>/<UTC date>-<what>.json.
//
// Each command builds its own results type (their JSON field names differ) and adds its own
// machine fields to Machine's map; this package holds only what they share. It reads /proc
// and runs the tools' --version: call it from a command's run, not from pure code. It
// must not import the sandbox or the proxies' packages.
package record
