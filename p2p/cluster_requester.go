package p2p

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// ClusterClient is the requester side of ClusterProtocol: it asks workers to
// join a session and keeps each session's stream alive with heartbeats.
type ClusterClient struct {
	host host.Host
	cfg  ClusterConfig

	mu       sync.Mutex
	sessions map[*SessionHandle]struct{}
	closed   bool
}

// NewClusterClient builds a requester on h. Close leaves every open session.
func NewClusterClient(h host.Host, opts ...ClusterOption) (*ClusterClient, error) {
	cfg, err := newClusterConfig(opts)
	if err != nil {
		return nil, err
	}
	return &ClusterClient{host: h, cfg: cfg, sessions: map[*SessionHandle]struct{}{}}, nil
}

// Close leaves every open session (each bounded by LeaveTimeout) and refuses
// further joins. It is idempotent.
func (c *ClusterClient) Close() error {
	c.mu.Lock()
	c.closed = true
	open := make([]*SessionHandle, 0, len(c.sessions))
	for h := range c.sessions {
		open = append(open, h)
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, h := range open {
		wg.Go(func() { h.Leave(context.Background()) })
	}
	wg.Wait()
	return nil
}

// JoinSession asks worker p to join the session req describes and waits for
// its answer until req.Deadline (plus the I/O timeout) or ctx ends. A refusal
// is a *RefusedError (errors.Is ErrJoinRefused). ctx bounds only the join;
// the session lasts until Leave, Close, or the worker is lost.
func (c *ClusterClient) JoinSession(ctx context.Context, p peer.ID, req JoinRequest) (*SessionHandle, error) {
	req = c.fill(req)
	if err := req.validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidJoinRequest, err)
	}
	if !req.Deadline.After(time.Now()) {
		return nil, fmt.Errorf("%w: deadline passed", ErrInvalidJoinRequest)
	}
	ctx, cancel := context.WithDeadline(ctx, req.Deadline.Add(c.cfg.Timeout))
	defer cancel()
	st, err := c.host.NewStream(ctx, p, ClusterProtocol)
	if err != nil {
		return nil, err
	}
	h, err := c.join(ctx, st, &req)
	if err != nil {
		st.Reset()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("join %s: %w (%v)", p, ctx.Err(), err)
		}
		return nil, err
	}
	return h, nil
}

// fill sets the client's defaults for a zero deadline or interval.
func (c *ClusterClient) fill(req JoinRequest) JoinRequest {
	if req.Deadline.IsZero() {
		req.Deadline = time.Now().Add(c.cfg.JoinTimeout)
	}
	if req.HeartbeatInterval == 0 {
		req.HeartbeatInterval = c.cfg.HeartbeatInterval
	}
	return req
}

// join runs the join exchange on st and starts the session.
func (c *ClusterClient) join(ctx context.Context, st network.Stream, req *JoinRequest) (*SessionHandle, error) {
	if err := attachScope(st, ClusterServiceName); err != nil {
		return nil, err
	}
	h, err := c.exchange(ctx, st, req)
	if err != nil {
		st.Scope().ReleaseMemory(clusterStreamMemory)
		return nil, err
	}
	if err := c.add(h); err != nil {
		h.end(err)
		return nil, err
	}
	h.start()
	return h, nil
}

func (c *ClusterClient) exchange(ctx context.Context, st network.Stream, req *JoinRequest) (*SessionHandle, error) {
	if err := st.SetDeadline(req.Deadline.Add(c.cfg.Timeout)); err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { st.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := writeClusterMsg(st, req.toProto()); err != nil {
		return nil, fmt.Errorf("write join: %w", err)
	}
	r := newClusterReader(st)
	m, err := readClusterReply(r)
	if err != nil {
		return nil, fmt.Errorf("read join answer: %w", err)
	}
	if !stop() { // ctx ended just now: the stream's deadline is gone
		return nil, ctx.Err()
	}
	p := st.Conn().RemotePeer()
	switch b := m.GetBody().(type) {
	case *pb.ClusterReply_Refused:
		return nil, &RefusedError{Reason: b.Refused.GetReason(), Message: b.Refused.GetMessage()}
	case *pb.ClusterReply_Accepted:
		a := b.Accepted
		if !bytes.Equal(a.GetSessionId(), req.SessionID[:]) || a.GetResourceName() != ResourceName(p) {
			return nil, fmt.Errorf("%w: accept for another session or peer", ErrInvalidClusterMessage)
		}
		return c.newHandle(st, r, req, a), nil
	}
	return nil, fmt.Errorf("%w: %T before the join answer", ErrInvalidClusterMessage, m.GetBody())
}

func (c *ClusterClient) add(h *SessionHandle) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	c.sessions[h] = struct{}{}
	return nil
}

