package p2p

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio"
	"github.com/libp2p/go-msgio/pbio"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

const (
	// CapsProtocol serves a peer's current signed capability record for a
	// direct, fresh read: the caller sends one CapabilityRequest, the peer
	// answers with one length-delimited signed envelope and closes.
	CapsProtocol protocol.ID = "/edgellm/caps/1.0.0"
	// CapsServiceName is the resource-manager service of CapsProtocol.
	CapsServiceName = "edgellm.caps"
)

// CapsConfig configures a CapsService.
type CapsConfig struct {
	// Timeout bounds one exchange, both serving and fetching. Default 10s.
	Timeout time.Duration
	// Logger receives debug lines about refused streams. Default: discard.
	Logger *slog.Logger
}

// CapsOption changes a CapsConfig.
type CapsOption func(*CapsConfig) error

// WithCapsTimeout sets CapsConfig.Timeout (default 10s).
func WithCapsTimeout(d time.Duration) CapsOption {
	return func(c *CapsConfig) error {
		if d <= 0 {
			return fmt.Errorf("%w: caps timeout %s", ErrInvalidConfig, d)
		}
		c.Timeout = d
		return nil
	}
}

// WithCapsLogger sets CapsConfig.Logger (default: discard).
func WithCapsLogger(l *slog.Logger) CapsOption {
	return func(c *CapsConfig) error { c.Logger = l; return nil }
}

// CapsService answers CapsProtocol with the record set by SetRecord, and
// fetches other peers' records.
type CapsService struct {
	host host.Host
	cfg  CapsConfig

	mu     sync.RWMutex
	record []byte // current signed envelope; nil until the first SetRecord
	closed bool
}

// NewCapsService registers the CapsProtocol handler on h. Close removes it.
func NewCapsService(h host.Host, opts ...CapsOption) (*CapsService, error) {
	cfg := CapsConfig{Timeout: 10 * time.Second}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &CapsService{host: h, cfg: cfg}
	h.SetStreamHandler(CapsProtocol, s.handle)
	return s, nil
}

// SetRecord sets the signed envelope served from now on; nil serves nothing.
func (s *CapsService) SetRecord(env []byte) {
	s.mu.Lock()
	s.record = env
	s.mu.Unlock()
}

// Close stops serving. It is idempotent.
func (s *CapsService) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		s.host.RemoveStreamHandler(CapsProtocol)
	}
	return nil
}

func (s *CapsService) handle(st network.Stream) {
	if err := s.serve(st); err != nil {
		s.cfg.Logger.Debug("caps: refused stream", "peer", st.Conn().RemotePeer(), "err", err)
		st.Reset()
		return
	}
	st.Close()
}

func (s *CapsService) serve(st network.Stream) error {
	if err := st.Scope().SetService(CapsServiceName); err != nil {
		return fmt.Errorf("attach to service: %w", err)
	}
	if err := st.Scope().ReserveMemory(MaxRequestSize+MaxRecordSize, network.ReservationPriorityAlways); err != nil {
		return fmt.Errorf("reserve memory: %w", err)
	}
	defer st.Scope().ReleaseMemory(MaxRequestSize + MaxRecordSize)
	if err := st.SetDeadline(time.Now().Add(s.cfg.Timeout)); err != nil {
		return err
	}
	if _, err := readCapsRequest(st); err != nil {
		return err
	}
	s.mu.RLock()
	rec := s.record
	s.mu.RUnlock()
	if rec == nil {
		return ErrNoRecord
	}
	return msgio.NewVarintWriter(st).WriteMsg(rec)
}

// readCapsRequest reads one size-capped CapabilityRequest.
func readCapsRequest(r io.Reader) (*pb.CapabilityRequest, error) {
	var req pb.CapabilityRequest
	if err := pbio.NewDelimitedReader(r, MaxRequestSize).ReadMsg(&req); err != nil {
		return nil, fmt.Errorf("read caps request: %w", err)
	}
	return &req, nil
}

// Fetch asks p for its current record over CapsProtocol and verifies it
// (OpenRecord). It returns the record and the raw envelope. The record may be
// withdrawn; an expired one is refused.
func (s *CapsService) Fetch(ctx context.Context, p peer.ID) (*Record, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	st, err := s.host.NewStream(ctx, p, CapsProtocol)
	if err != nil {
		return nil, nil, err
	}
	rec, env, err := s.fetch(st, p)
	if err != nil {
		st.Reset()
		return nil, nil, err
	}
	st.Close()
	return rec, env, nil
}

func (s *CapsService) fetch(st network.Stream, p peer.ID) (*Record, []byte, error) {
	if err := st.Scope().SetService(CapsServiceName); err != nil {
		return nil, nil, fmt.Errorf("attach to service: %w", err)
	}
	if err := st.Scope().ReserveMemory(MaxRecordSize, network.ReservationPriorityAlways); err != nil {
		return nil, nil, fmt.Errorf("reserve memory: %w", err)
	}
	defer st.Scope().ReleaseMemory(MaxRecordSize)
	if err := st.SetDeadline(time.Now().Add(s.cfg.Timeout)); err != nil {
		return nil, nil, err
	}
	if err := pbio.NewDelimitedWriter(st).WriteMsg(&pb.CapabilityRequest{}); err != nil {
		return nil, nil, fmt.Errorf("write caps request: %w", err)
	}
	if err := st.CloseWrite(); err != nil {
		return nil, nil, err
	}
	env, err := readEnvelope(st)
	if err != nil {
		return nil, nil, err
	}
	rec, err := decodeFetched(env, p, time.Now())
	if err != nil {
		return nil, nil, err
	}
	return rec, env, nil
}

// readEnvelope reads one length-delimited message of at most MaxRecordSize.
func readEnvelope(st io.Reader) ([]byte, error) {
	r := msgio.NewVarintReaderSize(st, MaxRecordSize)
	msg, err := r.ReadMsg()
	if err != nil {
		if err == msgio.ErrMsgTooLarge {
			return nil, fmt.Errorf("%w: caps answer over %d bytes", ErrRecordTooLarge, MaxRecordSize)
		}
		return nil, fmt.Errorf("read caps answer: %w", err)
	}
	env := append([]byte(nil), msg...)
	r.ReleaseMsg(msg)
	return env, nil
}

// decodeFetched verifies an envelope received from p.
func decodeFetched(env []byte, p peer.ID, now time.Time) (*Record, error) {
	rec, err := OpenRecord(env)
	if err != nil {
		return nil, err
	}
	if rec.PeerID != p {
		return nil, fmt.Errorf("%w: %s answered with the record of %s", ErrInvalidRecord, p, rec.PeerID)
	}
	if !now.Before(rec.Expires) {
		return nil, ErrRecordExpired
	}
	return rec, nil
}
