package p2p

import (
	"fmt"
	"log/slog"
	"time"
)

// ClusterConfig configures a ClusterService (worker side) and a ClusterClient
// (requester side). Build it with ClusterOptions; the constructors fill the
// defaults and validate.
type ClusterConfig struct {
	// Handler joins and leaves Ray clusters for the worker. Required for a
	// ClusterService; unused by a ClusterClient.
	Handler SessionHandler
	// Source supplies what the worker advertises: the models and layer ranges
	// it accepts, its session limit and its Ray address. Pass the same source
	// the capability record comes from. Required for a ClusterService.
	Source CapabilitySource
	// MaxSessions caps the worker's concurrent sessions. Default (0): the
	// source's MaxSessions, or 1 when that is 0 too.
	MaxSessions int
	// Timeout bounds every single read and write that is not a heartbeat
	// wait: the join request, each answer, and the join answer beyond the
	// request's deadline. Default DefaultClusterIOTimeout.
	Timeout time.Duration
	// MaxJoinWait is how far ahead a join deadline may lie (worker). Default
	// DefaultMaxJoinWait.
	MaxJoinWait time.Duration
	// MinHeartbeat and MaxHeartbeat bound the interval a worker accepts.
	// Defaults DefaultMinHeartbeatInterval, DefaultMaxHeartbeatInterval.
	MinHeartbeat, MaxHeartbeat time.Duration
	// HeartbeatInterval is the requester's interval when a JoinRequest leaves
	// it zero. Default DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration
	// HeartbeatMisses: a side that hears nothing for this many intervals
	// treats the other as lost. Default DefaultHeartbeatMisses.
	HeartbeatMisses int
	// JoinTimeout is the requester's deadline when a JoinRequest leaves it
	// zero. Default DefaultJoinTimeout.
	JoinTimeout time.Duration
	// LeaveTimeout bounds SessionHandler.Leave on the worker and the wait for
	// its acknowledgement on the requester. Default 30s.
	LeaveTimeout time.Duration
	// MaxSessionLifetime ends a worker's session this long after it was
	// accepted (the requester sees it lost). Default DefaultMaxSessionLifetime.
	MaxSessionLifetime time.Duration
	// Logger receives debug lines about refused and ended sessions. Default:
	// discard.
	Logger *slog.Logger
	// OnSessionsChanged, when set, is called (in its own goroutine) after a
	// session starts or ends, so the worker can re-publish its load at once
	// instead of at the next refresh (Node.Republish).
	OnSessionsChanged func()
}

// ClusterOption changes a ClusterConfig.
type ClusterOption func(*ClusterConfig) error

// WithSessionHandler sets ClusterConfig.Handler (required for a worker).
func WithSessionHandler(h SessionHandler) ClusterOption {
	return func(c *ClusterConfig) error { c.Handler = h; return nil }
}

// WithClusterSource sets ClusterConfig.Source (required for a worker).
func WithClusterSource(s CapabilitySource) ClusterOption {
	return func(c *ClusterConfig) error { c.Source = s; return nil }
}

// WithMaxSessions sets ClusterConfig.MaxSessions (default: the source's).
func WithMaxSessions(n int) ClusterOption {
	return func(c *ClusterConfig) error {
		if n <= 0 {
			return fmt.Errorf("%w: max sessions %d", ErrInvalidConfig, n)
		}
		c.MaxSessions = n
		return nil
	}
}

// WithClusterTimeout sets ClusterConfig.Timeout (default
// DefaultClusterIOTimeout).
func WithClusterTimeout(d time.Duration) ClusterOption {
	return positiveDuration("cluster timeout", d, func(c *ClusterConfig) { c.Timeout = d })
}

// WithMaxJoinWait sets ClusterConfig.MaxJoinWait (default DefaultMaxJoinWait).
func WithMaxJoinWait(d time.Duration) ClusterOption {
	return positiveDuration("max join wait", d, func(c *ClusterConfig) { c.MaxJoinWait = d })
}

// WithHeartbeatBounds sets the intervals a worker accepts (defaults
// DefaultMinHeartbeatInterval, DefaultMaxHeartbeatInterval).
func WithHeartbeatBounds(lo, hi time.Duration) ClusterOption {
	return func(c *ClusterConfig) error {
		if lo <= 0 || hi < lo {
			return fmt.Errorf("%w: heartbeat bounds [%s, %s]", ErrInvalidConfig, lo, hi)
		}
		c.MinHeartbeat, c.MaxHeartbeat = lo, hi
		return nil
	}
}

// WithHeartbeat sets the requester's default interval and both sides' miss
// count (defaults DefaultHeartbeatInterval, DefaultHeartbeatMisses).
func WithHeartbeat(interval time.Duration, misses int) ClusterOption {
	return func(c *ClusterConfig) error {
		if interval <= 0 || misses < 1 {
			return fmt.Errorf("%w: heartbeat every %s, lost after %d misses", ErrInvalidConfig, interval, misses)
		}
		c.HeartbeatInterval, c.HeartbeatMisses = interval, misses
		return nil
	}
}

// WithJoinTimeout sets ClusterConfig.JoinTimeout (default DefaultJoinTimeout).
func WithJoinTimeout(d time.Duration) ClusterOption {
	return positiveDuration("join timeout", d, func(c *ClusterConfig) { c.JoinTimeout = d })
}

// WithLeaveTimeout sets ClusterConfig.LeaveTimeout (default 30s).
func WithLeaveTimeout(d time.Duration) ClusterOption {
	return positiveDuration("leave timeout", d, func(c *ClusterConfig) { c.LeaveTimeout = d })
}

// WithMaxSessionLifetime sets ClusterConfig.MaxSessionLifetime (default
// DefaultMaxSessionLifetime).
func WithMaxSessionLifetime(d time.Duration) ClusterOption {
	return positiveDuration("max session lifetime", d, func(c *ClusterConfig) { c.MaxSessionLifetime = d })
}

// WithClusterLogger sets ClusterConfig.Logger (default: discard).
// WithSessionsChanged sets ClusterConfig.OnSessionsChanged.
func WithSessionsChanged(f func()) ClusterOption {
	return func(c *ClusterConfig) error { c.OnSessionsChanged = f; return nil }
}

func WithClusterLogger(l *slog.Logger) ClusterOption {
	return func(c *ClusterConfig) error { c.Logger = l; return nil }
}

func positiveDuration(what string, d time.Duration, set func(*ClusterConfig)) ClusterOption {
	return func(c *ClusterConfig) error {
		if d <= 0 {
			return fmt.Errorf("%w: %s %s", ErrInvalidConfig, what, d)
		}
		set(c)
		return nil
	}
}

func newClusterConfig(opts []ClusterOption) (ClusterConfig, error) {
	c := ClusterConfig{
		Timeout: DefaultClusterIOTimeout, MaxJoinWait: DefaultMaxJoinWait,
		MinHeartbeat: DefaultMinHeartbeatInterval, MaxHeartbeat: DefaultMaxHeartbeatInterval,
		HeartbeatInterval: DefaultHeartbeatInterval, HeartbeatMisses: DefaultHeartbeatMisses,
		JoinTimeout: DefaultJoinTimeout, LeaveTimeout: 30 * time.Second,
		MaxSessionLifetime: DefaultMaxSessionLifetime,
	}
	for _, o := range opts {
		if err := o(&c); err != nil {
			return c, err
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// window is how long a side waits for the next message of a session with
// this heartbeat interval before it calls the other side lost.
func (c *ClusterConfig) window(interval time.Duration) time.Duration {
	return time.Duration(c.HeartbeatMisses) * interval
}
