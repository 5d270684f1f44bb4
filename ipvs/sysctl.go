package ipvs

// Sysctl is one kernel setting the IPVS mode needs, as a path under /proc/sys.
type Sysctl struct {
	Path  string
	Value string
}

// RequiredSysctls lists the sysctls upstream's IPVS proxier sets at start, for the daemon
// to write in the node's namespace (with a clear error when one cannot be written):
// vs/conntrack=1 (iptables masquerade of IPVS traffic), expire_nodest_conn=1,
// expire_quiescent_template=1, ip_forward=1, and with StrictARP arp_ignore=1 and
// arp_announce=2. conn_reuse_mode depends on the kernel version (set to 0 only on kernels
// 4.1 to 5.8, left alone from 5.9); connReuseZero says whether to set it.
func RequiredSysctls(cfg Config, connReuseZero bool) []Sysctl {
	out := []Sysctl{
		{"net/ipv4/vs/conntrack", "1"},
		{"net/ipv4/vs/expire_nodest_conn", "1"},
		{"net/ipv4/vs/expire_quiescent_template", "1"},
		{"net/ipv4/ip_forward", "1"},
	}
	if connReuseZero {
		out = append(out, Sysctl{"net/ipv4/vs/conn_reuse_mode", "0"})
	}
	if cfg.StrictARP {
		out = append(out, Sysctl{"net/ipv4/conf/all/arp_ignore", "1"}, Sysctl{"net/ipv4/conf/all/arp_announce", "2"})
	}
	return out
}
