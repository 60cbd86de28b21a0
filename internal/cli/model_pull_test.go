package cli

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/edgellm/edgellm/p2p"
)

func testPeerID(t *testing.T) peer.ID {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// sharing is a record of a worker sharing model id (weights w, directory d;
// "" d: not shared) with an IPFS node, or without one when ipfs is false.
func sharing(t *testing.T, rtt time.Duration, ipfs bool, id, w, d string) p2p.PeerInfo {
	r := &p2p.Record{PeerID: testPeerID(t)}
	r.Models = []p2p.Model{{ID: id, WeightsCID: w, DirCID: d}}
	if ipfs {
		r.IPFSPeerID = testPeerID(t)
		r.IPFSAddrs = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/4001")}
	}
	return p2p.PeerInfo{Record: r, RTT: rtt}
}

func TestPullHolders(t *testing.T) {
	slow := sharing(t, 9*time.Millisecond, true, "tiny", "bafyw", "bafyd")
	fast := sharing(t, time.Millisecond, true, "tiny", "bafyw", "bafyd2")
	unmeasured := sharing(t, 0, true, "tiny", "bafyw", "bafyd")
	unshared := sharing(t, time.Millisecond, true, "tiny", "bafyw", "")
	noIPFS := sharing(t, time.Millisecond, false, "tiny", "bafyw", "bafyd")
	other := sharing(t, time.Millisecond, true, "other", "bafyo", "bafyod")
	peers := []p2p.PeerInfo{unmeasured, slow, unshared, noIPFS, other, fast}
	for _, tc := range []struct {
		name, want string
		from       peer.ID
		holders    []p2p.PeerInfo
	}{
		{"by id, fastest first, unmeasured last", "tiny", "", []p2p.PeerInfo{fast, slow, unmeasured}},
		{"by weights CID", "bafyw", "", []p2p.PeerInfo{fast, slow, unmeasured}},
		{"by directory CID", "bafyd2", "", []p2p.PeerInfo{fast}},
		{"--from one peer", "tiny", slow.Record.PeerID, []p2p.PeerInfo{slow}},
		{"--from a peer that does not share it", "tiny", noIPFS.Record.PeerID, nil},
		{"nobody", "bafynobody", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got, want []peer.ID
			for _, h := range pullHolders(peers, tc.want, tc.from) {
				got = append(got, h.peer)
				if len(h.addrs) != 1 || h.addrs[0] != "/ip4/127.0.0.1/tcp/4001/p2p/"+h.peerIPFS(peers).String() {
					t.Errorf("holder %s: addrs %v", h.peer, h.addrs)
				}
			}
			for _, p := range tc.holders {
				want = append(want, p.Record.PeerID)
			}
			if !slices.Equal(got, want) {
				t.Errorf("holders %v, want %v", got, want)
			}
		})
	}
}

// peerIPFS is the IPFS peer id of h's record among peers.
func (h pullHolder) peerIPFS(peers []p2p.PeerInfo) peer.ID {
	for _, p := range peers {
		if p.Record.PeerID == h.peer {
			return p.Record.IPFSPeerID
		}
	}
	return ""
}

func TestTryHolders(t *testing.T) {
	a, b, c := pullHolder{peer: "a"}, pullHolder{peer: "b"}, pullHolder{peer: "c"}
	liar := fmt.Errorf("%w: bafyd holds weights bafyx, not bafyw", errHolder)
	budget := fmt.Errorf("%w: the disk budget allows 1", ErrInvalidArgument)
	for _, tc := range []struct {
		name     string
		results  map[peer.ID]error
		tried    []peer.ID
		want     error // nil: success
		wantText string
	}{
		{"first holder serves", map[peer.ID]error{}, []peer.ID{"a"}, nil, ""},
		{"a liar is refused, the next tried", map[peer.ID]error{"a": liar}, []peer.ID{"a", "b"}, nil, ""},
		{"every holder refused", map[peer.ID]error{"a": liar, "b": liar, "c": liar}, []peer.ID{"a", "b", "c"},
			ErrUnavailable, "no holder served it (" + a.peer.String() + ": bafyd holds weights bafyx, not bafyw; "},
		{"not the holder's fault: stop", map[peer.ID]error{"a": budget}, []peer.ID{"a"}, ErrInvalidArgument, "disk budget"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tried []peer.ID
			err := tryHolders("tiny", []pullHolder{a, b, c}, func(h pullHolder) error {
				tried = append(tried, h.peer)
				return tc.results[h.peer]
			})
			if !slices.Equal(tried, tc.tried) {
				t.Errorf("tried %v, want %v", tried, tc.tried)
			}
			if (tc.want == nil) != (err == nil) || (tc.want != nil && (!errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.wantText))) {
				t.Errorf("error %v, want %v containing %q", err, tc.want, tc.wantText)
			}
		})
	}
}