func (c *ClusterClient) remove(h *SessionHandle) {
	c.mu.Lock()
	delete(c.sessions, h)
	c.mu.Unlock()
}

// SessionHandle is one accepted session, as the requester holds it. It
// heartbeats the worker until Leave; Lost tells the requester's failover that
// the worker is gone.
type SessionHandle struct {
	// Peer is the worker; ID the session.
	Peer peer.ID
	ID   SessionID
	// RayAddress is the address of the worker's Ray node, ResourceName the
	// custom Ray resource naming it ("peer:<id>").
	RayAddress   string
	ResourceName string

	c        *ClusterClient
	st       network.Stream
	r        *clusterReader
	interval time.Duration
	tag      string // connection-manager protection

	wmu      sync.Mutex    // serialises writes
	dmu      sync.Mutex    // orders leaving with the read deadline
	leaving  bool          // guarded by dmu
	leaveAck chan struct{} // closed by the reader on LeaveAck
	acks     atomic.Uint64 // heartbeat acks received

	endOnce sync.Once
	err     error
	done    chan struct{}
	lost    chan struct{}
}

func (c *ClusterClient) newHandle(st network.Stream, r *clusterReader, req *JoinRequest, a *pb.JoinAccepted) *SessionHandle {
	h := &SessionHandle{
		Peer: st.Conn().RemotePeer(), ID: req.SessionID, RayAddress: a.GetRayAddress(), ResourceName: a.GetResourceName(),
		c: c, st: st, r: r, interval: req.HeartbeatInterval, tag: "edgellm-cluster-" + req.SessionID.String(),
		leaveAck: make(chan struct{}), done: make(chan struct{}), lost: make(chan struct{}),
	}
	c.host.ConnManager().Protect(h.Peer, h.tag)
	return h
}

// Done is closed when the session has ended, for any reason.
func (h *SessionHandle) Done() <-chan struct{} { return h.done }

// Lost is closed when the session ends without Leave having been called: the
// worker vanished, stopped answering heartbeats, broke the protocol, or left
// itself. Err says which.
func (h *SessionHandle) Lost() <-chan struct{} { return h.lost }

// Err is nil while the session runs and after a clean Leave; otherwise why it
// ended (errors.Is ErrSessionLost when the worker was lost).
func (h *SessionHandle) Err() error {
	select {
	case <-h.done:
		return h.err
	default:
		return nil
	}
}

func (h *SessionHandle) start() {
	stop := make(chan struct{})
	go h.readLoop()
	go h.beatLoop(stop)
	go func() { <-h.done; close(stop) }()
}

// beatLoop sends a heartbeat every interval until the session ends or Leave
// begins.
func (h *SessionHandle) beatLoop(stop <-chan struct{}) {
	t := time.NewTicker(h.interval)
	defer t.Stop()
	for seq := uint64(1); ; seq++ {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if h.isLeaving() {
			return
		}
		beat := &pb.ClusterMessage{Body: &pb.ClusterMessage_Heartbeat{Heartbeat: &pb.Heartbeat{Seq: seq}}}
		if err := h.write(beat, h.c.cfg.window(h.interval)); err != nil {
			h.end(fmt.Errorf("%w: heartbeat to %s: %v", ErrSessionLost, h.Peer, err))
			return
		}
	}
}

