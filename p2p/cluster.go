package p2p

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio"
	"google.golang.org/protobuf/proto"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// The cluster negotiation protocol (docs/architecture.md, request path steps
// 3, 6 and 7). The worker side is ClusterService (cluster_worker.go), the requester
// side ClusterClient (cluster_requester.go); the messages are
// edgellm.v1.ClusterMessage and edgellm.v1.ClusterReply (proto/cluster.proto).
//
// It runs only between members of one private swarm: the host's pnet gate
// (see doc.go) keeps everyone else from opening a stream at all, so the
// protocol adds no authentication of its own. The Ray token it carries is
// sent only over this Noise-encrypted stream.
const (
	// ClusterProtocol negotiates one session per stream: a join, then
	// heartbeats, then a leave.
	ClusterProtocol protocol.ID = "/edgellm/cluster/1.0.0"
	// ClusterServiceName is the resource-manager service of ClusterProtocol.
	ClusterServiceName = "edgellm.cluster"
	// MaxClusterMessageSize caps one ClusterMessage or ClusterReply (bytes).
	MaxClusterMessageSize = 4 << 10

	// SessionIDLen and RayTokenLen are the exact sizes of those fields.
	SessionIDLen = 16
	RayTokenLen  = 32

	// Defaults of the requester and the worker. Misses x interval (4 s) is
	// how long a silent worker (a cut link: no reset, no FIN) takes to count
	// as lost, the first part of a failover's delay (TestHosts measures it;
	// it was 2 s x 3). A heartbeat is a few bytes a second; four missed in a
	// row is far beyond a loaded machine's scheduling delays, and a worker
	// accepts intervals down to DefaultMinHeartbeatInterval.
	DefaultHeartbeatInterval = time.Second
	DefaultHeartbeatMisses   = 4
	DefaultJoinTimeout       = time.Minute
	DefaultMaxJoinWait       = 5 * time.Minute
	DefaultClusterIOTimeout  = 10 * time.Second
	// DefaultMaxSessionLifetime is how long a worker keeps one session at
	// most, whatever its requester does (hardening: a requester cannot hold
	// a volunteer's machine for ever; serve's warm clusters re-form).
	DefaultMaxSessionLifetime = 24 * time.Hour

	// The bounds a worker accepts for the heartbeat interval by default.
	DefaultMinHeartbeatInterval = time.Second
	DefaultMaxHeartbeatInterval = time.Minute

	maxReasonLen = maxStringLen // a refusal's or a leave's text
)

// RefuseReason says why a worker refused a join (edgellm.v1.RefuseReason).
type RefuseReason = pb.RefuseReason

// The refusal reasons.
const (
	RefuseMalformed         = pb.RefuseReason_REFUSE_REASON_MALFORMED
	RefuseUnknownModel      = pb.RefuseReason_REFUSE_REASON_UNKNOWN_MODEL
	RefuseWrongWeights      = pb.RefuseReason_REFUSE_REASON_WRONG_WEIGHTS
	RefuseLayerRange        = pb.RefuseReason_REFUSE_REASON_LAYER_RANGE
	RefuseAtCapacity        = pb.RefuseReason_REFUSE_REASON_AT_CAPACITY
	RefuseDeadline          = pb.RefuseReason_REFUSE_REASON_DEADLINE
	RefuseHeartbeatInterval = pb.RefuseReason_REFUSE_REASON_HEARTBEAT_INTERVAL
	RefuseDuplicateSession  = pb.RefuseReason_REFUSE_REASON_DUPLICATE_SESSION
	RefuseJoinFailed        = pb.RefuseReason_REFUSE_REASON_JOIN_FAILED
	RefuseShuttingDown      = pb.RefuseReason_REFUSE_REASON_SHUTTING_DOWN
)

// RefusedError is a worker's refusal of a join, as the requester sees it. It
// wraps ErrJoinRefused; errors.As gives the reason.
type RefusedError struct {
	Reason  RefuseReason
	Message string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%s: %s: %s", ErrJoinRefused, reasonName(e.Reason), e.Message)
}

// Unwrap returns ErrJoinRefused.
func (e *RefusedError) Unwrap() error { return ErrJoinRefused }

func refuse(r RefuseReason, format string, args ...any) *RefusedError {
	return &RefusedError{Reason: r, Message: truncate(fmt.Sprintf(format, args...), maxReasonLen)}
}

