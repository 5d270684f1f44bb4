package iptables

import (
	"errors"
	"strings"
)

// splitArgs splits one line of restore text into arguments the way iptables-restore does:
// blanks separate arguments, double quotes group them, and inside double quotes a backslash
// escapes a double quote, a single quote or a backslash.
func splitArgs(line string) ([]string, error) {
	var (
		args    []string
		cur     strings.Builder
		inArg   bool
		inQuote bool
	)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case inQuote && c == '\\' && i+1 < len(line) && strings.IndexByte(`"\\'`, line[i+1]) >= 0:
			i++
			cur.WriteByte(line[i])
		case inQuote && c == '"':
			inQuote = false
		case inQuote:
			cur.WriteByte(c)
		case c == '"':
			inQuote, inArg = true, true
		case c == ' ' || c == '\t':
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	if inQuote {
		return nil, errors.New("unterminated quoted argument")
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args, nil
}

// saveQuote formats a string value the way iptables-save does (libxtables'
// xtables_save_string): bare when it is only letters, digits, '_' and '-', otherwise in double
// quotes with '"', '\' and '\” escaped by a backslash.
func saveQuote(s string) string {
	if s != "" && strings.IndexFunc(s, needsQuote) < 0 {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range s {
		if c == '"' || c == '\\' || c == '\'' {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	b.WriteByte('"')
	return b.String()
}

// needsQuote reports whether iptables-save quotes a value holding c.
func needsQuote(c rune) bool {
	plain := c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
	return !plain
}
