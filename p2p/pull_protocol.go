package p2p

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio/pbio"
	ma "github.com/multiformats/go-multiaddr"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// PullProtocol: one PullRequest (a model some holder shares, with the
// holders' IPFS addresses), then, once the worker has pulled it and serves
// it or refused, one PullReply; both sides close. Only workers started with
// --accept-pulls answer it (their record says AcceptPulls). Like every
// swarm protocol it runs only between members, bounded in size and time.
//
// Decisions: the reply waits for the pull (the requester re-plans only then,
// and a refusal reaches it with its reason); a worker runs at most one pull
// at a time (another request meanwhile is refused as busy); a request that
// names no holder is refused before anything is fetched.
const (
	PullProtocol protocol.ID = "/edgellm/pull/1.0.0"
	// PullServiceName is the resource-manager service of PullProtocol.
	PullServiceName = "edgellm.pull"
	// MaxPullRequestSize caps a PullRequest: three strings and up to
	// maxIPFSAddrs addresses of maxAddrLen bytes, plus framing.
	MaxPullRequestSize = 8 << 10
	// MaxPullReplySize caps a PullReply (a refusal's reason).
	MaxPullReplySize = 1 << 10
	// DefaultPullTimeout bounds one pull exchange on either side: fetching
	// and installing a model takes minutes for a large one.
	DefaultPullTimeout = 10 * time.Minute
	// maxPullStreamsPerPeer caps one member's pull requests in flight.
	maxPullStreamsPerPeer = 1
)

var (
	// ErrInvalidPullMessage: a pull request or reply out of protocol (no
	// holder, a bad address or string, undecodable).
	ErrInvalidPullMessage = errors.New("invalid pull message")
	// ErrPullRefused: the worker answered but did not pull the model (over
	// its disk budget, busy with another pull, the fetch failed). The error
	// text carries its reason.
	ErrPullRefused = errors.New("pull refused")
)

// PullAsk is a checked PullRequest.
type PullAsk struct {
	ModelID, DirCID, WeightsCID string
	// Holders are the holders' IPFS dial addresses (with /p2p).
	Holders []ma.Multiaddr
}

// PullHandler is the worker's boundary to its model store: the CLI pulls
// with `model pull`'s code, then serves the model.
type PullHandler interface {
	// Pull fetches, verifies and installs the model, then serves it (the
	// worker's record lists it before Pull returns). An error is sent to the
	// requester as a refusal (its text, truncated).
	Pull(ctx context.Context, from peer.ID, ask PullAsk) error
}

// PullService answers PullProtocol through a PullHandler, one pull at a time.
type PullService struct {
	*streamService
	handler PullHandler
	timeout time.Duration
	pulling sync.Mutex // held while a pull runs
}

// NewPullService registers the PullProtocol handler on h; timeout bounds one
// pull (0: DefaultPullTimeout), log may be nil. Close removes it.
func NewPullService(h host.Host, handler PullHandler, timeout time.Duration, log *slog.Logger) (*PullService, error) {
	if handler == nil {
		return nil, fmt.Errorf("%w: a pull service needs a handler", ErrInvalidConfig)
	}
	if timeout < 0 {
		return nil, fmt.Errorf("%w: pull timeout %s", ErrInvalidConfig, timeout)
	}
	if timeout == 0 {
		timeout = DefaultPullTimeout
	}
	s := &PullService{handler: handler, timeout: timeout}
	s.streamService = newStreamService(h, PullProtocol, "pull", log, s.serve)
	s.start()
	return s, nil
}

func (s *PullService) serve(st network.Stream) error {
	if err := reserveStream(st, PullServiceName, MaxPullRequestSize+MaxPullReplySize); err != nil {
		return err
	}
	defer st.Scope().ReleaseMemory(MaxPullRequestSize + MaxPullReplySize)
	if err := st.SetDeadline(time.Now().Add(s.timeout)); err != nil {
		return err
	}
	var req pb.PullRequest
	if err := pbio.NewDelimitedReader(st, MaxPullRequestSize).ReadMsg(&req); err != nil {
		return fmt.Errorf("%w: read request: %v", ErrInvalidPullMessage, err)
	}
	ask, err := checkPullRequest(&req)
	if err != nil {
		return err
	}
	reply := &pb.PullReply{}
	if err := s.pull(st.Conn().RemotePeer(), ask); err != nil {
		reply.Refused = truncate(err.Error(), maxReasonLen)
	}
	return pbio.NewDelimitedWriter(st).WriteMsg(reply)
}