// reasonName is the enum name without its prefix, e.g. "UNKNOWN_MODEL".
func reasonName(r RefuseReason) string {
	const prefix = "REFUSE_REASON_"
	s := r.String()
	if len(s) > len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):]
	}
	return s
}

// SessionID names a session on both sides: 16 random bytes.
type SessionID [SessionIDLen]byte

// NewSessionID returns a fresh random session id.
func NewSessionID() SessionID {
	var id SessionID
	rand.Read(id[:]) // never fails (crypto/rand since Go 1.24)
	return id
}

func (id SessionID) String() string { return hex.EncodeToString(id[:]) }

// RayToken is a session's Ray authentication token: 32 random bytes. Its
// String and GoString redact it, so it never reaches a log by accident; Hex
// gives the value (what RAY_AUTH_TOKEN should be set to).
type RayToken [RayTokenLen]byte

// NewRayToken returns a fresh random token.
func NewRayToken() RayToken {
	var t RayToken
	rand.Read(t[:])
	return t
}

// Hex is the token in lower-case hex (64 characters).
func (t RayToken) Hex() string { return hex.EncodeToString(t[:]) }

func (t RayToken) String() string   { return "RayToken(redacted)" }
func (t RayToken) GoString() string { return t.String() }

// JoinRequest is what a requester asks of one worker.
type JoinRequest struct {
	SessionID  SessionID
	Model      string // short model id, as advertised
	WeightsCID string // CID of the weights, as advertised
	Layers     LayerRange
	// HeadAddress is host:port of the requester's Ray head.
	HeadAddress string
	RayToken    RayToken
	// Deadline by which the worker must have joined. Default (zero): now plus
	// the client's join timeout.
	Deadline time.Time
	// HeartbeatInterval: how often the requester sends heartbeats. Default
	// (zero): the client's interval.
	HeartbeatInterval time.Duration
}

func (r *JoinRequest) toProto() *pb.ClusterMessage {
	return &pb.ClusterMessage{Body: &pb.ClusterMessage_Join{Join: &pb.JoinRequest{
		SessionId:           r.SessionID[:],
		ModelId:             r.Model,
		WeightsCid:          r.WeightsCID,
		Layers:              &pb.LayerRange{Start: r.Layers.Start, End: r.Layers.End},
		HeadAddress:         r.HeadAddress,
		RayToken:            r.RayToken[:],
		DeadlineUnixMs:      r.Deadline.UnixMilli(),
		HeartbeatIntervalMs: uint32(r.HeartbeatInterval / time.Millisecond),
	}}}
}

// joinRequestFromProto validates the fields of a received join; the
// worker's acceptance rules (checkJoin) come after.
func joinRequestFromProto(m *pb.JoinRequest) (JoinRequest, error) {
	var r JoinRequest
	if len(m.GetSessionId()) != SessionIDLen {
		return r, fmt.Errorf("session id of %d bytes, want %d", len(m.GetSessionId()), SessionIDLen)
	}
	if len(m.GetRayToken()) != RayTokenLen {
		return r, fmt.Errorf("ray token of %d bytes, want %d", len(m.GetRayToken()), RayTokenLen)
	}
	copy(r.SessionID[:], m.GetSessionId())
	copy(r.RayToken[:], m.GetRayToken())
	r.Model, r.WeightsCID, r.HeadAddress = m.GetModelId(), m.GetWeightsCid(), m.GetHeadAddress()
	r.Layers = LayerRange{Start: m.GetLayers().GetStart(), End: m.GetLayers().GetEnd()}
	r.Deadline = time.UnixMilli(m.GetDeadlineUnixMs())
	r.HeartbeatInterval = time.Duration(m.GetHeartbeatIntervalMs()) * time.Millisecond
	return r, r.validate()
}

// validate checks what any worker would refuse regardless of its state.
func (r *JoinRequest) validate() error {
	switch {
	case r.Model == "" || r.WeightsCID == "":
		return errors.New("empty model id or weights CID")
	case checkString(r.Model) != nil || checkString(r.WeightsCID) != nil:
		return errors.New("model id or weights CID too long or not UTF-8")
	case r.Layers.Start >= r.Layers.End || r.Layers.End > maxLayers:
		return fmt.Errorf("empty or impossible layer range [%d,%d)", r.Layers.Start, r.Layers.End)
	case r.Deadline.UnixMilli() <= 0:
		return errors.New("no deadline")
	case r.HeartbeatInterval <= 0:
		return errors.New("no heartbeat interval")
	}
	return checkHostPort(r.HeadAddress)
}

