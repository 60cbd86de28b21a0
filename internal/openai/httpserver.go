package openai

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
)

// NewHTTPServer wraps s in an http.Server listening on addr, with the
// timeouts of s's Options: ReadHeaderTimeout (slow-header clients),
// ReadTimeout (slow bodies) and IdleTimeout. It sets no WriteTimeout, which
// would cut streams longer than it: each write has its own deadline instead
// (Options.WriteTimeout).
//
// Graceful shutdown is Shutdown(ctx, srv): stop accepting, let requests in
// flight (streams and queued ones included) finish until ctx ends, then cut
// what is left.
func (s *Server) NewHTTPServer(addr string) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           s,
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		ReadTimeout:       s.opts.ReadTimeout,
		IdleTimeout:       s.opts.IdleTimeout,
		// net/http's own complaints (bad clients, TLS handshakes) go to
		// the same log as everything else.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// Shutdown stops srv gracefully: it closes the listeners and idle
// connections at once, waits for active requests to finish until ctx ends,
// then closes every connection. Closing a connection cancels its request's
// context, so each remaining generation is aborted in the backend and each
// queued request leaves its queue. It returns ctx's error when it had to
// cut requests short.
func Shutdown(ctx context.Context, srv *http.Server) error {
	err := srv.Shutdown(ctx)
	if err == nil {
		return nil
	}
	if cerr := srv.Close(); cerr != nil && !errors.Is(cerr, http.ErrServerClosed) {
		return fmt.Errorf("close after shutdown (%w): %w", err, cerr)
	}
	return fmt.Errorf("shutdown: requests cut short: %w", err)
}
