package p2p

import "errors"

// Sentinel errors of the p2p package. Functions wrap them with %w; check them
// with errors.Is.
var (
	// ErrInvalidJoinString: a join string that cannot be decoded.
	ErrInvalidJoinString = errors.New("invalid join string")
	// ErrInvalidRecord: a capability record that is malformed, unsigned,
	// signed by the wrong key, or carries out-of-range fields.
	ErrInvalidRecord = errors.New("invalid capability record")
	// ErrRecordTooLarge: a record or message above its size limit.
	ErrRecordTooLarge = errors.New("record too large")
	// ErrRecordExpired: a record whose expiry has passed.
	ErrRecordExpired = errors.New("capability record expired")
	// ErrRecordWithdrawn: the peer has left and withdrawn its record.
	ErrRecordWithdrawn = errors.New("capability record withdrawn")
	// ErrStaleRecord: a record older than one already held.
	ErrStaleRecord = errors.New("stale capability record")
	// ErrNoRecord: the peer has not published a capability record (yet).
	ErrNoRecord = errors.New("no capability record")
	// ErrInvalidConfig: an option value out of range or a missing setting.
	ErrInvalidConfig = errors.New("invalid p2p configuration")
	// ErrQUICInPrivateSwarm: a QUIC listen address in a private swarm, which
	// go-libp2p cannot protect with the pre-shared key (see doc.go).
	ErrQUICInPrivateSwarm = errors.New("QUIC cannot be used in a private swarm (libp2p pnet covers TCP only)")
	// ErrClosed: the object was closed.
	ErrClosed = errors.New("closed")
	// ErrJoinRefused: a worker refused a cluster join (see RefusedError for
	// the reason).
	ErrJoinRefused = errors.New("join refused")
	// ErrInvalidJoinRequest: a join request the requester itself cannot send
	// (bad field, deadline past).
	ErrInvalidJoinRequest = errors.New("invalid join request")
	// ErrInvalidClusterMessage: an undecodable or out-of-protocol message on
	// ClusterProtocol.
	ErrInvalidClusterMessage = errors.New("invalid cluster message")
	// ErrClusterMessageTooLarge: a cluster message above
	// MaxClusterMessageSize.
	ErrClusterMessageTooLarge = errors.New("cluster message too large")
	// ErrSessionLost: a cluster session ended without a Leave: the other side
	// vanished, stopped answering heartbeats, sent garbage or left itself.
	ErrSessionLost = errors.New("cluster session lost")
)
