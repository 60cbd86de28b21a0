package requester

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/edgellm/edgellm/internal/planner"
	"github.com/edgellm/edgellm/p2p"
)

func newPeerID(t *testing.T) peer.ID {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// pullRecord is a record of a fresh (direct) peer with rtt: serving models,
// sharing them when shared, with an IPFS node when ipfs, accepting pulls
// when accept.
func pullRecord(t *testing.T, rtt time.Duration, ipfs, shared, accept bool, models ...string) p2p.PeerInfo {
	t.Helper()
	r := &p2p.Record{PeerID: newPeerID(t)}
	r.AcceptPulls = accept
	if ipfs {
		r.IPFSPeerID = newPeerID(t)
		r.IPFSAddrs = []ma.Multiaddr{ma.StringCast("/ip4/10.0.0.1/tcp/4001")}
	}
	for _, m := range models {
		md := p2p.Model{ID: m, WeightsCID: "bafk-" + m, NumLayers: 4}
		if shared {
			md.DirCID = "bafy-" + m
		}
		r.Models = append(r.Models, md)
	}
	return p2p.PeerInfo{Record: r, Direct: true, RTT: rtt}
}

// TestPullCandidates: what a requester asks for, and of whom, from what
// the records say.
func TestPullCandidates(t *testing.T) {
	holder := pullRecord(t, time.Millisecond, true, true, false, "m")
	slow := pullRecord(t, 9*time.Millisecond, true, false, true, "other")
	fast := pullRecord(t, 2*time.Millisecond, true, false, true, "other")
	unmeasured := pullRecord(t, 0, true, false, true)
	servingAccepter := pullRecord(t, time.Millisecond, true, true, true, "m")
	unshared := pullRecord(t, time.Millisecond, true, false, false, "m")
	noIPFS := pullRecord(t, time.Millisecond, false, true, false, "m")
	indirect := pullRecord(t, time.Millisecond, true, false, true)
	indirect.Direct = false
	tests := []struct {
		name        string
		peers       []p2p.PeerInfo
		self        peer.ID
		wantOK      bool
		wantWorkers []p2p.PeerInfo
		wantHolders int
	}{
		{"a holder and accepters, fastest first", []p2p.PeerInfo{unmeasured, slow, holder, fast}, "", true, []p2p.PeerInfo{fast, slow, unmeasured}, 1},
		{"an accepter that serves it is no candidate, but holds it", []p2p.PeerInfo{servingAccepter, fast}, "", true, []p2p.PeerInfo{fast}, 1},
		{"two holders of the same directory", []p2p.PeerInfo{holder, servingAccepter, fast}, "", true, []p2p.PeerInfo{fast}, 2},
		{"nobody holds it: served but not shared", []p2p.PeerInfo{unshared, fast}, "", false, nil, 0},
		{"nobody holds it: no IPFS node", []p2p.PeerInfo{noIPFS, fast}, "", false, nil, 0},
		{"nobody holds it at all", []p2p.PeerInfo{slow, fast}, "", false, nil, 0},
		{"no worker accepts pulls", []p2p.PeerInfo{holder, unshared}, "", false, nil, 1},
		{"an accepter only known from the DHT", []p2p.PeerInfo{holder, indirect}, "", false, nil, 1},
		{"the requester itself is neither", []p2p.PeerInfo{holder, fast}, fast.Record.PeerID, false, nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ask, workers, ok := pullCandidates(tt.peers, "m", tt.self)
			if ok != tt.wantOK || len(ask.Holders) != tt.wantHolders {
				t.Fatalf("ok %v, %d holder addresses; want %v, %d", ok, len(ask.Holders), tt.wantOK, tt.wantHolders)
			}
			if !ok {
				return
			}
			if ask.ModelID != "m" || ask.DirCID != "bafy-m" || ask.WeightsCID != "bafk-m" {
				t.Errorf("ask %+v; want m's directory and weights", ask)
			}
			if _, err := ask.Holders[0].ValueForProtocol(ma.P_P2P); err != nil {
				t.Errorf("holder address %s without /p2p", ask.Holders[0])
			}
			if len(workers) != len(tt.wantWorkers) {
				t.Fatalf("%d workers; want %d", len(workers), len(tt.wantWorkers))
			}
			for i := range workers {
				if workers[i].Record.PeerID != tt.wantWorkers[i].Record.PeerID {
					t.Errorf("worker %d is %s; want %s", i, workers[i].Record.PeerID, tt.wantWorkers[i].Record.PeerID)
				}
			}
		})
	}
}

