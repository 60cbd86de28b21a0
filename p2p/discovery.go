package p2p

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p-kad-dht/records"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
)

// DHTPrefix is the protocol prefix of the swarm's private Kademlia DHT
// (/edgellm/kad/1.0.0): it never speaks to the public IPFS DHT.
const DHTPrefix = "/edgellm"

// Discovery is how a node finds other members and their records.
type Discovery interface {
	// Provide announces that this node provides key.
	Provide(ctx context.Context, key cid.Cid) error
	// FindProviders streams the providers of key until ctx ends or the
	// search is exhausted.
	FindProviders(ctx context.Context, key cid.Cid) <-chan peer.AddrInfo
	// PutRecord stores a signed capability envelope of this node.
	PutRecord(ctx context.Context, env []byte) error
	// GetRecord returns the newest valid envelope of p.
	GetRecord(ctx context.Context, p peer.ID) ([]byte, error)
	// Close stops discovery.
	Close() error
}

// DiscoveryConfig configures NewDiscovery.
type DiscoveryConfig struct {
	// Bootstrap peers to join through; may be empty (mDNS, or the first node).
	Bootstrap []peer.AddrInfo
	// Server runs the DHT in server mode (workers); otherwise client mode.
	Server bool
	// MDNS enables LAN discovery (service "_edgellm-<swarm id>._udp").
	MDNS bool
	// SwarmID names the mDNS service; see Secret.ID.
	SwarmID string
	// RecordTTL is how long DHT nodes keep records and provider entries.
	RecordTTL time.Duration
	Logger    *slog.Logger
}

// dhtDiscovery is Discovery over the private Kademlia DHT plus mDNS.
type dhtDiscovery struct {
	host   host.Host
	dht    *dht.IpfsDHT
	mdns   mdns.Service
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var _ Discovery = (*dhtDiscovery)(nil)

// NewDiscovery starts the DHT on h (never with the public bootstrap list),
// connects to the bootstrap peers and, if enabled, mDNS.
func NewDiscovery(h host.Host, cfg DiscoveryConfig) (Discovery, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	mode := dht.ModeClient
	if cfg.Server {
		mode = dht.ModeServer
	}
	bootstrap := append([]peer.AddrInfo(nil), cfg.Bootstrap...)
	kad, err := dht.New(h,
		dht.ProtocolPrefix(DHTPrefix),
		dht.Mode(mode),
		dht.BootstrapPeers(bootstrap...),
		dht.Validator(record.NamespacedValidator{RecordNamespace: Validator{}}),
		dht.MaxRecordAge(cfg.RecordTTL),
		dht.ProviderManagerOpts(records.ProvideValidity(cfg.RecordTTL), records.CleanupInterval(cfg.RecordTTL)),
	)
	if err != nil {
		return nil, fmt.Errorf("dht: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &dhtDiscovery{host: h, dht: kad, log: cfg.Logger, ctx: ctx, cancel: cancel}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.connectBootstrap(bootstrap)
	}()
	if cfg.MDNS {
		d.mdns = mdns.NewMdnsService(h, "_edgellm-"+cfg.SwarmID+"._udp", d)
		// A machine without a multicast-capable interface (many containers and
		// VPSs) still discovers members through the DHT: mDNS is an extra.
		if err := d.mdns.Start(); err != nil {
			d.mdns.Close()
			d.mdns = nil
			d.log.Warn("mDNS unavailable; discovering through bootstrap peers and the DHT only", "err", err)
		}
	}
	return d, nil
}

// connectBootstrap dials every bootstrap peer once, then lets the DHT refresh
// its routing table.
func (d *dhtDiscovery) connectBootstrap(peers []peer.AddrInfo) {
	var wg sync.WaitGroup
	for _, ai := range peers {
		if ai.ID == d.host.ID() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(d.ctx, 15*time.Second)
			defer cancel()
			if err := d.host.Connect(ctx, ai); err != nil {
				d.log.Warn("bootstrap peer unreachable", "peer", ai.ID, "err", err)
			}
		}()
	}
	wg.Wait()
	if err := d.dht.Bootstrap(d.ctx); err != nil {
		d.log.Debug("dht bootstrap", "err", err)
	}
}

// HandlePeerFound implements mdns.Notifee: connect to a member found on the
// LAN; the DHT adds it to its routing table once identify completes.
func (d *dhtDiscovery) HandlePeerFound(ai peer.AddrInfo) {
	if ai.ID == d.host.ID() || d.ctx.Err() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
	defer cancel()
	if err := d.host.Connect(ctx, ai); err != nil {
		d.log.Debug("mdns peer unreachable", "peer", ai.ID, "err", err)
		return
	}
	d.log.Debug("mdns: connected", "peer", ai.ID)
}

func (d *dhtDiscovery) Provide(ctx context.Context, key cid.Cid) error {
	return d.dht.Provide(ctx, key, true)
}

func (d *dhtDiscovery) FindProviders(ctx context.Context, key cid.Cid) <-chan peer.AddrInfo {
	return d.dht.FindProvidersAsync(ctx, key, 0)
}

func (d *dhtDiscovery) PutRecord(ctx context.Context, env []byte) error {
	rec, err := OpenRecord(env)
	if err != nil {
		return err
	}
	return d.dht.PutValue(ctx, RecordKey(rec.PeerID), env)
}

func (d *dhtDiscovery) GetRecord(ctx context.Context, p peer.ID) ([]byte, error) {
	env, err := d.dht.GetValue(ctx, RecordKey(p))
	if errors.Is(err, routing.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrNoRecord, p)
	}
	return env, err
}

// Close stops mDNS, the bootstrap dials and the DHT.
func (d *dhtDiscovery) Close() error {
	d.cancel()
	if d.mdns != nil {
		d.mdns.Close()
	}
	d.wg.Wait()
	return d.dht.Close()
}
