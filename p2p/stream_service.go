package p2p

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// streamService is what the node's one-request, one-reply protocol services
// (KVService, PullService) share: their handler on the host, the streams
// being served, and a Close that removes the handler, cancels the running
// handlers' context and waits for them. Each service supplies serve; a
// stream it returns an error for is reset (and logged at debug), else closed.
type streamService struct {
	host  host.Host
	proto protocol.ID
	what  string // the log's prefix: "kv", "pull"
	log   *slog.Logger
	serve func(network.Stream) error

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// newStreamService makes proto's service on h around serve; log may be nil.
// start registers it, once the service that embeds it is complete.
func newStreamService(h host.Host, proto protocol.ID, what string, log *slog.Logger,
	serve func(network.Stream) error) *streamService {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &streamService{host: h, proto: proto, what: what, log: log, serve: serve, ctx: ctx, cancel: cancel}
}

// start registers the handler: streams are served from now on.
func (s *streamService) start() {
	s.host.SetStreamHandler(s.proto, s.handle)
}

// Close stops serving, cancels running handlers and waits for them. It is
// idempotent.
func (s *streamService) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.host.RemoveStreamHandler(s.proto)
	s.cancel()
	s.wg.Wait()
	return nil
}

// track counts a stream being served, unless the service is closed.
func (s *streamService) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

func (s *streamService) handle(st network.Stream) {
	if !s.track() {
		st.Reset()
		return
	}
	defer s.wg.Done()
	if err := s.serve(st); err != nil {
		s.log.Debug(s.what+": refused stream", "peer", st.Conn().RemotePeer(), "err", err)
		st.Reset()
		return
	}
	st.Close()
}

// reserveStream attaches st to the resource manager's service and reserves
// bytes of memory for it (released by the caller).
func reserveStream(st network.Stream, service string, bytes int) error {
	if err := st.Scope().SetService(service); err != nil {
		return fmt.Errorf("attach to service: %w", err)
	}
	if err := st.Scope().ReserveMemory(bytes, network.ReservationPriorityAlways); err != nil {
		return fmt.Errorf("reserve memory: %w", err)
	}
	return nil
}
