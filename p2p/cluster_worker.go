package p2p

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// SessionHandler is the worker's boundary to its backend: it joins and
// leaves the requester's Ray cluster. The CLI implements it with the Python
// backend's Ray join.
type SessionHandler interface {
	// Join makes this worker's backend join the Ray cluster whose head is at
	// s.HeadAddress, authenticated with s.RayToken, as a node carrying the
	// custom resource s.ResourceName, to hold s.Layers of s.Model. ctx ends
	// at s.Deadline (or when the service closes). The error's text reaches
	// the requester, so it must not contain the token.
	Join(ctx context.Context, s Session) (JoinResult, error)
	// Leave stops what Join started for session id: only the Ray processes of
	// that session. It is called exactly once per successful Join, when the
	// requester leaves, is lost, or the service closes.
	Leave(ctx context.Context, id SessionID) error
}

// JoinResult is what a successful SessionHandler.Join reports.
type JoinResult struct {
	// RayAddress is the address (IP or host:port) of the worker's Ray node.
	// Default (empty): the source's Capabilities.RayAddress.
	RayAddress string
}

// ClusterService is the worker side of ClusterProtocol: it accepts joins
// within what the worker advertises and its session limit, runs each
// session's heartbeats on its stream, and calls the SessionHandler.
type ClusterService struct {
	host   host.Host
	cfg    ClusterConfig
	ctx    context.Context // ends at Close: cancels pending joins
	cancel context.CancelFunc
	wg     sync.WaitGroup // one per stream being served

	mu       sync.Mutex
	sessions map[SessionID]*workerSession // pending and active
	closed   bool
}

// workerSession is one session as the worker holds it.
type workerSession struct {
	id   SessionID
	peer peer.ID
	st   network.Stream
	// interval is the negotiated heartbeat interval.
	interval time.Duration
	active   bool       // joined and accepted; guarded by ClusterService.mu
	wmu      sync.Mutex // serialises writes on st
}

// clusterStreamMemory is reserved per stream: one message in, one out.
const clusterStreamMemory = 2 * MaxClusterMessageSize

// NewClusterService registers the ClusterProtocol handler on h. It needs
// WithSessionHandler and WithClusterSource. Close ends every session and
// removes the handler.
func NewClusterService(h host.Host, opts ...ClusterOption) (*ClusterService, error) {
	cfg, err := newClusterConfig(opts)
	if err != nil {
		return nil, err
	}
	if cfg.Handler == nil || cfg.Source == nil {
		return nil, fmt.Errorf("%w: a cluster service needs a session handler and a capability source", ErrInvalidConfig)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &ClusterService{host: h, cfg: cfg, ctx: ctx, cancel: cancel, sessions: map[SessionID]*workerSession{}}
	h.SetStreamHandler(ClusterProtocol, s.handle)
	return s, nil
}

// ActiveSessions is the number of sessions holding a slot (joining or
// joined); a CapabilitySource can report it as ActiveSessions.
func (s *ClusterService) ActiveSessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Close refuses new joins, tells every requester the worker is leaving, calls
// Leave for every joined session, and returns when all streams are done. It
// is idempotent.
func (s *ClusterService) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var active []*workerSession
	for _, ws := range s.sessions {
		if ws.active {
			active = append(active, ws)
		}
	}
	s.mu.Unlock()
	s.host.RemoveStreamHandler(ClusterProtocol)
	s.cancel()
	for _, ws := range active {
		bye := &pb.ClusterReply{Body: &pb.ClusterReply_Left{Left: &pb.Leave{Reason: "worker shutting down"}}}
		ws.write(bye, s.cfg.Timeout) // best effort
		ws.st.Close()                // unblocks the session's read; it calls Leave
	}
	s.wg.Wait()
	return nil
}

// track counts a stream being served, unless the service is closed.
func (s *ClusterService) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

