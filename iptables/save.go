package iptables

import (
	"fmt"
	"strings"
	"unsafe"
)

// ParseSave reads iptables-save output for one table and returns each chain's rules as
// iptables-save printed them (the text after "-A CHAIN "), in order. Every declared chain is
// in the map, empty ones with no rules. Output without the table gives an empty map.
//
// The rules are substrings of data, not copies (at 10,000 services the nat table's output is
// 18 MB, which a copy would double while the proxier compares): the caller hands data over
// and must not change it afterwards.
func ParseSave(data []byte, table Table) (map[Chain][]string, error) {
	chains := map[Chain][]string{}
	in := false
	text := unsafe.String(unsafe.SliceData(data), len(data))
	for n := 1; text != ""; n++ {
		var line string
		line, text, _ = strings.Cut(text, "\n")
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "*"):
			in = Table(line[1:]) == table
		case !in:
		case line == "COMMIT":
			in = false
		case strings.HasPrefix(line, ":"):
			name, _, _ := strings.Cut(line[1:], " ")
			if _, ok := chains[Chain(name)]; !ok {
				chains[Chain(name)] = nil
			}
		case strings.HasPrefix(line, "-A "):
			name, rule, _ := strings.Cut(line[len("-A "):], " ")
			chains[Chain(name)] = append(chains[Chain(name)], rule)
		default:
			return nil, fmt.Errorf("iptables-save output line %d: unexpected %q", n, line)
		}
	}
	return chains, nil
}
