package volunteer

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/edgellm/edgellm/p2p"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// backendSource adapts the backend's Status to p2p.CapabilitySource: the
// models it serves (each holdable whole; loaded, or loaded on demand when a
// session asks for it), device, memory, measured speeds and load, plus the
// operator's price, label and session limit and this peer's IPFS node.
type backendSource struct {
	b           Backend
	price       uint64
	region      string
	maxSessions uint32
	// ipfsID and ipfsAddrs are this peer's IPFS node ("" and nil: none).
	ipfsID    peer.ID
	ipfsAddrs []ma.Multiaddr

	// The node advertises as soon as it starts, before the host's addresses
	// and the cluster service exist: these two are set afterwards.
	mu         sync.Mutex
	served     []string // Options.Models, then pulled ones; nil: the loaded models only
	rayAddress string
	// acceptPulls and pullBudget are Options.AcceptPulls and
	// PullDiskBudgetBytes, for the record.
	acceptPulls bool
	pullBudget  uint64
	sessions    func() int // cluster sessions being served (nil: none)
	// dirs maps a weights CID to the model directory's CID in the IPFS
	// node, once the model is added there (shareModels).
	dirs map[string]string
}

var _ p2p.CapabilitySource = (*backendSource)(nil)

// serve sets the Ray address the record carries and what counts the
// sessions being served.
func (s *backendSource) serve(rayAddress string, sessions func() int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rayAddress, s.sessions = rayAddress, sessions
}

// shared records that the model with these weights is in the IPFS node as
// directory dir.
func (s *backendSource) shared(weightsCID, dir string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dirs == nil {
		s.dirs = map[string]string{}
	}
	s.dirs[weightsCID] = dir
}

// dirCID is the directory CID of the model with these weights ("" = not
// shared yet).
func (s *backendSource) dirCID(weightsCID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dirs[weightsCID]
}

// caps are the operator's and the IPFS node's part of the record.
func (s *backendSource) caps() p2p.Capabilities {
	s.mu.Lock()
	defer s.mu.Unlock()
	return p2p.Capabilities{MaxSessions: s.maxSessions, PricePer1kMicros: s.price, Region: s.region,
		RayAddress: s.rayAddress, IPFSPeerID: s.ipfsID, IPFSAddrs: s.ipfsAddrs,
		AcceptPulls: s.acceptPulls, PullDiskBudgetBytes: s.pullBudget}
}

// activeSessions are the cluster sessions being served.
func (s *backendSource) activeSessions() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions == nil {
		return 0
	}
	return uint32(s.sessions())
}

// Capabilities implements p2p.CapabilitySource.
func (s *backendSource) Capabilities(ctx context.Context) (p2p.Capabilities, error) {
	st, err := s.b.Status(ctx)
	if err != nil {
		return p2p.Capabilities{}, err
	}
	c := s.caps()
	c.BackendVersion, c.Device, c.Engine = st.GetBackendVersion(), st.GetDevice(), st.GetEngine()
	c.MemoryTotalBytes, c.MemoryFreeBytes = st.GetMemoryTotalBytes(), st.GetMemoryFreeBytes()
	c.PrefillTokensPerS, c.DecodeTokensPerS = st.GetPrefillTokensPerS(), st.GetDecodeTokensPerS()
	// A worker in a cluster session is busy even between requests.
	c.ActiveSessions = max(st.GetActiveRequests(), s.activeSessions())
	models, err := s.models(ctx, st.GetLoadedModels())
	if err != nil {
		return p2p.Capabilities{}, err
	}
	for _, m := range models {
		md := p2p.Model{
			ID: m.GetId(), WeightsCID: m.GetWeightsCid(), NumLayers: m.GetNumLayers(),
			WeightsBytes: m.GetWeightsBytes(), Unloaded: !m.GetLoaded(),
			LoadTime: time.Duration(m.GetLoadMs()) * time.Millisecond,
		}
		if md.NumLayers > 0 {
			md.LayerRanges = []p2p.LayerRange{{Start: 0, End: md.NumLayers}}
		}
		md.DirCID = s.dirCID(md.WeightsCID)
		c.Models = append(c.Models, md)
	}
	return c, nil
}

// models are the served models, in the order served, each marked loaded or
// not: without a served list, the loaded ones (all of them).
func (s *backendSource) models(ctx context.Context, loaded []*pb.ModelInfo) ([]*pb.ModelInfo, error) {
	for _, m := range loaded {
		m.Loaded = true
	}
	served := s.servedIDs()
	if len(served) == 0 {
		return loaded, nil
	}
	all, err := s.b.ListModels(ctx)
	if err != nil {
		return nil, err
	}
	byID := map[string]*pb.ModelInfo{}
	for _, m := range all {
		byID[m.GetId()] = m
	}
	for _, m := range loaded {
		byID[m.GetId()] = m
	}
	var out []*pb.ModelInfo
	for _, id := range served {
		if m := byID[id]; m != nil {
			out = append(out, m)
		}
	}
	return out, nil
}
