package p2p

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// Short intervals keep the whole cluster test set to a few seconds.
const (
	testBeat   = 50 * time.Millisecond // heartbeat interval
	testMisses = 3                     // lost after 150ms of silence
	testWait   = 5 * time.Second       // generous bound on any expected event
)

// recordingHandler stands in for the CLI's SessionHandler (the Python
// backend's Ray join, another issue's component): it records every call. At
// cleanup it checks that every successful Join got exactly one Leave.
type recordingHandler struct {
	t       testing.TB
	rayAddr string
	joinErr error

	mu     sync.Mutex
	joined map[SessionID]Session
	leaves map[SessionID]int
	left   chan SessionID
}

var _ SessionHandler = (*recordingHandler)(nil)

func newRecordingHandler(t testing.TB) *recordingHandler {
	h := &recordingHandler{t: t, rayAddr: "10.1.2.3", joined: map[SessionID]Session{},
		leaves: map[SessionID]int{}, left: make(chan SessionID, 64)}
	t.Cleanup(func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		for id := range h.joined {
			if h.leaves[id] != 1 {
				t.Errorf("session %s joined, left %d times", id, h.leaves[id])
			}
		}
		for id, n := range h.leaves {
			if _, ok := h.joined[id]; !ok {
				t.Errorf("session %s left %d times without a join", id, n)
			}
		}
	})
	return h
}

func (h *recordingHandler) Join(ctx context.Context, s Session) (JoinResult, error) {
	if h.joinErr != nil {
		return JoinResult{}, h.joinErr
	}
	h.mu.Lock()
	h.joined[s.SessionID] = s
	h.mu.Unlock()
	return JoinResult{RayAddress: h.rayAddr}, nil
}

func (h *recordingHandler) Leave(ctx context.Context, id SessionID) error {
	h.mu.Lock()
	h.leaves[id]++
	h.mu.Unlock()
	h.left <- id
	return nil
}

func (h *recordingHandler) session(id SessionID) (Session, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.joined[id]
	return s, ok
}

func (h *recordingHandler) joins() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.joined)
}

// waitLeft waits until the handler's Leave is called for id.
func (h *recordingHandler) waitLeft(id SessionID) {
	h.t.Helper()
	select {
	case got := <-h.left:
		if got != id {
			h.t.Fatalf("Leave(%s), want Leave(%s)", got, id)
		}
	case <-time.After(testWait):
		h.t.Fatalf("no Leave for session %s", id)
	}
}

// clusterHosts starts a worker host and a requester host in one private swarm
// on loopback and connects them.
func clusterHosts(t *testing.T) (worker, requester host.Host) {
	t.Helper()
	s := newSecret(t)
	mk := func() host.Host {
		h, err := NewHost(HostConfig{Identity: newKey(t), Secret: &s, ListenAddrs: []ma.Multiaddr{loopback}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		return h
	}
	worker, requester = mk(), mk()
	if err := requester.Connect(t.Context(), peer.AddrInfo{ID: worker.ID(), Addrs: worker.Addrs()}); err != nil {
		t.Fatal(err)
	}
	return worker, requester
}

// clusterCaps advertises model "m" (30 layers, weights bafk-m) holding
// layers [0,15) only, with four sessions.
func clusterCaps() Capabilities {
	c := sampleCaps("m")
	c.Models[0].LayerRanges = []LayerRange{{Start: 0, End: 15}}
	return c
}

type clusterSetup struct {
	worker, requester host.Host
	handler           *recordingHandler
	svc               *ClusterService
	client            *ClusterClient
}

// newClusterSetup starts both hosts, a worker service with a recording
// handler, and a client; both use the short test heartbeat.
func newClusterSetup(t *testing.T, opts ...ClusterOption) *clusterSetup {
	t.Helper()
	c := &clusterSetup{}
	c.worker, c.requester = clusterHosts(t)
	c.handler = newRecordingHandler(t)
	base := []ClusterOption{
		WithSessionHandler(c.handler), WithClusterSource(StaticSource(clusterCaps())),
		WithHeartbeatBounds(10*time.Millisecond, time.Minute), WithHeartbeat(testBeat, testMisses),
		WithClusterTimeout(testWait), WithLeaveTimeout(testWait),
	}
	var err error
	if c.svc, err = NewClusterService(c.worker, append(base, opts...)...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.svc.Close()
		if n := c.svc.ActiveSessions(); n != 0 {
			t.Errorf("%d sessions left after Close", n)
		}
	})
	c.client, err = NewClusterClient(c.requester, WithHeartbeat(testBeat, testMisses),
		WithClusterTimeout(testWait), WithLeaveTimeout(testWait))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.client.Close() })
	return c
}