// TestAskWorkers: the next worker is asked after a refusal; when all
// refuse, the error is unavailable and names each reason.
func TestAskWorkers(t *testing.T) {
	a, b := pullRecord(t, time.Millisecond, true, false, true), pullRecord(t, 2*time.Millisecond, true, false, true)
	ask := p2p.PullAsk{ModelID: "m"}
	var asked []peer.ID
	got, err := askWorkers(ask, []p2p.PeerInfo{a, b}, func(p peer.ID) error {
		asked = append(asked, p)
		if p == a.Record.PeerID {
			return errors.New("pull refused: busy pulling another model")
		}
		return nil
	})
	if err != nil || got != b.Record.PeerID.String() || len(asked) != 2 {
		t.Fatalf("askWorkers: %q, %v after asking %v; want b after a's refusal", got, err, asked)
	}
	_, err = askWorkers(ask, []p2p.PeerInfo{a, b}, func(peer.ID) error {
		return errors.New("pull refused: the model needs 27262976 bytes, the disk budget allows 1048576")
	})
	if !errors.Is(err, ErrUnavailable) || strings.Count(err.Error(), "disk budget") != 2 || strings.Contains(err.Error(), "\n") {
		t.Fatalf("all refused: %v; want one unavailable line with both reasons", err)
	}
}

// pullingSwarm is a fakeSwarm whose PullFor makes worker "b" serve the
// model (or refuses, or has no holder).
type pullingSwarm struct {
	*fakeSwarm
	asked   bool
	refuse  error
	pullFor int
}

func (s *pullingSwarm) PullFor(_ context.Context, m string) (string, bool, error) {
	s.pullFor++
	if !s.asked {
		return "", false, nil
	}
	if s.refuse != nil {
		return "", true, s.refuse
	}
	s.setPeers("a", "b")
	return "b", true, nil
}

// TestPlanAfterPull: a request for two stages that one worker serves is
// planned over two once a worker pulled the model; without a holder the
// planner's refusal stands; a refused pull is the request's error; a
// refusal that is not for want of workers asks for no pull.
func TestPlanAfterPull(t *testing.T) {
	refused := errors.New("unavailable: no worker could pull it")
	tests := []struct {
		name     string
		asked    bool
		refuse   error
		req      Request
		wantErr  error
		wantPull int
	}{
		{"pulled, then planned", true, nil, Request{Model: model, Stages: 2}, nil, 1},
		{"nobody holds it", false, nil, Request{Model: model, Stages: 2}, ErrInvalidRequest, 1},
		{"refused", true, refused, Request{Model: model, Stages: 2}, refused, 1},
		{"over the price limit: no pull", true, nil, Request{Model: model, Stages: 1, MaxPricePer1kMicros: 1}, planner.ErrNoPeerWithinPrice, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFakeSwarm("a")
			fs.peers[0].PricePer1kMicros = 5
			sw := &pullingSwarm{fakeSwarm: fs, asked: tt.asked, refuse: tt.refuse}
			p, err := New(sw).Plan(t.Context(), tt.req)
			if sw.pullFor != tt.wantPull {
				t.Errorf("%d pull requests; want %d", sw.pullFor, tt.wantPull)
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Plan: %v; want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || len(p.Plan.Stages) != 2 {
				t.Fatalf("Plan: %+v, %v; want two stages", p, err)
			}
		})
	}
}
