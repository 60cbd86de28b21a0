package p2p

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio/pbio"
	"google.golang.org/protobuf/proto"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// KVProtocol: one KVManifestRequest (a weights CID and up to MaxKVKeys
// chained block keys), one KVManifestReply (a manifest of the leading keys
// the peer holds, or a refusal), then both sides close. Like every swarm
// protocol it runs only between members (the pnet gate), bounded in size
// and time; a peer that sends anything else gets a stream reset.
const (
	KVProtocol protocol.ID = "/edgellm/kv/1.0.0"
	// KVServiceName is the resource-manager service of KVProtocol.
	KVServiceName = "edgellm.kv"
	// MaxKVManifestSize caps a manifest (as GenerateRequest.kv_manifest).
	MaxKVManifestSize = 1 << 20
	// MaxKVRequestSize caps a KVManifestRequest: MaxKVKeys keys plus framing
	// and a CID.
	MaxKVRequestSize = 160 << 10
	// MaxKVReplySize caps a KVManifestReply.
	MaxKVReplySize = MaxKVManifestSize + 4<<10
	// DefaultKVTimeout bounds one exchange on either side.
	DefaultKVTimeout = 10 * time.Second
)

var (
	// ErrInvalidKVMessage: a KV request or reply out of protocol (bad key
	// length, too many keys, inconsistent counts, undecodable).
	ErrInvalidKVMessage = errors.New("invalid kv message")
	// ErrKVRefused: the peer answered but cannot serve the request (no KV
	// cache, another model). The error text carries its reason.
	ErrKVRefused = errors.New("kv request refused")
)

// KVManifest is what a KVHandler answers: a manifest JSON of the leading
// Blocks keys (empty and 0 when it holds none).
type KVManifest struct {
	Manifest []byte
	Blocks   int
}

// KVHandler is the worker's boundary to its KV store: the CLI implements it
// with the backend's BlockManifest.
type KVHandler interface {
	// Manifest returns a manifest of the leading keys (already checked: 1 to
	// MaxKVKeys of KVKeyLen bytes) this peer holds for the model weightsCID.
	// An error is sent to the requester as a refusal (its text, truncated).
	Manifest(ctx context.Context, from peer.ID, weightsCID string, keys [][]byte) (KVManifest, error)
}

// KVService answers KVProtocol through a KVHandler.
type KVService struct {
	*streamService
	handler KVHandler
	timeout time.Duration
}

// NewKVService registers the KVProtocol handler on h; timeout bounds one
// exchange (0: DefaultKVTimeout), log may be nil. Close removes it.
func NewKVService(h host.Host, handler KVHandler, timeout time.Duration, log *slog.Logger) (*KVService, error) {
	if handler == nil {
		return nil, fmt.Errorf("%w: a kv service needs a handler", ErrInvalidConfig)
	}
	if timeout < 0 {
		return nil, fmt.Errorf("%w: kv timeout %s", ErrInvalidConfig, timeout)
	}
	if timeout == 0 {
		timeout = DefaultKVTimeout
	}
	s := &KVService{handler: handler, timeout: timeout}
	s.streamService = newStreamService(h, KVProtocol, "kv", log, s.serve)
	s.start()
	return s, nil
}

func (s *KVService) serve(st network.Stream) error {
	if err := reserveStream(st, KVServiceName, MaxKVRequestSize+MaxKVReplySize); err != nil {
		return err
	}
	defer st.Scope().ReleaseMemory(MaxKVRequestSize + MaxKVReplySize)
	if err := st.SetDeadline(time.Now().Add(s.timeout)); err != nil {
		return err
	}
	req, err := readKVRequest(st)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	defer cancel()
	m, err := s.handler.Manifest(ctx, st.Conn().RemotePeer(), req.GetWeightsCid(), req.GetKeys())
	reply := &pb.KVManifestReply{}
	switch {
	case err != nil:
		reply.Refused = truncate(err.Error(), maxReasonLen)
	case len(m.Manifest) > MaxKVManifestSize:
		reply.Refused = fmt.Sprintf("manifest of %d bytes is over %d", len(m.Manifest), MaxKVManifestSize)
	case m.Blocks < 0 || m.Blocks > len(req.GetKeys()) || (m.Blocks == 0) != (len(m.Manifest) == 0):
		reply.Refused = fmt.Sprintf("inconsistent manifest: %d blocks in %d bytes", m.Blocks, len(m.Manifest))
	default:
		reply.Manifest, reply.Blocks = m.Manifest, uint32(m.Blocks)
	}
	if reply.Refused == "" && reply.Blocks == 0 {
		reply.Manifest = nil
	}
	return pbio.NewDelimitedWriter(st).WriteMsg(reply)
}