// checkHostPort accepts host:port with a non-empty host (a name or an IP that
// is not unspecified or multicast) and a port in 1..65535.
func checkHostPort(s string) error {
	if checkString(s) != nil {
		return errors.New("head address too long or not UTF-8")
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("head address %q: %v", s, err)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("head address %q: bad port", s)
	}
	if host == "" {
		return fmt.Errorf("head address %q: no host", s)
	}
	if ip, err := netip.ParseAddr(host); err == nil && (ip.IsUnspecified() || ip.IsMulticast()) {
		return fmt.Errorf("head address %q: not a unicast address", s)
	}
	return nil
}

// Session is an accepted join, as the worker's SessionHandler sees it.
type Session struct {
	JoinRequest
	// Peer is the requester.
	Peer peer.ID
	// ResourceName is the custom Ray resource the worker's Ray node must
	// carry: "peer:<this worker's peer id>", so the requester's engine can
	// place this peer's stage on it.
	ResourceName string
}

// ResourceName is the custom Ray resource naming peer p.
func ResourceName(p peer.ID) string { return "peer:" + p.String() }

// clusterReader reads size-capped length-delimited protobuf messages.
type clusterReader struct{ r msgio.ReadCloser }

func newClusterReader(r io.Reader) *clusterReader {
	return &clusterReader{r: msgio.NewVarintReaderSize(r, MaxClusterMessageSize)}
}

// read reads one message into m. An oversized length prefix gives
// ErrClusterMessageTooLarge, undecodable bytes ErrInvalidClusterMessage; I/O
// errors (EOF, reset, deadline) come back as they are.
func (c *clusterReader) read(m proto.Message) error {
	msg, err := c.r.ReadMsg()
	if err != nil {
		if errors.Is(err, msgio.ErrMsgTooLarge) {
			return fmt.Errorf("%w: over %d bytes", ErrClusterMessageTooLarge, MaxClusterMessageSize)
		}
		return err
	}
	defer c.r.ReleaseMsg(msg)
	if err := proto.Unmarshal(msg, m); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidClusterMessage, err)
	}
	return nil
}

// writeClusterMsg writes one length-delimited message.
func writeClusterMsg(w io.Writer, m proto.Message) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	if len(b) > MaxClusterMessageSize {
		return fmt.Errorf("%w: %d bytes", ErrClusterMessageTooLarge, len(b))
	}
	return msgio.NewVarintWriter(w).WriteMsg(b)
}

// readClusterMessage reads one requester message (the worker's decoder).
func readClusterMessage(r *clusterReader) (*pb.ClusterMessage, error) {
	var m pb.ClusterMessage
	if err := r.read(&m); err != nil {
		return nil, err
	}
	if m.GetBody() == nil {
		return nil, fmt.Errorf("%w: empty message", ErrInvalidClusterMessage)
	}
	if l := m.GetLeave(); l != nil && checkString(l.GetReason()) != nil {
		return nil, fmt.Errorf("%w: leave reason too long or not UTF-8", ErrInvalidClusterMessage)
	}
	return &m, nil
}

// readClusterReply reads one worker reply (the requester's decoder).
func readClusterReply(r *clusterReader) (*pb.ClusterReply, error) {
	var m pb.ClusterReply
	if err := r.read(&m); err != nil {
		return nil, err
	}
	if err := checkReply(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidClusterMessage, err)
	}
	return &m, nil
}

func checkReply(m *pb.ClusterReply) error {
	switch b := m.GetBody().(type) {
	case nil:
		return errors.New("empty reply")
	case *pb.ClusterReply_Accepted:
		a := b.Accepted
		if len(a.GetSessionId()) != SessionIDLen || a.GetRayAddress() == "" {
			return errors.New("accept without session id or Ray address")
		}
		if checkString(a.GetRayAddress()) != nil || checkString(a.GetResourceName()) != nil {
			return errors.New("accept with a bad Ray address or resource name")
		}
	case *pb.ClusterReply_Refused:
		if checkString(b.Refused.GetMessage()) != nil {
			return errors.New("refusal text too long or not UTF-8")
		}
	case *pb.ClusterReply_Left:
		if checkString(b.Left.GetReason()) != nil {
			return errors.New("leave reason too long or not UTF-8")
		}
	}
	return nil
}

// truncate cuts s to at most n bytes on a rune boundary and makes it UTF-8.
func truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= n {
		return s
	}
	for n > 0 && !isRuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
