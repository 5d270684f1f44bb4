// Command report reads the JUnit files of conformance runs (one per proxy) and prints one
// table: spec | result per run, plus the counts, in Markdown.
//
//	report [-o table.md] kproxy=results/kproxy/junit_01.xml kube-proxy=results/kube-proxy/junit_01.xml
//
// A spec is listed when it ran (passed or failed) or skipped itself at run time (a Skipf, with
// its reason listed under the table) in at least one run; results are pass, FAIL, skip, or "-"
// (left out of that run by its focus and skip flags, or no such file). The exit code is
// 1 when the first run failed a spec that every other run passed (or, with a single run, when it
// failed any spec), 0 otherwise: kproxy must pass every spec upstream kube-proxy passes here.
package main
