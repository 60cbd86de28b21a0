package p2p

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Default intervals of capability records.
const (
	// DefaultRefreshInterval: how often a worker re-signs and re-publishes.
	DefaultRefreshInterval = time.Minute
	// DefaultRecordTTL: how long a record (and a provider entry) stays valid;
	// a crashed worker disappears from others' view within this time.
	DefaultRecordTTL = 3 * time.Minute
	// DefaultLookupTimeout bounds one Lookup.
	DefaultLookupTimeout = 15 * time.Second
)

// Config configures a Node. Build it with Options; New fills the defaults and
// validates.
type Config struct {
	// Identity is the node key. Default: loaded or created in DataDir.
	Identity crypto.PrivKey
	// DataDir holds the identity. Required when Identity is nil.
	DataDir string
	// Secret is the swarm's pre-shared key. Required unless Open is set.
	Secret *Secret
	// Open runs without a swarm secret (and with QUIC): only for tests and
	// future open swarms. Default false.
	Open bool
	// ListenAddrs; default DefaultListenAddrs.
	ListenAddrs []ma.Multiaddr
	// Bootstrap peers (join string, flags, config). Default none.
	Bootstrap []peer.AddrInfo
	// Source makes the node a worker that advertises itself. Default nil: a
	// client that only looks others up.
	Source CapabilitySource
	// Server runs the DHT in server mode. Default: true when Source is set.
	Server *bool
	// MDNS enables LAN discovery. Default true.
	MDNS bool
	// RefreshInterval and RecordTTL: see the defaults. RefreshInterval must be
	// at most a third of RecordTTL, so two refreshes may fail before expiry.
	RefreshInterval time.Duration
	RecordTTL       time.Duration
	// FetchTimeout bounds one caps exchange or DHT record read. Default 10s.
	FetchTimeout time.Duration
	// LookupTimeout bounds a Lookup. Default DefaultLookupTimeout.
	LookupTimeout time.Duration
	// Logger; default discards.
	Logger *slog.Logger
}

// Option changes a Config.
type Option func(*Config) error

// WithIdentity sets the node key (default: from WithDataDir).
func WithIdentity(k crypto.PrivKey) Option {
	return func(c *Config) error { c.Identity = k; return nil }
}

// WithDataDir sets the data directory holding identity.key (no default).
func WithDataDir(dir string) Option {
	return func(c *Config) error { c.DataDir = dir; return nil }
}

// WithSecret joins the private swarm of s (required unless WithOpenSwarm).
func WithSecret(s Secret) Option {
	return func(c *Config) error { c.Secret = &s; return nil }
}

// WithOpenSwarm runs without a swarm secret (tests only; default off).
func WithOpenSwarm() Option {
	return func(c *Config) error { c.Open = true; return nil }
}

// WithListenAddrs sets the listen addresses (default DefaultListenAddrs).
func WithListenAddrs(addrs ...ma.Multiaddr) Option {
	return func(c *Config) error { c.ListenAddrs = addrs; return nil }
}

// WithBootstrap adds bootstrap peers (default none).
func WithBootstrap(peers ...peer.AddrInfo) Option {
	return func(c *Config) error { c.Bootstrap = append(c.Bootstrap, peers...); return nil }
}

// WithCapabilitySource makes the node advertise (default: not advertising).
func WithCapabilitySource(s CapabilitySource) Option {
	return func(c *Config) error { c.Source = s; return nil }
}

// WithDHTServer forces DHT server or client mode (default: server for
// workers, client otherwise).
func WithDHTServer(server bool) Option {
	return func(c *Config) error { c.Server = &server; return nil }
}

// WithMDNS enables or disables mDNS (default enabled).
func WithMDNS(enabled bool) Option {
	return func(c *Config) error { c.MDNS = enabled; return nil }
}

// WithRecordTiming sets the refresh interval and the record TTL (defaults
// DefaultRefreshInterval, DefaultRecordTTL).
func WithRecordTiming(refresh, ttl time.Duration) Option {
	return func(c *Config) error { c.RefreshInterval, c.RecordTTL = refresh, ttl; return nil }
}

// WithLookupTimeout bounds Lookup (default DefaultLookupTimeout).
func WithLookupTimeout(d time.Duration) Option {
	return func(c *Config) error { c.LookupTimeout = d; return nil }
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(c *Config) error { c.Logger = l; return nil }
}

func (c *Config) fillDefaults() {
	if c.RefreshInterval == 0 {
		c.RefreshInterval = DefaultRefreshInterval
	}
	if c.RecordTTL == 0 {
		c.RecordTTL = DefaultRecordTTL
	}
	if c.FetchTimeout == 0 {
		c.FetchTimeout = 10 * time.Second
	}
	if c.LookupTimeout == 0 {
		c.LookupTimeout = DefaultLookupTimeout
	}
	if c.Server == nil {
		server := c.Source != nil
		c.Server = &server
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate checks the configuration after defaults are filled.
func (c *Config) Validate() error {
	switch {
	case c.Identity == nil && c.DataDir == "":
		return fmt.Errorf("%w: need an identity or a data directory", ErrInvalidConfig)
	case c.Secret == nil && !c.Open:
		return fmt.Errorf("%w: no swarm secret (pass a join string)", ErrInvalidConfig)
	case c.Secret != nil && c.Open:
		return fmt.Errorf("%w: a swarm secret and an open swarm", ErrInvalidConfig)
	case c.RefreshInterval <= 0 || c.RecordTTL <= 0:
		return fmt.Errorf("%w: non-positive refresh interval or record TTL", ErrInvalidConfig)
	case c.RefreshInterval*3 > c.RecordTTL:
		return fmt.Errorf("%w: refresh interval %s must be at most a third of the record TTL %s",
			ErrInvalidConfig, c.RefreshInterval, c.RecordTTL)
	case c.RecordTTL > 24*time.Hour:
		return fmt.Errorf("%w: record TTL above 24h", ErrInvalidConfig)
	}
	return nil
}