func goodRequest() JoinRequest {
	return JoinRequest{
		SessionID: NewSessionID(), Model: "m", WeightsCID: "bafk-m", Layers: LayerRange{Start: 3, End: 15},
		HeadAddress: "127.0.0.1:6379", RayToken: NewRayToken(), Deadline: time.Now().Add(testWait),
		HeartbeatInterval: testBeat,
	}
}

func (c *clusterSetup) join(t *testing.T, req JoinRequest) *SessionHandle {
	t.Helper()
	h, err := c.client.JoinSession(t.Context(), c.worker.ID(), req)
	if err != nil {
		t.Fatalf("JoinSession: %v", err)
	}
	return h
}

func TestClusterJoinAndLeave(t *testing.T) {
	c := newClusterSetup(t)
	req := goodRequest()
	h := c.join(t, req)
	if h.RayAddress != "10.1.2.3" || h.ResourceName != "peer:"+c.worker.ID().String() || h.ID != req.SessionID {
		t.Fatalf("handle %+v", h)
	}
	s, ok := c.handler.session(req.SessionID)
	if !ok {
		t.Fatal("handler did not see the join")
	}
	if s.RayToken != req.RayToken || s.HeadAddress != req.HeadAddress || s.Layers != req.Layers ||
		s.Peer != c.requester.ID() || s.ResourceName != h.ResourceName || s.WeightsCID != "bafk-m" {
		t.Fatalf("handler saw %+v", s)
	}
	if n := c.svc.ActiveSessions(); n != 1 {
		t.Fatalf("ActiveSessions = %d", n)
	}
	if err := h.Leave(t.Context()); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	c.handler.waitLeft(req.SessionID)
	if n := c.svc.ActiveSessions(); n != 0 { // freed before the worker acknowledged
		t.Fatalf("ActiveSessions after Leave = %d", n)
	}
	select {
	case <-h.Lost():
		t.Fatal("Lost after a clean Leave")
	default:
	}
	if h.Err() != nil {
		t.Fatalf("Err after Leave = %v", h.Err())
	}
}

// Each refusal reaches the requester with its reason; the handler is never
// asked and no slot stays taken.
func TestClusterJoinRefused(t *testing.T) {
	c := newClusterSetup(t)
	cases := map[string]struct {
		edit func(*JoinRequest)
		want RefuseReason
	}{
		"unknown model":          {func(r *JoinRequest) { r.Model = "other" }, RefuseUnknownModel},
		"wrong weights":          {func(r *JoinRequest) { r.WeightsCID = "bafk-evil" }, RefuseWrongWeights},
		"range not advertised":   {func(r *JoinRequest) { r.Layers = LayerRange{Start: 10, End: 20} }, RefuseLayerRange},
		"range past the model":   {func(r *JoinRequest) { r.Layers = LayerRange{Start: 0, End: 31} }, RefuseLayerRange},
		"deadline too far":       {func(r *JoinRequest) { r.Deadline = time.Now().Add(time.Hour) }, RefuseDeadline},
		"heartbeat too slow":     {func(r *JoinRequest) { r.HeartbeatInterval = 2 * time.Minute }, RefuseHeartbeatInterval},
		"heartbeat too frequent": {func(r *JoinRequest) { r.HeartbeatInterval = time.Millisecond }, RefuseHeartbeatInterval},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			req := goodRequest()
			tc.edit(&req)
			_, err := c.client.JoinSession(t.Context(), c.worker.ID(), req)
			assertRefused(t, err, tc.want)
		})
	}
	// A deadline already past: the client will not send it, so send it raw.
	req := goodRequest()
	req.Deadline = time.Now().Add(-time.Minute)
	assertReply(t, rawExchange(t, c, encodeMsg(t, req.toProto())), RefuseDeadline)
	if n := c.handler.joins(); n != 0 || c.svc.ActiveSessions() != 0 {
		t.Fatalf("handler joined %d, %d active", n, c.svc.ActiveSessions())
	}
}

func TestClusterJoinFailed(t *testing.T) {
	c := newClusterSetup(t)
	c.handler.joinErr = errors.New("ray start: head unreachable")
	_, err := c.client.JoinSession(t.Context(), c.worker.ID(), goodRequest())
	assertRefused(t, err, RefuseJoinFailed)
	if !bytes.Contains([]byte(err.Error()), []byte("head unreachable")) {
		t.Fatalf("refusal without the handler's reason: %v", err)
	}
	if n := c.svc.ActiveSessions(); n != 0 {
		t.Fatalf("failed join holds a slot: %d", n)
	}
}

