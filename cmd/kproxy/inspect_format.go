package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// writeText prints reports for a person: per service port, the API's view (addresses,
// policies, endpoints with their conditions and use), where the kernel sends the traffic,
// the differences (or "kernel matches"), and with -v the kernel's objects.
func writeText(w io.Writer, reps []inspectReport, verbose bool) error {
	var b strings.Builder
	for _, rep := range reps {
		fmt.Fprintf(&b, "node %s, %s mode, %s: %d service ports\n", rep.Node, rep.Mode, rep.Family, len(rep.Ports))
		for _, p := range rep.Ports {
			writePortText(&b, p, verbose)
		}
		if len(rep.Problems) > 0 {
			fmt.Fprintf(&b, "\nbad input kproxy skips (logged and reported as events):\n")
			for _, pr := range rep.Problems {
				fmt.Fprintf(&b, "  %s %s: %s: %s\n", pr.Kind, pr.Object, pr.Reason, pr.Message)
			}
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writePortText(b *strings.Builder, p portReport, verbose bool) {
	fmt.Fprintf(b, "\n%s  %s %s:%d", p.Name, p.Protocol, p.ClusterIP, p.Port)
	if p.NodePort != 0 {
		fmt.Fprintf(b, "  nodePort %d", p.NodePort)
	}
	b.WriteString("\n")
	if len(p.ExternalIPs) > 0 {
		fmt.Fprintf(b, "  externalIPs %s\n", strings.Join(p.ExternalIPs, ", "))
	}
	if len(p.LoadBalancerIPs) > 0 {
		fmt.Fprintf(b, "  loadBalancerIPs %s\n", strings.Join(p.LoadBalancerIPs, ", "))
	}
	fmt.Fprintf(b, "  internalTrafficPolicy %s", p.InternalTrafficPolicy)
	if p.ExternalTrafficPolicy != "" {
		fmt.Fprintf(b, ", externalTrafficPolicy %s", p.ExternalTrafficPolicy)
	}
	fmt.Fprintf(b, ", sessionAffinity %s", p.SessionAffinity)
	if p.TrafficDistribution != "" {
		fmt.Fprintf(b, ", trafficDistribution %s", p.TrafficDistribution)
	}
	b.WriteString("\n")
	fmt.Fprintf(b, "  endpoints (%d):\n", len(p.Endpoints))
	for _, ep := range p.Endpoints {
		var conds []string
		for _, c := range []struct {
			on   bool
			name string
		}{{ep.Ready, "ready"}, {ep.Serving, "serving"}, {ep.Terminating, "terminating"}} {
			if c.on {
				conds = append(conds, c.name)
			}
		}
		if len(conds) == 0 {
			conds = []string{"not ready"}
		}
		use := "unused"
		switch {
		case ep.Internal && ep.External:
			use = "used"
		case ep.Internal:
			use = "used by ClusterIP traffic"
		case ep.External:
			use = "used by external traffic"
		}
		where := ep.Node
		if ep.Zone != "" {
			where += " " + ep.Zone
		}
		fmt.Fprintf(b, "    %-22s %-28s %-20s %s\n", ep.Address, strings.Join(conds, ","), where, use)
	}
	if len(p.Targets) > 0 {
		b.WriteString("  kernel sends it to:\n")
		for _, t := range p.Targets {
			fmt.Fprintf(b, "    %s\n", t)
		}
	} else {
		b.WriteString("  kernel sends it to no endpoint\n")
	}
	for _, t := range p.Traces {
		fmt.Fprintf(b, "  trace to %s:", t.Destination)
		if t.Error != "" {
			fmt.Fprintf(b, " %s\n", t.Error)
			continue
		}
		b.WriteString("\n")
		for _, o := range t.Outcomes {
			fmt.Fprintf(b, "    %s\n", o)
		}
	}
	if len(p.Diff) == 0 {
		fmt.Fprintf(b, "  kernel matches the expected state: %d objects, %d lines\n", len(p.Kernel), countLines(p.Kernel))
	} else {
		fmt.Fprintf(b, "  DIFFERENCES (expected vs kernel): %d\n", len(p.Diff))
		for _, d := range p.Diff {
			fmt.Fprintf(b, "    %s\n", d)
		}
	}
	if verbose {
		b.WriteString("  kernel:\n")
		for _, s := range p.Kernel {
			fmt.Fprintf(b, "    %s\n", s.Name)
			for _, l := range s.Lines {
				fmt.Fprintf(b, "      %s\n", l)
			}
		}
	}
}

func countLines(ss []section) int {
	n := 0
	for _, s := range ss {
		n += len(s.Lines)
	}
	return n
}

// writeJSON prints the reports as one JSON document ({"reports": [...]}) for scripts.
func writeJSON(w io.Writer, reps []inspectReport) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		Reports []inspectReport `json:"reports"`
	}{reps})
}
