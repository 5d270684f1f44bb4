package ipvs

import (
	"fmt"
	"strings"
)

// Dump prints the plan canonically: virtual servers as `ipvsadm -Ln` lists them (with the
// service port each belongs to), the kube-ipvs0 addresses, the non-empty sets as
// `ipset list` entries, then the iptables-restore text. Tests compare it with golden files.
func (p Plan) Dump() string {
	var b strings.Builder
	b.WriteString("# virtual servers\n")
	for _, vs := range p.VirtualServers {
		fmt.Fprintf(&b, "%s  # %s\n", vs.VirtualServer, vs.Service)
		for _, rs := range vs.RealServers {
			fmt.Fprintf(&b, "  -> %s\n", rs)
		}
	}
	if p.Conflicts > 0 {
		fmt.Fprintf(&b, "# conflicts: %d\n", p.Conflicts)
	}
	b.WriteString("# " + DummyDevice + "\n")
	for _, ip := range p.Bind {
		b.WriteString(ip.String() + "\n")
	}
	b.WriteString("# ipsets\n")
	for _, st := range p.Sets {
		if len(st.Entries) == 0 {
			continue
		}
		b.WriteString(st.Set.Name + "\n")
		for _, e := range st.Entries {
			b.WriteString("  " + e.String() + "\n")
		}
	}
	b.WriteString("# iptables-restore\n")
	b.Write(RenderRestore(p.Chains))
	return b.String()
}
