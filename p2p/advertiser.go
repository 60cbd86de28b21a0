package p2p

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
)

// CapabilitySource supplies what a worker advertises; the CLI adapts the
// backend's Status and ListModels to it. It is asked once per refresh.
type CapabilitySource interface {
	Capabilities(ctx context.Context) (Capabilities, error)
}

// StaticSource is a CapabilitySource that always returns the same value.
type StaticSource Capabilities

var _ CapabilitySource = StaticSource{}

// Capabilities implements CapabilitySource.
func (s StaticSource) Capabilities(context.Context) (Capabilities, error) {
	return Capabilities(s), nil
}

// advertiser keeps this node's signed record fresh: every refresh it asks the
// source, signs a record with the next sequence number and an expiry of ttl,
// serves it on CapsProtocol, puts it in the DHT and provides the members key
// and the key of each model. A failed round is retried with backoff.
type advertiser struct {
	key     crypto.PrivKey
	host    host.Host
	source  CapabilitySource
	disc    Discovery
	caps    *CapsService
	refresh time.Duration
	ttl     time.Duration
	log     *slog.Logger

	mu   sync.Mutex
	seq  uint64
	last *Record

	cancel context.CancelFunc
	done   chan struct{}
	kick   chan struct{} // a pending "publish now"
}

func (a *advertiser) start() {
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel, a.done, a.kick = cancel, make(chan struct{}), make(chan struct{}, 1)
	go a.run(ctx)
}

// nudge asks for a round now rather than at the next refresh; requests made
// while one is pending collapse into it.
func (a *advertiser) nudge() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

func (a *advertiser) run(ctx context.Context) {
	defer close(a.done)
	backoff := a.refresh / 64
	for {
		wait := a.refresh
		if err := a.publish(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			a.log.Debug("advertise: will retry", "in", backoff, "err", err)
			wait, backoff = backoff, min(2*backoff, a.refresh)
		} else {
			backoff = a.refresh / 64
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-a.kick:
			t.Stop()
		}
	}
}

// publish runs one advertising round.
func (a *advertiser) publish(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, a.refresh)
	defer cancel()
	c, err := a.source.Capabilities(rctx)
	if err != nil {
		return fmt.Errorf("capability source: %w", err)
	}
	rec, env, err := a.sign(c, false)
	if err != nil {
		return err
	}
	a.caps.SetRecord(env)
	perr := a.disc.PutRecord(rctx, env)
	keys := []cid.Cid{MembersKey}
	for _, m := range rec.Models {
		keys = append(keys, ModelIDKey(m.ID))
		if m.WeightsCID != "" {
			keys = append(keys, ModelKey(m.WeightsCID))
		}
	}
	for _, k := range keys {
		if err := a.disc.Provide(rctx, k); err != nil && perr == nil {
			perr = err
		}
	}
	if perr != nil {
		return fmt.Errorf("publish record seq %d: %w", rec.Seq, perr)
	}
	return nil
}

// sign builds and signs the next record.
func (a *advertiser) sign(c Capabilities, withdrawn bool) (*Record, []byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	a.seq = max(a.seq+1, uint64(now.UnixMilli()))
	rec := &Record{
		Capabilities: c,
		PeerID:       a.host.ID(),
		Seq:          a.seq,
		Issued:       now,
		Expires:      now.Add(a.ttl),
		Withdrawn:    withdrawn,
		Addrs:        a.host.Addrs(),
	}
	if withdrawn {
		rec.Capabilities = Capabilities{}
	}
	env, err := SealRecord(rec, a.key)
	if err != nil {
		return nil, nil, err
	}
	a.last = rec
	return rec, env, nil
}

// current returns the last signed record (nil before the first).
func (a *advertiser) current() *Record {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

// stop ends the refresh loop without withdrawing (a crash looks like this).
func (a *advertiser) stop() {
	if a.cancel != nil {
		a.cancel()
		<-a.done
	}
}

// withdraw stops refreshing and replaces the record, on CapsProtocol and in
// the DHT, by a signed withdrawal with a higher sequence number: members
// that look this peer up from then on treat it as gone. Provider entries are
// no longer renewed and lapse after the DHT's provide validity.
func (a *advertiser) withdraw(ctx context.Context) error {
	a.stop()
	_, env, err := a.sign(Capabilities{}, true)
	if err != nil {
		return err
	}
	a.caps.SetRecord(env)
	err = a.disc.PutRecord(ctx, env)
	if errors.Is(err, kb.ErrLookupFailure) {
		return nil // alone in the swarm: nobody to tell, the local copy is withdrawn
	}
	if err != nil {
		return fmt.Errorf("publish withdrawal: %w", err)
	}
	return nil
}
