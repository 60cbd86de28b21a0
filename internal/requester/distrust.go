package requester

import (
	"slices"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// Distrust is the KV block holders a node stops asking for cached prefixes
// for the rest of its session: those whose blocks failed the backend's
// per-request spot check (GenerateResponse.dropped_kv_holders names their
// IPFS nodes). The backend already ignores their manifests; without this the
// node would keep finding them first, and every such request would lose its
// cached prefix. The zero value is empty and ready; a nil *Distrust skips
// nobody.
type Distrust struct {
	mu    sync.Mutex
	peers []peer.ID
}

// Peers are the distrusted holders (for LongestCachedPrefix's skip).
func (d *Distrust) Peers() []peer.ID {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.peers)
}

// Report distrusts the holders of prefix whose IPFS node resp names as
// dropped, and returns those newly distrusted.
func (d *Distrust) Report(prefix Prefix, resp *pb.GenerateResponse) []peer.ID {
	if d == nil || len(resp.GetDroppedKvHolders()) == 0 {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var added []peer.ID
	for _, ipfsID := range resp.GetDroppedKvHolders() {
		holder, ok := prefix.IPFSPeers[ipfsID]
		if ok && !slices.Contains(d.peers, holder) {
			d.peers = append(d.peers, holder)
			added = append(added, holder)
		}
	}
	return added
}

// ipfsPeers maps the IPFS peer ids in addrs (their /p2p/ part) to holder.
func ipfsPeers(into map[string]peer.ID, holder peer.ID, addrs []ma.Multiaddr) {
	for _, a := range addrs {
		if id, err := a.ValueForProtocol(ma.P_P2P); err == nil {
			into[id] = holder
		}
	}
}
