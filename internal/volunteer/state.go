package volunteer

import (
	"encoding/json"

	"github.com/edgellm/edgellm/internal/atomicfile"
	"github.com/edgellm/edgellm/internal/ipfs"
	"github.com/edgellm/edgellm/p2p"
)

// workerState is StateFile's content.
type workerState struct {
	PeerID     string   `json:"peer_id"`
	Addrs      []string `json:"addrs"`
	Join       string   `json:"join"`
	IPFSPeerID string   `json:"ipfs_peer_id,omitempty"`
	IPFSAddrs  []string `json:"ipfs_addrs,omitempty"`
	IPFSAPI    string   `json:"ipfs_api,omitempty"`
}

// writeState writes StateFile, readable by its owner only: it holds a join
// string, which carries the swarm secret.
func writeState(path string, n *p2p.Node, src *backendSource, api *ipfs.Client) error {
	st := workerState{PeerID: n.ID().String(), Join: n.JoinString()}
	for _, a := range n.P2PAddrs() {
		st.Addrs = append(st.Addrs, a.String())
	}
	if api != nil {
		st.IPFSAPI = api.URL()
	}
	if src.ipfsID != "" {
		st.IPFSPeerID = src.ipfsID.String()
		for _, a := range src.ipfsAddrs {
			st.IPFSAddrs = append(st.IPFSAddrs, a.String())
		}
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(data, '\n'), 0o600)
}
