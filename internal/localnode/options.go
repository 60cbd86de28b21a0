package localnode

import (
	"io"
	"log/slog"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/edgellm/edgellm/internal/ipfs"
)

// Option changes how Open sets the node up.
type Option func(*settings)

// settings are Open's options.
type settings struct {
	swarmKey []byte
	listen   []ma.Multiaddr
	log      *slog.Logger
	echo     io.Writer
	warn     func(line string)
	waiting  func(elapsed time.Duration)
	// onBackendRestart and onIPFSRestart count restarts of the processes.
	onBackendRestart, onIPFSRestart func()
}

// WithSwarm makes the IPFS node a member of the swarm's private IPFS network
// (its swarm.key is derived from secret, the swarm's p2p.Secret), listening
// on the IPs of the node's own listen addresses (listen; nil: every
// interface). Default: no swarm; the IPFS node listens on 127.0.0.1 only and
// reaches no one.
func WithSwarm(secret []byte, listen []ma.Multiaddr) Option {
	return func(s *settings) {
		s.swarmKey = ipfs.DeriveSwarmKey(secret)
		s.listen = listen
	}
}

// WithLogger receives the supervisors' own lines (starts, restarts, stops).
// Default: discarded.
func WithLogger(l *slog.Logger) Option {
	return func(s *settings) { s.log = l }
}

// WithEcho copies the backend's and Kubo's output to w as well as to their
// logs. Default: the logs only.
func WithEcho(w io.Writer) Option {
	return func(s *settings) { s.echo = w }
}

// WithWarnings receives each warning as one line without a prefix (today
// only "IPFS node not started (why); the KV cache is off"). Default:
// dropped.
func WithWarnings(f func(line string)) Option {
	return func(s *settings) { s.warn = f }
}

// WithIPFSWaiting is called about every half second while the IPFS node
// takes more than a second to start, with the time spent so far, and once
// with 0 when the wait ends (a terminal's status line). Default: none.
func WithIPFSWaiting(f func(elapsed time.Duration)) Option {
	return func(s *settings) { s.waiting = f }
}

// WithRestarts calls onBackend after each restart of the backend and onIPFS
// after each restart of Kubo (serve counts them in its metrics). Default:
// none.
func WithRestarts(onBackend, onIPFS func()) Option {
	return func(s *settings) { s.onBackendRestart, s.onIPFSRestart = onBackend, onIPFS }
}

// output is where a child's output goes: its log, and the echo if any.
func (s *settings) output(log io.Writer) io.Writer {
	if s.echo == nil {
		return log
	}
	return io.MultiWriter(log, s.echo)
}

func (s *settings) logger() *slog.Logger {
	if s.log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.log
}
