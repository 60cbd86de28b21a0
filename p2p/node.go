package p2p

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Node is one EdgeLLM peer on the network: the libp2p host, discovery (DHT
// and mDNS), the caps service and, for a worker, the advertiser.
type Node struct {
	cfg  Config
	host host.Host
	disc Discovery
	caps *CapsService
	adv  *advertiser // nil for a client
	log  *slog.Logger

	leaveOnce sync.Once
	leaveErr  error
	closeOnce sync.Once
	closeErr  error
	downOnce  sync.Once
	downErr   error
}

// New starts a node. Close (after Leave, for a worker) ends it.
func New(opts ...Option) (*Node, error) {
	var cfg Config
	cfg.MDNS = true
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	cfg.fillDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Identity == nil {
		k, err := LoadOrCreateIdentity(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		cfg.Identity = k
	}
	h, err := NewHost(HostConfig{Identity: cfg.Identity, Secret: cfg.Secret, ListenAddrs: cfg.ListenAddrs})
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, host: h, log: cfg.Logger}
	if err := n.start(); err != nil {
		h.Close()
		return nil, err
	}
	return n, nil
}

func (n *Node) start() error {
	caps, err := NewCapsService(n.host, WithCapsTimeout(n.cfg.FetchTimeout), WithCapsLogger(n.log))
	if err != nil {
		return err
	}
	n.caps = caps
	swarmID := "open"
	if n.cfg.Secret != nil {
		swarmID = n.cfg.Secret.ID()
	}
	n.disc, err = NewDiscovery(n.host, DiscoveryConfig{
		Bootstrap: n.cfg.Bootstrap,
		Server:    *n.cfg.Server,
		MDNS:      n.cfg.MDNS,
		SwarmID:   swarmID,
		RecordTTL: n.cfg.RecordTTL,
		Logger:    n.log,
	})
	if err != nil {
		caps.Close()
		return err
	}
	if n.cfg.Source != nil {
		n.adv = &advertiser{
			key: n.cfg.Identity, host: n.host, source: n.cfg.Source, disc: n.disc, caps: caps,
			refresh: n.cfg.RefreshInterval, ttl: n.cfg.RecordTTL, log: n.log,
		}
		n.adv.start()
	}
	return nil
}

// ID is the node's peer id.
func (n *Node) ID() peer.ID { return n.host.ID() }

// Republish signs and publishes the worker's record now (e.g. after its
// load changed) instead of at the next refresh; a no-op for a client.
func (n *Node) Republish() {
	if n.adv != nil && n.adv.kick != nil {
		n.adv.nudge()
	}
}

// Host is the node's libp2p host (for further protocols).
func (n *Node) Host() host.Host { return n.host }

// AddrInfo is the node's id and listen addresses.
func (n *Node) AddrInfo() peer.AddrInfo {
	return peer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()}
}

// P2PAddrs are the node's listen addresses with /p2p/<id>.
func (n *Node) P2PAddrs() []ma.Multiaddr {
	ai := n.AddrInfo()
	addrs, _ := peer.AddrInfoToP2pAddrs(&ai)
	return addrs
}

// JoinString returns a join string for this node's swarm with this node as
// the bootstrap peer ("" for an open node).
func (n *Node) JoinString() string {
	if n.cfg.Secret == nil {
		return ""
	}
	return Join{Secret: *n.cfg.Secret, Bootstrap: []peer.AddrInfo{n.AddrInfo()}}.String()
}

// Record is this node's current signed record (nil for a client or before
// the first publish).
func (n *Node) Record() *Record {
	if n.adv == nil {
		return nil
	}
	return n.adv.current()
}

// Leave withdraws a worker's record (on CapsProtocol and in the DHT) and stops
// refreshing and providing. It is idempotent; Close calls it.
func (n *Node) Leave(ctx context.Context) error {
	n.leaveOnce.Do(func() {
		if n.adv != nil {
			n.leaveErr = n.adv.withdraw(ctx)
		}
	})
	return n.leaveErr
}

// Close leaves (with a bounded wait) and stops everything the node started.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.FetchTimeout)
		defer cancel()
		err := n.Leave(ctx)
		n.closeErr = errors.Join(err, n.shutdown())
	})
	return n.closeErr
}

// shutdown stops without withdrawing; used by Close and by crash tests. It is
// idempotent.
func (n *Node) shutdown() error {
	n.downOnce.Do(func() {
		n.leaveOnce.Do(func() {}) // a stopped node cannot withdraw any more
		if n.adv != nil {
			n.adv.stop()
		}
		n.downErr = errors.Join(n.caps.Close(), n.disc.Close(), n.host.Close())
	})
	return n.downErr
}

// FetchRecord reads p's record: directly over CapsProtocol when p answers,
// else the newest valid one from the DHT. It reports which way it came.
func (n *Node) FetchRecord(ctx context.Context, p peer.ID) (rec *Record, direct bool, err error) {
	if p == n.host.ID() {
		if r := n.Record(); r != nil {
			return r, true, nil
		}
		return nil, false, ErrNoRecord
	}
	rec, _, derr := n.caps.Fetch(ctx, p)
	if derr == nil {
		return rec, true, nil
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.FetchTimeout)
	defer cancel()
	env, err := n.disc.GetRecord(ctx, p)
	if err != nil {
		return nil, false, fmt.Errorf("%s: direct: %v; dht: %w", p, derr, err)
	}
	rec, err = OpenRecord(env)
	if err != nil {
		return nil, false, err
	}
	if rec.PeerID != p {
		return nil, false, fmt.Errorf("%w: DHT answered for %s with %s", ErrInvalidRecord, p, rec.PeerID)
	}
	if !time.Now().Before(rec.Expires) {
		return nil, false, ErrRecordExpired
	}
	return rec, false, nil
}