// readKVRequest reads and checks one KVManifestRequest (the server's decoder).
func readKVRequest(r io.Reader) (*pb.KVManifestRequest, error) {
	var req pb.KVManifestRequest
	if err := pbio.NewDelimitedReader(r, MaxKVRequestSize).ReadMsg(&req); err != nil {
		return nil, fmt.Errorf("%w: read request: %v", ErrInvalidKVMessage, err)
	}
	if err := checkKVRequest(&req); err != nil {
		return nil, err
	}
	return &req, nil
}

func checkKVRequest(req *pb.KVManifestRequest) error {
	if req.GetWeightsCid() == "" || checkString(req.GetWeightsCid()) != nil {
		return fmt.Errorf("%w: empty, long or non-UTF-8 weights CID", ErrInvalidKVMessage)
	}
	return checkKVKeys(req.GetKeys())
}

// readKVReply reads and checks one KVManifestReply to a request of asked
// keys (the requester's decoder).
func readKVReply(r io.Reader, asked int) (*pb.KVManifestReply, error) {
	var reply pb.KVManifestReply
	if err := pbio.NewDelimitedReader(r, MaxKVReplySize).ReadMsg(&reply); err != nil {
		return nil, fmt.Errorf("%w: read reply: %v", ErrInvalidKVMessage, err)
	}
	n, size := int(reply.GetBlocks()), len(reply.GetManifest())
	switch {
	case checkString(reply.GetRefused()) != nil:
		return nil, fmt.Errorf("%w: refusal text too long or not UTF-8", ErrInvalidKVMessage)
	case reply.GetRefused() != "" && (n != 0 || size != 0):
		return nil, fmt.Errorf("%w: a refusal with a manifest", ErrInvalidKVMessage)
	case size > MaxKVManifestSize:
		return nil, fmt.Errorf("%w: manifest of %d bytes", ErrInvalidKVMessage, size)
	case n > asked || (n == 0) != (size == 0):
		return nil, fmt.Errorf("%w: %d blocks in %d bytes for %d keys", ErrInvalidKVMessage, n, size, asked)
	}
	return &reply, nil
}

// FetchKVManifest asks p for a manifest of the leading keys it holds for
// the model weightsCID, within timeout (0: DefaultKVTimeout). A peer that
// holds none answers an empty KVManifest; a refusal is ErrKVRefused.
func FetchKVManifest(ctx context.Context, h host.Host, p peer.ID, weightsCID string, keys [][]byte, timeout time.Duration) (KVManifest, error) {
	req := &pb.KVManifestRequest{WeightsCid: weightsCID, Keys: keys}
	if err := checkKVRequest(req); err != nil {
		return KVManifest{}, err
	}
	if timeout <= 0 {
		timeout = DefaultKVTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	st, err := h.NewStream(ctx, p, KVProtocol)
	if err != nil {
		return KVManifest{}, err
	}
	reply, err := exchangeKV(ctx, st, req)
	if err != nil {
		st.Reset()
		return KVManifest{}, err
	}
	st.Close()
	if r := reply.GetRefused(); r != "" {
		return KVManifest{}, fmt.Errorf("%w: %s", ErrKVRefused, r)
	}
	return KVManifest{Manifest: reply.GetManifest(), Blocks: int(reply.GetBlocks())}, nil
}

func exchangeKV(ctx context.Context, st network.Stream, req *pb.KVManifestRequest) (*pb.KVManifestReply, error) {
	if err := reserveStream(st, KVServiceName, MaxKVReplySize); err != nil {
		return nil, err
	}
	defer st.Scope().ReleaseMemory(MaxKVReplySize)
	deadline, _ := ctx.Deadline()
	if err := st.SetDeadline(deadline); err != nil {
		return nil, err
	}
	if proto.Size(req) > MaxKVRequestSize {
		return nil, fmt.Errorf("%w: request over %d bytes", ErrInvalidKVMessage, MaxKVRequestSize)
	}
	if err := pbio.NewDelimitedWriter(st).WriteMsg(req); err != nil {
		return nil, fmt.Errorf("write kv request: %w", err)
	}
	if err := st.CloseWrite(); err != nil {
		return nil, err
	}
	return readKVReply(st, len(req.GetKeys()))
}
