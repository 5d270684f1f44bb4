package main

import (
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// result of one spec in one run.
type result string

const (
	pass    result = "pass"
	fail    result = "FAIL"
	skip    result = "skip"
	missing result = "-"
)

// junit is the part of Ginkgo's JUnit report we read.
type junit struct {
	Suites []struct {
		Cases []struct {
			Name    string    `xml:"name,attr"`
			Status  string    `xml:"status,attr"`
			Failure *struct{} `xml:"failure"`
			Error   *struct{} `xml:"error"`
			Skipped *struct {
				Message string `xml:"message,attr"`
			} `xml:"skipped"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

// run is one column: a name and the result of every spec in its file.
type run struct {
	name        string
	results     map[string]result
	skipReasons map[string]string // specs that skipped themselves at run time: why
}

func main() {
	regressed, err := mainErr(os.Args[1:], os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(2)
	}
	if regressed {
		os.Exit(1)
	}
}

func mainErr(args []string, stdout io.Writer) (bool, error) {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	out := fs.String("o", "", "also write the table to this file")
	if err := fs.Parse(args); err != nil {
		return false, err
	}
	if fs.NArg() == 0 {
		return false, errors.New("usage: report [-o FILE] NAME=JUNIT.xml [NAME=JUNIT.xml]")
	}
	var runs []run
	for _, a := range fs.Args() {
		name, file, ok := strings.Cut(a, "=")
		if !ok {
			return false, fmt.Errorf("%q: want NAME=FILE", a)
		}
		r, err := readRun(name, file)
		if err != nil {
			return false, err
		}
		runs = append(runs, r)
	}
	table, regressed := render(runs)
	if _, err := io.WriteString(stdout, table); err != nil {
		return false, err
	}
	if *out != "" {
		if err := os.WriteFile(*out, []byte(table), 0o644); err != nil {
			return false, err
		}
	}
	return regressed, nil
}

// readRun parses one JUnit file. A missing file is an empty run (the run did not happen).
func readRun(name, file string) (run, error) {
	r := run{name: name, results: map[string]result{}, skipReasons: map[string]string{}}
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, err
	}
	var j junit
	if err := xml.Unmarshal(b, &j); err != nil {
		return r, fmt.Errorf("%s: %w", file, err)
	}
	for _, s := range j.Suites {
		for _, c := range s.Cases {
			// Specs are "[It] <text>"; suite nodes ([SynchronizedBeforeSuite], ...) are not.
			name, ok := strings.CutPrefix(c.Name, "[It] ")
			if !ok {
				continue
			}
			res := classify(c.Status, c.Failure != nil || c.Error != nil, c.Skipped != nil)
			if res == skip {
				// Ginkgo writes message="skipped" for specs the focus or skip flags left out,
				// and "skipped - <reason>" for specs that skipped themselves at run time.
				reason := ""
				if c.Skipped != nil {
					reason, _ = strings.CutPrefix(c.Skipped.Message, "skipped - ")
				}
				if reason == "" || reason == "skipped" {
					continue
				}
				r.skipReasons[name] = reason
			}
			r.results[name] = res
		}
	}
	return r, nil
}

// classify maps a JUnit test case to a result. Ginkgo writes status="passed|failed|skipped|
// pending|panicked|interrupted|timedout|aborted"; older writers only the child elements.
func classify(status string, failed, skipped bool) result {
	switch status {
	case "passed":
		return pass
	case "skipped", "pending":
		return skip
	case "":
		switch {
		case failed:
			return fail
		case skipped:
			return skip
		default:
			return pass
		}
	default:
		return fail
	}
}

// render prints the table and reports whether the first run regressed against the others.
func render(runs []run) (string, bool) {
	specs := map[string]bool{}
	for _, r := range runs {
		for name, res := range r.results {
			if res == pass || res == fail || res == skip {
				specs[name] = true
			}
		}
	}
	names := make([]string, 0, len(specs))
	for n := range specs {
		names = append(names, n)
	}
	sort.Strings(names)

	var b strings.Builder
	b.WriteString("| spec |")
	sep := "| --- |"
	for _, r := range runs {
		b.WriteString(" " + r.name + " |")
		sep += " --- |"
	}
	b.WriteString("\n" + sep + "\n")
	var regressions []string
	for _, n := range names {
		b.WriteString("| " + strings.ReplaceAll(n, "|", `\|`) + " |")
		for _, r := range runs {
			b.WriteString(" " + string(get(r, n)) + " |")
		}
		b.WriteString("\n")
		if regressedOn(runs, n) {
			regressions = append(regressions, n)
		}
	}
	b.WriteString("\n")
	for _, r := range runs {
		c := map[result]int{}
		for _, n := range names {
			c[get(r, n)]++
		}
		notRun := ""
		if c[missing] > 0 {
			notRun = fmt.Sprintf(" (%d not run)", c[missing])
		}
		fmt.Fprintf(&b, "%s: %d passed, %d failed, %d skipped%s\n", r.name, c[pass], c[fail], c[skip], notRun)
	}
	var skipped []string
	for _, n := range names {
		for _, r := range runs {
			if why, ok := r.skipReasons[n]; ok {
				skipped = append(skipped, fmt.Sprintf("- %s (%s: %s)\n", n, r.name, why))
				break
			}
		}
	}
	if len(skipped) > 0 {
		b.WriteString("\nskipped at run time:\n" + strings.Join(skipped, ""))
	}
	if len(regressions) > 0 && len(runs) > 0 {
		if len(runs) == 1 {
			fmt.Fprintf(&b, "\n%s failed %d specs:\n", runs[0].name, len(regressions))
		} else {
			fmt.Fprintf(&b, "\n%s failed %d specs that the others passed:\n", runs[0].name, len(regressions))
		}
		for _, n := range regressions {
			b.WriteString("- " + n + "\n")
		}
	}
	return b.String(), len(regressions) > 0
}

func get(r run, spec string) result {
	if res, ok := r.results[spec]; ok {
		return res
	}
	return missing
}

// regressedOn: the first run failed the spec and every other run passed it.
func regressedOn(runs []run, spec string) bool {
	if len(runs) == 0 || get(runs[0], spec) != fail {
		return false
	}
	for _, r := range runs[1:] {
		if get(r, spec) != pass {
			return false
		}
	}
	return true
}