func (s *ClusterService) handle(st network.Stream) {
	if !s.track() {
		st.Reset()
		return
	}
	defer s.wg.Done()
	if err := attachScope(st, ClusterServiceName); err != nil {
		s.cfg.Logger.Debug("cluster: refused stream", "peer", st.Conn().RemotePeer(), "err", err)
		st.Reset()
		return
	}
	defer st.Scope().ReleaseMemory(clusterStreamMemory)
	r := newClusterReader(st)
	ws := s.negotiate(st, r)
	if ws == nil {
		return
	}
	tag := "edgellm-cluster-" + ws.id.String()
	s.host.ConnManager().Protect(ws.peer, tag)
	defer s.host.ConnManager().Unprotect(ws.peer, tag)
	s.serveSession(ws, r)
}

// attachScope puts a cluster stream under its resource-manager service and
// reserves its memory.
func attachScope(st network.Stream, service string) error {
	if err := st.Scope().SetService(service); err != nil {
		return fmt.Errorf("attach to service: %w", err)
	}
	if err := st.Scope().ReserveMemory(clusterStreamMemory, network.ReservationPriorityAlways); err != nil {
		return fmt.Errorf("reserve memory: %w", err)
	}
	return nil
}

// negotiate reads the join, decides, joins and answers. It returns the
// accepted session, or nil once it has refused (and closed) or reset st.
func (s *ClusterService) negotiate(st network.Stream, r *clusterReader) *workerSession {
	p := st.Conn().RemotePeer()
	log := s.cfg.Logger.With("peer", p)
	if err := st.SetDeadline(time.Now().Add(s.cfg.Timeout)); err != nil {
		st.Reset()
		return nil
	}
	req, err := readJoin(r)
	var refused *RefusedError
	if err != nil && !errors.As(err, &refused) {
		log.Debug("cluster: no join request", "err", err)
		st.Reset()
		return nil
	}
	ws := &workerSession{id: req.SessionID, peer: p, st: st, interval: req.HeartbeatInterval}
	var res JoinResult
	if refused == nil {
		res, refused = s.admitAndJoin(ws, req)
	}
	if refused != nil {
		log.Debug("cluster: refused join", "session", req.SessionID, "reason", reasonName(refused.Reason), "msg", refused.Message)
		s.sendRefusal(ws, refused)
		return nil
	}
	if err := s.accept(ws, res); err != nil {
		log.Debug("cluster: accept not delivered", "session", ws.id, "err", err)
		st.Reset()
		s.endSession(ws, "accept not delivered")
		return nil
	}
	return ws
}

// readJoin reads the first message of a stream, which must be a valid join.
// A malformed one gives a *RefusedError; an I/O error comes back as it is.
func readJoin(r *clusterReader) (JoinRequest, error) {
	m, err := readClusterMessage(r)
	switch {
	case errors.Is(err, ErrClusterMessageTooLarge) || errors.Is(err, ErrInvalidClusterMessage):
		return JoinRequest{}, refuse(RefuseMalformed, "%v", err)
	case err != nil:
		return JoinRequest{}, err
	case m.GetJoin() == nil:
		return JoinRequest{}, refuse(RefuseMalformed, "the first message must be a join")
	}
	req, err := joinRequestFromProto(m.GetJoin())
	if err != nil {
		return req, refuse(RefuseMalformed, "%v", err)
	}
	return req, nil
}

// admitAndJoin applies the acceptance rules, takes a slot and runs the
// handler's Join. On refusal the slot is free again.
func (s *ClusterService) admitAndJoin(ws *workerSession, req JoinRequest) (JoinResult, *RefusedError) {
	ctx, cancel := context.WithDeadline(s.ctx, req.Deadline)
	defer cancel()
	caps, err := s.capabilities(ctx)
	if err != nil {
		return JoinResult{}, refuse(RefuseJoinFailed, "worker capabilities unavailable: %v", err)
	}
	if r := checkJoin(&req, caps.Models, time.Now(), s.bounds()); r != nil {
		return JoinResult{}, r
	}
	if r := s.reserve(ws, s.limit(caps)); r != nil {
		return JoinResult{}, r
	}
	sess := Session{JoinRequest: req, Peer: ws.peer, ResourceName: ResourceName(s.host.ID())}
	res, err := s.cfg.Handler.Join(ctx, sess)
	if err != nil {
		s.release(ws)
		if s.ctx.Err() != nil {
			return res, refuse(RefuseShuttingDown, "worker shutting down")
		}
		return res, refuse(RefuseJoinFailed, "%v", err)
	}
	if res.RayAddress == "" {
		res.RayAddress = caps.RayAddress
	}
	if res.RayAddress == "" || checkString(res.RayAddress) != nil {
		s.endSession(ws, "no usable Ray address")
		return res, refuse(RefuseJoinFailed, "worker has no usable Ray address")
	}
	return res, nil
}

