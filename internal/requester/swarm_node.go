package requester

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/edgellm/edgellm/internal/planner"
	"github.com/edgellm/edgellm/p2p"
)

const (
	// joinTimeout is how long a worker may take to join the Ray head
	// (starting Ray on a small machine takes tens of seconds).
	joinTimeout = 2 * time.Minute
	// leaveTimeout bounds a worker's leave.
	leaveTimeout = time.Minute
)

// NodeSwarm is the Swarm and PrefixIndex of a p2p node: discovery through
// its DHT and mDNS, joins over /edgellm/cluster/1.0.0, KV prefixes through
// its provider records and /edgellm/kv/1.0.0.
type NodeSwarm struct {
	node   *p2p.Node
	client *p2p.ClusterClient

	mu   sync.Mutex
	last []p2p.PeerInfo // the last Discover's records, for PullFor
}

var (
	_ Swarm       = (*NodeSwarm)(nil)
	_ PrefixIndex = (*NodeSwarm)(nil)
	_ Puller      = (*NodeSwarm)(nil)
)

// NewSwarm is the swarm as node sees it; log gets the cluster client's
// lines (nil: discarded). Close leaves the sessions still open; the node
// stays the caller's.
func NewSwarm(node *p2p.Node, log *slog.Logger) (*NodeSwarm, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	client, err := p2p.NewClusterClient(node.Host(), p2p.WithJoinTimeout(joinTimeout),
		p2p.WithClusterLogger(log), p2p.WithLeaveTimeout(leaveTimeout))
	if err != nil {
		return nil, err
	}
	return &NodeSwarm{node: node, client: client}, nil
}

// Discover implements Swarm: the workers whose record came directly from
// them (reachable now, RTT measured), not this node.
func (s *NodeSwarm) Discover(ctx context.Context, timeout time.Duration) []planner.Peer {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var peers []planner.Peer
	found := s.node.LookupSettled(ctx, "")
	s.mu.Lock()
	s.last = found
	s.mu.Unlock()
	for _, p := range found {
		if !p.Direct || p.Record.PeerID == s.node.ID() {
			continue // unreachable now: it could not join a cluster
		}
		peers = append(peers, p2p.PlannerPeer(p.Record, p2p.Observation{RTT: p.RTT, LAN: s.node.OnLAN(p.Record.PeerID)}))
	}
	return peers
}

// PullFor implements Puller over the last Discover's records (pulls.go).
func (s *NodeSwarm) PullFor(ctx context.Context, model string) (string, bool, error) {
	s.mu.Lock()
	found := s.last
	s.mu.Unlock()
	ask, workers, ok := pullCandidates(found, model, s.node.ID())
	if !ok {
		return "", false, nil
	}
	worker, err := askWorkers(ask, workers, func(p peer.ID) error {
		return p2p.AskPull(ctx, s.node.Host(), p, ask, 0)
	})
	if err != nil && ctx.Err() != nil {
		return "", true, cancelled(ctx, "while a worker pulled the model")
	}
	return worker, true, err
}

// Join implements Swarm.
func (s *NodeSwarm) Join(ctx context.Context, peerID string, req p2p.JoinRequest) (Member, error) {
	id, err := peer.Decode(peerID)
	if err != nil {
		return Member{}, fmt.Errorf("bad peer id %q: %w", peerID, err)
	}
	h, err := s.client.JoinSession(ctx, id, req)
	if err != nil {
		return Member{}, err
	}
	return Member{RayAddress: h.RayAddress, ResourceName: h.ResourceName, Session: h}, nil
}

// ReachableIP implements Swarm: the node's first routable IPv4.
func (s *NodeSwarm) ReachableIP() string { return p2p.ReachableIPv4(s.node.Host().Addrs()) }

// LongestCachedPrefix implements PrefixIndex.
func (s *NodeSwarm) LongestCachedPrefix(ctx context.Context, weightsCID string, keys [][]byte, skip ...peer.ID) (p2p.KVHit, error) {
	return s.node.LongestCachedPrefix(ctx, weightsCID, keys, skip...)
}

// IPFSAddrs implements PrefixIndex: the IPFS node addresses in p's
// capability record.
func (s *NodeSwarm) IPFSAddrs(ctx context.Context, p peer.ID) ([]ma.Multiaddr, error) {
	rec, _, err := s.node.FetchRecord(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("no capability record: %w", err)
	}
	addrs := rec.IPFSDialAddrs()
	if len(addrs) == 0 {
		return nil, errors.New("it advertises no IPFS node")
	}
	return addrs, nil
}

// Close leaves every session still open (a cluster leaves its own on
// Close) and refuses further joins.
func (s *NodeSwarm) Close() error { return s.client.Close() }
