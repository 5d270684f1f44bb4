package iptables

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// nftaGenID is NFTA_GEN_ID, the attribute of NFT_MSG_NEWGEN that carries the generation.
const nftaGenID = 1

// Generation returns the nf_tables generation of the Runner's network namespace: a counter
// the kernel increments on every committed change of any nf_tables ruleset there, by
// iptables-nft, nft or anyone else. Reading it is one netlink request, so the proxier can tell
// that nothing changed in the kernel without listing the tables. ok is false when the
// installed iptables is the legacy backend, whose changes do not move the counter.
func (r *Runner) Generation() (gen uint32, ok bool, err error) {
	if !r.nftBackend() {
		return 0, false, nil
	}
	req := nl.NewNetlinkRequest(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETGEN, 0)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: unix.AF_UNSPEC, Version: unix.NFNETLINK_V0})
	msgs, err := r.nftRequest(req)
	if err != nil {
		return 0, false, fmt.Errorf("read the nf_tables generation: %w", err)
	}
	for _, m := range msgs {
		if m.Header.Type == unix.NLMSG_ERROR || len(m.Data) < nl.SizeofNfgenmsg {
			continue
		}
		attrs, err := nl.ParseRouteAttr(m.Data[nl.SizeofNfgenmsg:])
		if err != nil {
			return 0, false, fmt.Errorf("parse the nf_tables generation: %w", err)
		}
		for _, a := range attrs {
			if a.Attr.Type&^unix.NLA_F_NESTED == nftaGenID && len(a.Value) == 4 {
				return binary.BigEndian.Uint32(a.Value), true, nil
			}
		}
	}
	return 0, false, errors.New("read the nf_tables generation: no NFTA_GEN_ID in the answer")
}

// nftaChainTable and nftaChainName are NFTA_CHAIN_TABLE and NFTA_CHAIN_NAME.
const (
	nftaChainTable = 1
	nftaChainName  = 3
)

// HasChain reports whether the table holds the chain. With iptables-nft it asks the kernel
// for that one chain (one netlink request, however large the table); with iptables-legacy it
// reads the table with iptables-save.
func (r *Runner) HasChain(ctx context.Context, table Table, chain Chain) (bool, error) {
	if !r.nftBackend() {
		data, err := r.Save(ctx, table)
		if err != nil {
			return false, err
		}
		chains, err := ParseSave(data, table)
		if err != nil {
			return false, err
		}
		_, ok := chains[chain]
		return ok, nil
	}
	family := unix.NFPROTO_IPV4
	if r.opts.IPv6 {
		family = unix.NFPROTO_IPV6
	}
	req := nl.NewNetlinkRequest(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETCHAIN, 0)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: uint8(family), Version: unix.NFNETLINK_V0})
	req.AddData(nl.NewRtAttr(nftaChainTable, nl.ZeroTerminated(string(table))))
	req.AddData(nl.NewRtAttr(nftaChainName, nl.ZeroTerminated(string(chain))))
	msgs, err := r.nftRequest(req)
	if errors.Is(err, unix.ENOENT) {
		return false, nil // no such table or chain
	}
	if err != nil {
		return false, fmt.Errorf("read chain %s of table %s: %w", chain, table, err)
	}
	for _, m := range msgs {
		if m.Header.Type == unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWCHAIN {
			return true, nil
		}
	}
	return false, fmt.Errorf("read chain %s of table %s: no answer", chain, table)
}

// nftRequest sends one nf_tables request in the Runner's network namespace and returns the
// answer's messages; a netlink error answer is returned as its syscall.Errno.
func (r *Runner) nftRequest(req *nl.NetlinkRequest) ([]syscall.NetlinkMessage, error) {
	s, err := r.netfilterSocket()
	if err != nil {
		return nil, fmt.Errorf("open a netfilter netlink socket: %w", err)
	}
	defer s.Close()
	if err := s.SetReceiveTimeout(&unix.Timeval{Sec: 2}); err != nil {
		return nil, err
	}
	if err := s.Send(req); err != nil {
		return nil, err
	}
	msgs, _, err := s.Receive()
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		if m.Header.Type == unix.NLMSG_ERROR && len(m.Data) >= 4 {
			if errno := int32(binary.NativeEndian.Uint32(m.Data[:4])); errno != 0 {
				return nil, syscall.Errno(-errno)
			}
		}
	}
	return msgs, nil
}

// netfilterSocket opens a NETLINK_NETFILTER socket in the Runner's network namespace.
func (r *Runner) netfilterSocket() (*nl.NetlinkSocket, error) {
	if r.opts.NetNSPath == "" {
		return nl.GetNetlinkSocketAt(netns.None(), netns.None(), unix.NETLINK_NETFILTER)
	}
	ns, err := netns.GetFromPath(r.opts.NetNSPath)
	if err != nil {
		return nil, err
	}
	defer func() { _ = ns.Close() }()
	cur, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer func() { _ = cur.Close() }()
	return nl.GetNetlinkSocketAt(ns, cur, unix.NETLINK_NETFILTER)
}

// nftBackend reports whether the iptables tools are iptables-nft ("iptables v1.8.9
// (nf_tables)"); asked once per Runner.
func (r *Runner) nftBackend() bool {
	r.backendOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, r.tool("tables"), "--version").Output()
		r.nft = err == nil && strings.Contains(string(out), "nf_tables")
	})
	return r.nft
}