func (s *ClusterService) capabilities(ctx context.Context) (Capabilities, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	return s.cfg.Source.Capabilities(ctx)
}

func (s *ClusterService) bounds() joinBounds {
	return joinBounds{maxWait: s.cfg.MaxJoinWait, minHeartbeat: s.cfg.MinHeartbeat, maxHeartbeat: s.cfg.MaxHeartbeat}
}

// limit is the session limit: the option, else the advertised one, else 1.
func (s *ClusterService) limit(caps Capabilities) int {
	switch {
	case s.cfg.MaxSessions > 0:
		return s.cfg.MaxSessions
	case caps.MaxSessions > 0:
		return int(caps.MaxSessions)
	}
	return 1
}

// reserve takes a slot for ws unless the service is closed, the id is in use
// or the limit is reached.
func (s *ClusterService) reserve(ws *workerSession, limit int) *RefusedError {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch _, dup := s.sessions[ws.id]; {
	case s.closed:
		return refuse(RefuseShuttingDown, "worker shutting down")
	case dup:
		return refuse(RefuseDuplicateSession, "session %s already exists", ws.id)
	case len(s.sessions) >= limit:
		return refuse(RefuseAtCapacity, "worker is at its limit of %d sessions", limit)
	}
	s.sessions[ws.id] = ws
	s.changed()
	return nil
}

// changed tells OnSessionsChanged, without blocking the caller.
func (s *ClusterService) changed() {
	if f := s.cfg.OnSessionsChanged; f != nil {
		go f()
	}
}

// release frees ws's slot (without Leave: for a Join that failed).
func (s *ClusterService) release(ws *workerSession) {
	s.mu.Lock()
	delete(s.sessions, ws.id)
	s.mu.Unlock()
	s.changed()
}

// accept answers with JoinAccepted and marks ws active. A service closed
// during the join gets no accept: Close could not have told this requester.
// The write lock is held throughout, so Close's goodbye comes after the
// accept.
func (s *ClusterService) accept(ws *workerSession, res JoinResult) error {
	ws.wmu.Lock()
	defer ws.wmu.Unlock()
	s.mu.Lock()
	closed := s.closed
	ws.active = !closed
	s.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return ws.writeLocked(&pb.ClusterReply{Body: &pb.ClusterReply_Accepted{Accepted: &pb.JoinAccepted{
		SessionId: ws.id[:], RayAddress: res.RayAddress, ResourceName: ResourceName(s.host.ID()),
	}}}, s.cfg.Timeout)
}

// sendRefusal answers with JoinRefused and closes the stream. Close (not
// Reset) lets the answer reach the requester even with unread input left.
func (s *ClusterService) sendRefusal(ws *workerSession, r *RefusedError) {
	msg := &pb.ClusterReply{Body: &pb.ClusterReply_Refused{Refused: &pb.JoinRefused{Reason: r.Reason, Message: r.Message}}}
	if err := ws.write(msg, s.cfg.Timeout); err != nil {
		ws.st.Reset()
		return
	}
	ws.st.Close()
}

// write sends one reply with a write deadline of timeout.
func (ws *workerSession) write(m *pb.ClusterReply, timeout time.Duration) error {
	ws.wmu.Lock()
	defer ws.wmu.Unlock()
	return ws.writeLocked(m, timeout)
}

func (ws *workerSession) writeLocked(m *pb.ClusterReply, timeout time.Duration) error {
	if err := ws.st.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	return writeClusterMsg(ws.st, m)
}