func TestClusterSessionLimit(t *testing.T) {
	c := newClusterSetup(t, WithMaxSessions(1))
	a := goodRequest()
	ha := c.join(t, a)
	_, err := c.client.JoinSession(t.Context(), c.worker.ID(), a) // same id again
	assertRefused(t, err, RefuseDuplicateSession)
	b := goodRequest()
	_, err = c.client.JoinSession(t.Context(), c.worker.ID(), b)
	assertRefused(t, err, RefuseAtCapacity)
	if err := ha.Leave(t.Context()); err != nil {
		t.Fatal(err)
	}
	c.handler.waitLeft(a.SessionID)
	hb := c.join(t, goodRequest()) // the slot is free again
	if err := hb.Leave(t.Context()); err != nil {
		t.Fatal(err)
	}
	c.handler.waitLeft(hb.ID)
}

func assertRefused(t *testing.T, err error, want RefuseReason) {
	t.Helper()
	var r *RefusedError
	if !errors.Is(err, ErrJoinRefused) || !errors.As(err, &r) {
		t.Fatalf("err = %v, want a refusal %s", err, want)
	}
	if r.Reason != want || r.Message == "" {
		t.Fatalf("refused %s %q, want %s with a message", r.Reason, r.Message, want)
	}
}

// Malformed and oversized first messages are refused as MALFORMED with a
// reason; an empty stream gets no answer. The worker stays healthy.
func TestClusterRefusesMalformed(t *testing.T) {
	c := newClusterSetup(t)
	join := func(edit func(*pb.JoinRequest)) []byte {
		r := goodRequest()
		m := r.toProto()
		edit(m.GetJoin())
		return encodeMsg(t, m)
	}
	cases := map[string][]byte{
		"length over the limit":  {0x80, 0x80, 0x40, 1, 2, 3}, // 1 MiB announced
		"length at limit plus 1": append(varint(MaxClusterMessageSize+1), make([]byte, MaxClusterMessageSize+1)...),
		"not protobuf":           append(varint(16), bytes.Repeat([]byte{0xff}, 16)...),
		"empty message":          {0x00},
		"heartbeat first":        encodeMsg(t, &pb.ClusterMessage{Body: &pb.ClusterMessage_Heartbeat{Heartbeat: &pb.Heartbeat{Seq: 1}}}),
		"short session id":       join(func(j *pb.JoinRequest) { j.SessionId = []byte{1, 2, 3} }),
		"short token":            join(func(j *pb.JoinRequest) { j.RayToken = j.RayToken[:8] }),
		"no model":               join(func(j *pb.JoinRequest) { j.ModelId = "" }),
		"invalid UTF-8 model": bytes.Replace(join(func(j *pb.JoinRequest) { j.ModelId = "m~~" }),
			[]byte("m~~"), []byte("m\xff\xfe"), 1),
		"no layers":               join(func(j *pb.JoinRequest) { j.Layers = nil }),
		"head without port":       join(func(j *pb.JoinRequest) { j.HeadAddress = "10.0.0.1" }),
		"head unspecified":        join(func(j *pb.JoinRequest) { j.HeadAddress = "0.0.0.0:6379" }),
		"head port 0":             join(func(j *pb.JoinRequest) { j.HeadAddress = "10.0.0.1:0" }),
		"no heartbeat interval":   join(func(j *pb.JoinRequest) { j.HeartbeatIntervalMs = 0 }),
		"no deadline":             join(func(j *pb.JoinRequest) { j.DeadlineUnixMs = 0 }),
		"random bytes after join": append(join(func(*pb.JoinRequest) {})[:10], randomBytes(t, 3000)...),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			assertReply(t, rawExchange(t, c, data), RefuseMalformed)
		})
	}
	t.Run("nothing", func(t *testing.T) {
		if m := rawExchange(t, c, nil); m != nil {
			t.Fatalf("answered an empty stream with %v", m)
		}
	})
	if n := c.handler.joins(); n != 0 {
		t.Fatalf("handler joined %d times on garbage", n)
	}
	h := c.join(t, goodRequest())
	h.Leave(t.Context())
	c.handler.waitLeft(h.ID)
}

func varint(n int) []byte {
	var buf bytes.Buffer
	msgio.NewVarintWriter(&buf).WriteMsg(make([]byte, n))
	return buf.Bytes()[:buf.Len()-n]
}

