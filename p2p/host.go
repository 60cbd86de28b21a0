package p2p

import (
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
)

// HostConfig configures NewHost.
type HostConfig struct {
	// Identity is the node's key (required); see LoadOrCreateIdentity.
	Identity crypto.PrivKey
	// Secret makes the host a member of a private swarm (libp2p pnet). nil
	// means an open host (tests and future open swarms only).
	Secret *Secret
	// ListenAddrs are the multiaddrs to listen on; port 0 picks a free port.
	// Default: DefaultListenAddrs(Secret != nil).
	ListenAddrs []ma.Multiaddr
	// NATPortMap asks the router for a port mapping (UPnP / NAT-PMP).
	// Default false: it talks to the LAN's gateway.
	NATPortMap bool
}

// DefaultListenAddrs are the listen addresses when none are configured: TCP
// on every interface, plus QUIC for an open host (QUIC cannot carry the
// swarm's pre-shared key; see doc.go).
func DefaultListenAddrs(private bool) []ma.Multiaddr {
	addrs := []ma.Multiaddr{ma.StringCast("/ip4/0.0.0.0/tcp/0"), ma.StringCast("/ip6/::/tcp/0")}
	if !private {
		addrs = append(addrs, ma.StringCast("/ip4/0.0.0.0/udp/0/quic-v1"), ma.StringCast("/ip6/::/udp/0/quic-v1"))
	}
	return addrs
}

// NewHost builds the node's libp2p host: the given Ed25519 identity, TCP (and,
// for an open host, QUIC) listeners, Noise as the only security protocol,
// yamux, the resource manager (newResourceManager), a connection manager, the
// ping service, and NAT traversal: the AutoNAT service (answers members'
// reachability probes), the circuit-relay v2 client (reach and be reached
// through a relay) and DCUtR hole punching. In a private swarm every
// connection first passes the pre-shared key handshake.
func NewHost(cfg HostConfig) (host.Host, error) {
	if cfg.Identity == nil {
		return nil, fmt.Errorf("%w: no identity", ErrInvalidConfig)
	}
	private := cfg.Secret != nil
	listen := cfg.ListenAddrs
	if len(listen) == 0 {
		listen = DefaultListenAddrs(private)
	}
	if private {
		for _, a := range listen {
			if isQUIC(a) {
				return nil, fmt.Errorf("%w: %s", ErrQUICInPrivateSwarm, a)
			}
		}
	}
	rm, err := newResourceManager()
	if err != nil {
		return nil, err
	}
	cm, err := connmgr.NewConnManager(160, 192, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("connection manager: %w", err)
	}
	opts := []libp2p.Option{
		libp2p.Identity(cfg.Identity),
		libp2p.ListenAddrs(listen...),
		libp2p.Security(noise.ID, noise.New),
		libp2p.DefaultMuxers,
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.Ping(true),
		libp2p.EnableRelay(),
		libp2p.EnableHolePunching(),
		libp2p.EnableNATService(),
		libp2p.DisableMetrics(),
	}
	if private {
		opts = append(opts, libp2p.PrivateNetwork(cfg.Secret.PSK()))
	} else {
		opts = append(opts, libp2p.Transport(quic.NewTransport))
	}
	if cfg.NATPortMap {
		opts = append(opts, libp2p.NATPortMap())
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		// libp2p.New closes the resource manager on failure.
		return nil, fmt.Errorf("libp2p host: %w", err)
	}
	return h, nil
}

func isQUIC(a ma.Multiaddr) bool {
	quic := false
	ma.ForEach(a, func(c ma.Component) bool {
		if c.Protocol().Code == ma.P_QUIC_V1 || c.Protocol().Code == ma.P_QUIC {
			quic = true
		}
		return !quic
	})
	return quic
}
