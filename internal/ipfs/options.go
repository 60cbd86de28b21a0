package ipfs

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	ma "github.com/multiformats/go-multiaddr"
)

// SwarmKeyLen is the length of a private network's pre-shared key.
const SwarmKeyLen = 32

// ErrInvalidOption reports Options that cannot work.
var ErrInvalidOption = errors.New("ipfs: invalid option")

// ErrStartFailed reports a daemon that did not start; see StartError.
var ErrStartFailed = errors.New("ipfs: the IPFS node did not start")

// ErrGaveUp reports a daemon that kept dying and is no longer restarted.
var ErrGaveUp = errors.New("ipfs: gave up restarting the IPFS node")

// Options configures a Daemon. The zero value of every field but Binary and
// RepoDir is a usable default.
type Options struct {
	// Binary is the Kubo executable. Required.
	Binary string
	// RepoDir is the Kubo repository (IPFS_PATH), created on first start.
	// Required; edgellm uses <data dir>/ipfs.
	RepoDir string
	// APIPort puts the HTTP RPC API on this port of 127.0.0.1 (every local
	// user can reach it). Default 0: a unix socket in the repository
	// (sockets.go).
	APIPort int
	// Gateway turns the HTTP gateway on (a unix socket, or GatewayPort), serving trustless
	// responses only (raw blocks and CARs, no websites). edgellm nodes turn it
	// on: the backend reads KV blocks through it, 2-3x faster than the RPC
	// API's block/get. Default off.
	Gateway bool
	// GatewayPort puts the gateway on this port of 127.0.0.1. Default 0: a
	// unix socket in the repository.
	GatewayPort int
	// SwarmKey makes the node a member of a private network: only nodes with
	// the same 32-byte key connect to it. Default nil: no private network,
	// and then the swarm listens on 127.0.0.1 only (see SwarmIPs).
	SwarmKey []byte
	// SwarmIPs are the IP addresses the swarm listens on, over TCP. Default:
	// 127.0.0.1 without a SwarmKey; 0.0.0.0 and :: with one.
	SwarmIPs []net.IP
	// SwarmPort is the swarm's TCP port on each of SwarmIPs. Default 0: a
	// free port picked at the first start and kept across restarts.
	SwarmPort int
	// Log receives the daemon's stdout and stderr. Default: discarded (the
	// tail still goes into start errors).
	Log io.Writer
	// Logger receives the supervisor's own lines (starts, restarts, stops).
	// Default: discard.
	Logger *slog.Logger
	// StartTimeout bounds each start until the API answers. Default 1m.
	StartTimeout time.Duration
	// StopTimeout is how long the daemon gets after SIGTERM before SIGKILL.
	// Default 10s.
	StopTimeout time.Duration
	// OnRestart, when set, is called after each restart of a daemon that
	// died (serve counts them in its metrics).
	OnRestart func()
	// MaxRestartsPerMinute bounds restarts of a daemon that keeps dying; 0
	// means the default 5, a negative value disables restarts.
	MaxRestartsPerMinute int
	// Waiting, when set, is called about every half second while a start
	// takes longer than a second, with the time spent so far (a terminal
	// status line), and once with 0 when the wait ends.
	Waiting func(elapsed time.Duration)
}

// withDefaults validates o and fills its defaults.
func (o Options) withDefaults() (Options, error) {
	bad := func(format string, args ...any) (Options, error) {
		return o, fmt.Errorf("%w: %s", ErrInvalidOption, fmt.Sprintf(format, args...))
	}
	switch {
	case o.Binary == "":
		return bad("no Kubo binary")
	case o.RepoDir == "":
		return bad("no repository directory")
	case o.APIPort < 0 || o.APIPort > 65535:
		return bad("API port %d", o.APIPort)
	case o.GatewayPort < 0 || o.GatewayPort > 65535:
		return bad("gateway port %d", o.GatewayPort)
	case o.SwarmPort < 0 || o.SwarmPort > 65535:
		return bad("swarm port %d", o.SwarmPort)
	case o.SwarmKey != nil && len(o.SwarmKey) != SwarmKeyLen:
		return bad("swarm key of %d bytes, want %d", len(o.SwarmKey), SwarmKeyLen)
	case o.StartTimeout < 0 || o.StopTimeout < 0:
		return bad("negative timeout")
	}
	if len(o.SwarmIPs) == 0 {
		if o.SwarmKey == nil {
			o.SwarmIPs = []net.IP{net.IPv4(127, 0, 0, 1)}
		} else {
			o.SwarmIPs = []net.IP{net.IPv4zero, net.IPv6unspecified}
		}
	}
	for _, ip := range o.SwarmIPs {
		if ip == nil || (ip.To4() == nil && len(ip) != net.IPv6len) {
			return bad("swarm IP %v", ip)
		}
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = time.Minute
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = 10 * time.Second
	}
	if o.MaxRestartsPerMinute == 0 {
		o.MaxRestartsPerMinute = 5
	}
	return o, nil
}

// swarmAddrs returns the swarm listen multiaddrs for port.
func (o Options) swarmAddrs(port int) []string {
	out := make([]string, 0, len(o.SwarmIPs))
	for _, ip := range o.SwarmIPs {
		proto := "ip6"
		if ip.To4() != nil {
			proto, ip = "ip4", ip.To4()
		}
		out = append(out, fmt.Sprintf("/%s/%s/tcp/%d", proto, ip, port))
	}
	return out
}

// loopbackOnly reports whether every swarm IP is a loopback address.
func (o Options) loopbackOnly() bool {
	for _, ip := range o.SwarmIPs {
		if !ip.IsLoopback() {
			return false
		}
	}
	return true
}

// SwarmIPsOf returns the distinct IP addresses of the TCP multiaddrs in
// addrs (edgellm's own listen addresses), for Options.SwarmIPs: Kubo then
// listens where the edgellm node does. Addresses without an IP are skipped.
func SwarmIPsOf(addrs []ma.Multiaddr) []net.IP {
	var out []net.IP
	seen := map[string]bool{}
	for _, a := range addrs {
		var ip net.IP
		for _, c := range a {
			if code := c.Protocol().Code; code == ma.P_IP4 || code == ma.P_IP6 {
				ip = net.IP(c.RawValue())
				break
			}
		}
		if ip == nil || seen[ip.String()] {
			continue
		}
		seen[ip.String()] = true
		out = append(out, ip)
	}
	return out
}

// DeriveSwarmKey derives a Kubo swarm key from an edgellm swarm secret:
// only the swarm's members can compute it, and Kubo's private network stays
// apart from the edgellm hosts' own (same gate, different key).
func DeriveSwarmKey(secret []byte) []byte {
	h := sha256.Sum256(append([]byte("edgellm/ipfs-swarm-key/1/"), secret...))
	return h[:]
}