func encodeMsg(t testing.TB, m proto.Message) []byte {
	var buf bytes.Buffer
	if err := writeClusterMsg(&buf, m); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rawExchange writes data on a new ClusterProtocol stream, closes its write
// side, and returns the worker's reply (nil when none came).
func rawExchange(t *testing.T, c *clusterSetup, data []byte) *pb.ClusterReply {
	t.Helper()
	st, err := c.requester.NewStream(t.Context(), c.worker.ID(), ClusterProtocol)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Reset()
	st.SetDeadline(time.Now().Add(testWait))
	st.Write(data)
	st.CloseWrite()
	m, err := readClusterReply(newClusterReader(st))
	if err != nil {
		return nil
	}
	return m
}

func assertReply(t *testing.T, m *pb.ClusterReply, want RefuseReason) {
	t.Helper()
	r := m.GetRefused()
	if r == nil || r.GetReason() != want || r.GetMessage() == "" {
		t.Fatalf("reply %v, want a refusal %s with a message", m, want)
	}
}

// Heartbeats keep a session alive well past the miss window.
func TestClusterHeartbeatKeepsAlive(t *testing.T) {
	c := newClusterSetup(t)
	h := c.join(t, goodRequest())
	eventually(t, testWait, "ten heartbeat acks", func() bool { return h.acks.Load() >= 10 })
	select {
	case <-h.Done():
		t.Fatalf("session ended: %v", h.Err())
	case id := <-c.handler.left:
		t.Fatalf("worker left session %s", id)
	default:
	}
	if err := h.Leave(t.Context()); err != nil {
		t.Fatal(err)
	}
	c.handler.waitLeft(h.ID)
}

// A requester whose host goes away is detected and its session left.
func TestClusterRequesterVanishes(t *testing.T) {
	c := newClusterSetup(t)
	h := c.join(t, goodRequest())
	c.requester.Close()
	c.handler.waitLeft(h.ID)
	eventually(t, testWait, "the slot to be freed", func() bool { return c.svc.ActiveSessions() == 0 })
}

// A requester that stays connected but stops sending heartbeats is lost
// after the miss window.
func TestClusterRequesterSilent(t *testing.T) {
	c := newClusterSetup(t)
	req := goodRequest()
	st, err := c.requester.NewStream(t.Context(), c.worker.ID(), ClusterProtocol)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Reset()
	st.SetDeadline(time.Now().Add(testWait))
	st.Write(encodeMsg(t, req.toProto()))
	r := newClusterReader(st)
	if m, err := readClusterReply(r); err != nil || m.GetAccepted() == nil {
		t.Fatalf("join answer %v, %v", m, err)
	}
	c.handler.waitLeft(req.SessionID) // no heartbeat ever sent
	if _, err := readClusterReply(r); err == nil {
		t.Fatal("stream still open after the worker gave up")
	}
}

// A worker whose host goes away fires Lost.
func TestClusterWorkerVanishes(t *testing.T) {
	c := newClusterSetup(t)
	h := c.join(t, goodRequest())
	c.worker.Close()
	waitLost(t, h)
	c.handler.waitLeft(h.ID) // the worker's own side still cleans up
}

// A worker that accepts and then never answers heartbeats fires Lost after
// the miss window.
func TestClusterWorkerSilent(t *testing.T) {
	c := newClusterSetup(t)
	c.worker.SetStreamHandler(ClusterProtocol, func(st network.Stream) {
		defer st.Reset()
		r := newClusterReader(st)
		m, err := readClusterMessage(r)
		if err != nil {
			return
		}
		acc := &pb.ClusterReply{Body: &pb.ClusterReply_Accepted{Accepted: &pb.JoinAccepted{
			SessionId: m.GetJoin().GetSessionId(), RayAddress: "10.0.0.9", ResourceName: ResourceName(c.worker.ID()),
		}}}
		writeClusterMsg(st, acc)
		for { // swallow heartbeats until the requester gives up
			if _, err := readClusterMessage(r); err != nil {
				return
			}
		}
	})
	h := c.join(t, goodRequest())
	waitLost(t, h)
}

func waitLost(t *testing.T, h *SessionHandle) {
	t.Helper()
	select {
	case <-h.Lost():
	case <-time.After(testWait):
		t.Fatal("Lost did not fire")
	}
	if !errors.Is(h.Err(), ErrSessionLost) {
		t.Fatalf("Err = %v, want ErrSessionLost", h.Err())
	}
}

// Closing the worker's service tells requesters and leaves every session.
func TestClusterServiceClose(t *testing.T) {
	c := newClusterSetup(t)
	h := c.join(t, goodRequest())
	if err := c.svc.Close(); err != nil {
		t.Fatal(err)
	}
	c.handler.waitLeft(h.ID)
	waitLost(t, h)
	if !bytes.Contains([]byte(h.Err().Error()), []byte("shutting down")) {
		t.Fatalf("Err = %v, want the worker's reason", h.Err())
	}
	if _, err := c.client.JoinSession(t.Context(), c.worker.ID(), goodRequest()); err == nil {
		t.Fatal("joined a closed service")
	}
}

// Closing the client leaves its sessions cleanly.
func TestClusterClientClose(t *testing.T) {
	c := newClusterSetup(t)
	h1, h2 := c.join(t, goodRequest()), c.join(t, goodRequest())
	c.client.Close()
	for _, h := range []*SessionHandle{h1, h2} {
		<-h.Done()
		if h.Err() != nil {
			t.Fatalf("Err = %v after Close", h.Err())
		}
	}
	seen := map[SessionID]bool{<-c.handler.left: true, <-c.handler.left: true}
	if !seen[h1.ID] || !seen[h2.ID] {
		t.Fatalf("left %v", seen)
	}
	if _, err := c.client.JoinSession(t.Context(), c.worker.ID(), goodRequest()); !errors.Is(err, ErrClosed) {
		t.Fatalf("join after Close: %v", err)
	}
}

func TestClusterConfig(t *testing.T) {
	w, _ := clusterHosts(t)
	if _, err := NewClusterService(w); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("no handler: %v", err)
	}
	for i, o := range []ClusterOption{WithMaxSessions(0), WithHeartbeat(0, 3), WithHeartbeat(time.Second, 0),
		WithHeartbeatBounds(time.Second, time.Millisecond), WithClusterTimeout(-1)} {
		if _, err := NewClusterClient(w, o); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("option %d: %v", i, err)
		}
	}
	c, _ := NewClusterClient(w)
	bad := goodRequest()
	bad.HeadAddress = "nowhere"
	if _, err := c.JoinSession(t.Context(), peer.ID("x"), bad); !errors.Is(err, ErrInvalidJoinRequest) {
		t.Fatalf("bad request: %v", err)
	}
	tok := NewRayToken()
	s := fmt.Sprintf("%v %+v %#v %s", tok, Session{JoinRequest: JoinRequest{RayToken: tok}}, tok, tok)
	if bytes.Contains([]byte(s), []byte(tok.Hex())) || bytes.Contains([]byte(s), []byte(fmt.Sprint(tok[:4]))) {
		t.Fatalf("token printed: %s", s)
	}
}