// readLoop reads the worker's replies until the session ends; silence for
// HeartbeatMisses intervals means the worker is lost.
func (h *SessionHandle) readLoop() {
	for {
		if err := h.setReadDeadline(); err != nil {
			h.end(fmt.Errorf("%w: %v", ErrSessionLost, err))
			return
		}
		m, err := readClusterReply(h.r)
		if err != nil {
			h.end(fmt.Errorf("%w: worker %s: %v", ErrSessionLost, h.Peer, err))
			return
		}
		switch b := m.GetBody().(type) {
		case *pb.ClusterReply_HeartbeatAck:
			h.acks.Add(1)
		case *pb.ClusterReply_LeaveAck:
			if h.isLeaving() {
				close(h.leaveAck)
				return
			}
			h.end(fmt.Errorf("%w: worker %s: unasked leave ack", ErrSessionLost, h.Peer))
			return
		case *pb.ClusterReply_Left:
			h.end(fmt.Errorf("%w: worker %s left: %s", ErrSessionLost, h.Peer, b.Left.GetReason()))
			return
		default:
			h.end(fmt.Errorf("%w: worker %s: unexpected %T", ErrSessionLost, h.Peer, m.GetBody()))
			return
		}
	}
}

// setReadDeadline waits a heartbeat window, or LeaveTimeout once leaving.
func (h *SessionHandle) setReadDeadline() error {
	h.dmu.Lock()
	defer h.dmu.Unlock()
	d := h.c.cfg.window(h.interval)
	if h.leaving {
		d = h.c.cfg.LeaveTimeout
	}
	return h.st.SetReadDeadline(time.Now().Add(d))
}

func (h *SessionHandle) isLeaving() bool {
	h.dmu.Lock()
	defer h.dmu.Unlock()
	return h.leaving
}

func (h *SessionHandle) write(m *pb.ClusterMessage, timeout time.Duration) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if err := h.st.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	return writeClusterMsg(h.st, m)
}

// Leave ends the session cleanly: it stops the heartbeats, tells the worker,
// and waits (up to ctx and LeaveTimeout) until the worker has left the Ray
// cluster. Leave on a session already ended returns its error; a second Leave
// waits for the first.
func (h *SessionHandle) Leave(ctx context.Context) error {
	if !h.beginLeave() {
		<-h.done
		return h.err
	}
	ctx, cancel := context.WithTimeout(ctx, h.c.cfg.LeaveTimeout)
	defer cancel()
	bye := &pb.ClusterMessage{Body: &pb.ClusterMessage_Leave{Leave: &pb.Leave{Reason: "requester done"}}}
	if err := h.write(bye, h.c.cfg.Timeout); err != nil {
		h.end(fmt.Errorf("leave %s: %w", h.Peer, err))
		return h.err
	}
	select {
	case <-h.leaveAck:
		h.end(nil)
	case <-h.done:
	case <-ctx.Done():
		h.end(fmt.Errorf("leave %s: no acknowledgement: %w", h.Peer, ctx.Err()))
	}
	<-h.done
	return h.err
}

// beginLeave marks the session leaving and lengthens the read deadline; it
// reports false when Leave was already called or the session has ended.
func (h *SessionHandle) beginLeave() bool {
	h.dmu.Lock()
	defer h.dmu.Unlock()
	select {
	case <-h.done:
		return false
	default:
	}
	if h.leaving {
		return false
	}
	h.leaving = true
	h.st.SetReadDeadline(time.Now().Add(h.c.cfg.LeaveTimeout))
	return true
}

// end finishes the session once: err nil is a clean leave. Lost is closed
// unless Leave had begun.
func (h *SessionHandle) end(err error) {
	h.endOnce.Do(func() {
		h.err = err
		h.st.Scope().ReleaseMemory(clusterStreamMemory)
		if err == nil {
			h.st.Close()
		} else {
			h.st.Reset()
		}
		if !h.isLeaving() {
			close(h.lost)
		}
		close(h.done)
		h.c.host.ConnManager().Unprotect(h.Peer, h.tag)
		h.c.remove(h)
		if err != nil && !errors.Is(err, ErrClosed) {
			h.c.cfg.Logger.Debug("cluster: session ended", "peer", h.Peer, "session", h.ID, "err", err)
		}
	})
}