// pull runs the handler unless another pull is running.
func (s *PullService) pull(from peer.ID, ask PullAsk) error {
	if !s.pulling.TryLock() {
		return errors.New("busy pulling another model; ask again later")
	}
	defer s.pulling.Unlock()
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	defer cancel()
	s.log.Info("pulling a model on request", "peer", from, "model", ask.ModelID, "dir_cid", ask.DirCID)
	return s.handler.Pull(ctx, from, ask)
}

// checkPullRequest refuses a request without a model, a directory CID or a
// holder, with a string or address out of bounds.
func checkPullRequest(req *pb.PullRequest) (PullAsk, error) {
	bad := func(format string, args ...any) (PullAsk, error) {
		return PullAsk{}, fmt.Errorf("%w: %s", ErrInvalidPullMessage, fmt.Sprintf(format, args...))
	}
	for _, v := range []string{req.GetModelId(), req.GetDirCid(), req.GetWeightsCid()} {
		if v == "" || checkString(v) != nil {
			return bad("empty, long or non-UTF-8 model id or CID")
		}
	}
	if len(req.GetHolderAddrs()) == 0 || len(req.GetHolderAddrs()) > maxIPFSAddrs {
		return bad("%d holder addresses; want 1 to %d", len(req.GetHolderAddrs()), maxIPFSAddrs)
	}
	ask := PullAsk{ModelID: req.GetModelId(), DirCID: req.GetDirCid(), WeightsCID: req.GetWeightsCid()}
	for _, b := range req.GetHolderAddrs() {
		if len(b) > maxAddrLen {
			return bad("holder address over %d bytes", maxAddrLen)
		}
		a, err := ma.NewMultiaddrBytes(b)
		if err != nil {
			return bad("holder address: %v", err)
		}
		if _, err := a.ValueForProtocol(ma.P_P2P); err != nil {
			return bad("holder address %s has no /p2p", a)
		}
		ask.Holders = append(ask.Holders, a)
	}
	return ask, nil
}

// AskPull asks worker p to pull and serve the model ask names, within
// timeout (0: DefaultPullTimeout); it returns once the worker serves it. A
// refusal is ErrPullRefused with the worker's reason.
func AskPull(ctx context.Context, h host.Host, p peer.ID, ask PullAsk, timeout time.Duration) error {
	req := &pb.PullRequest{ModelId: ask.ModelID, DirCid: ask.DirCID, WeightsCid: ask.WeightsCID}
	for _, a := range ask.Holders {
		req.HolderAddrs = append(req.HolderAddrs, a.Bytes())
	}
	if _, err := checkPullRequest(req); err != nil {
		return err
	}
	if timeout <= 0 {
		timeout = DefaultPullTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	st, err := h.NewStream(ctx, p, PullProtocol)
	if err != nil {
		return err
	}
	reply, err := exchangePull(ctx, st, req)
	if err != nil {
		st.Reset()
		return err
	}
	st.Close()
	if r := reply.GetRefused(); r != "" {
		return fmt.Errorf("%w: %s", ErrPullRefused, r)
	}
	return nil
}

func exchangePull(ctx context.Context, st network.Stream, req *pb.PullRequest) (*pb.PullReply, error) {
	if err := reserveStream(st, PullServiceName, MaxPullReplySize); err != nil {
		return nil, err
	}
	defer st.Scope().ReleaseMemory(MaxPullReplySize)
	deadline, _ := ctx.Deadline()
	if err := st.SetDeadline(deadline); err != nil {
		return nil, err
	}
	if err := pbio.NewDelimitedWriter(st).WriteMsg(req); err != nil {
		return nil, fmt.Errorf("write pull request: %w", err)
	}
	if err := st.CloseWrite(); err != nil {
		return nil, err
	}
	var reply pb.PullReply
	if err := pbio.NewDelimitedReader(st, MaxPullReplySize).ReadMsg(&reply); err != nil {
		return nil, fmt.Errorf("%w: read reply: %v", ErrInvalidPullMessage, err)
	}
	if checkString(reply.GetRefused()) != nil {
		return nil, fmt.Errorf("%w: refusal text too long or not UTF-8", ErrInvalidPullMessage)
	}
	return &reply, nil
}