// A worker re-publishes its record when its load changes: the service calls
// OnSessionsChanged when a session starts and when it ends.
func TestClusterSessionsChangedNotifies(t *testing.T) {
	changed := make(chan struct{}, 8)
	c := newClusterSetup(t, WithSessionsChanged(func() { changed <- struct{}{} }))
	wait := func(what string) {
		t.Helper()
		select {
		case <-changed:
		case <-time.After(testWait):
			t.Fatalf("no OnSessionsChanged after %s", what)
		}
	}
	h := c.join(t, goodRequest())
	wait("the join")
	if err := h.Leave(t.Context()); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	wait("the leave")
}

// A session ends at the worker's maximum lifetime, however well its
// requester heartbeats: the worker leaves and the requester sees it lost.
func TestClusterSessionLifetime(t *testing.T) {
	c := newClusterSetup(t, WithMaxSessionLifetime(300*time.Millisecond))
	h := c.join(t, goodRequest())
	c.handler.waitLeft(h.ID)
	waitLost(t, h)
	eventually(t, testWait, "the slot to be freed", func() bool { return c.svc.ActiveSessions() == 0 })
	if h.acks.Load() == 0 {
		t.Fatal("no heartbeat was answered before the lifetime ended")
	}
}

// One requester holds at most maxClusterStreamsPerPeer sessions at a worker
// (the resource manager's limit for edgellm.cluster), however many the
// worker allows: the next join fails, and the worker's slots stay free for
// others.
func TestClusterSessionsPerRequester(t *testing.T) {
	c := newClusterSetup(t, WithMaxSessions(2*maxClusterStreamsPerPeer))
	for range maxClusterStreamsPerPeer {
		c.join(t, goodRequest())
	}
	h, err := c.client.JoinSession(t.Context(), c.worker.ID(), goodRequest())
	if err == nil {
		h.Leave(t.Context())
		t.Fatalf("session %d of one requester accepted", maxClusterStreamsPerPeer+1)
	}
	if n := c.svc.ActiveSessions(); n != maxClusterStreamsPerPeer {
		t.Fatalf("%d active sessions, want %d", n, maxClusterStreamsPerPeer)
	}
}
