package p2p

import (
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// ReachableIPv4 is the first non-loopback, specified IPv4 among addrs (a
// host's listen addresses), else 127.0.0.1: the IP a Ray node binds to when
// the operator names none, so that other members reach it.
func ReachableIPv4(addrs []ma.Multiaddr) string {
	for _, a := range addrs {
		ip, err := manet.ToIP(a)
		if err == nil && ip.To4() != nil && !ip.IsLoopback() && !ip.IsUnspecified() {
			return ip.String()
		}
	}
	return "127.0.0.1"
}

// OnLAN reports whether this node's connection to p is to a private or
// loopback address (the planner's Observation.LAN).
func (n *Node) OnLAN(p peer.ID) bool {
	for _, c := range n.host.Network().ConnsToPeer(p) {
		a := c.RemoteMultiaddr()
		if manet.IsPrivateAddr(a) || manet.IsIPLoopback(a) {
			return true
		}
	}
	return false
}
