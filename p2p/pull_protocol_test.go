package p2p

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// pullRecorder is a PullHandler that records what it was asked and answers
// with err after waiting for release (when set). A fake: the real handler
// (the CLI's) fetches over IPFS, which the CLI's end-to-end test covers.
type pullRecorder struct {
	err     error
	started chan struct{}
	release chan struct{}

	mu    sync.Mutex
	asked []PullAsk
}

func (f *pullRecorder) Pull(ctx context.Context, _ peer.ID, ask PullAsk) error {
	f.mu.Lock()
	f.asked = append(f.asked, ask)
	f.mu.Unlock()
	if f.started != nil {
		f.started <- struct{}{}
	}
	if f.release != nil {
		select {
		case <-f.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return f.err
}

// pullPair: a worker answering PullProtocol through h and a member
// connected to it.
func pullPair(t *testing.T, h PullHandler) (worker, member *Node, s Secret) {
	t.Helper()
	s = newSecret(t)
	worker = newTestNode(t, WithSecret(s))
	member = newTestNode(t, WithSecret(s), WithBootstrap(worker.AddrInfo()))
	svc, err := NewPullService(worker.Host(), h, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	if err := member.Host().Connect(testContext(t, 10*time.Second), worker.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	return worker, member, s
}

func holderAddr(t *testing.T) ma.Multiaddr {
	t.Helper()
	id, err := peer.IDFromPrivateKey(newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	return ma.StringCast("/ip4/127.0.0.1/tcp/4001/p2p/" + id.String())
}

// TestPullProtocol: the worker gets the model and its holders as asked; its
// refusal reaches the requester with the reason; a second request while a
// pull runs is refused as busy.
func TestPullProtocol(t *testing.T) {
	ask := PullAsk{ModelID: "tiny", DirCID: "bafy-dir", WeightsCID: "bafk-w", Holders: []ma.Multiaddr{holderAddr(t)}}
	t.Run("served", func(t *testing.T) {
		h := &pullRecorder{}
		w, m, _ := pullPair(t, h)
		if err := AskPull(testContext(t, 10*time.Second), m.Host(), w.ID(), ask, 0); err != nil {
			t.Fatal(err)
		}
		if len(h.asked) != 1 || h.asked[0].ModelID != "tiny" || h.asked[0].DirCID != "bafy-dir" ||
			h.asked[0].WeightsCID != "bafk-w" || !h.asked[0].Holders[0].Equal(ask.Holders[0]) {
			t.Fatalf("worker was asked %+v; want %+v", h.asked, ask)
		}
	})
	t.Run("refused with the reason", func(t *testing.T) {
		w, m, _ := pullPair(t, &pullRecorder{err: errors.New("model of 270 MiB is over the disk budget of 1 MiB")})
		err := AskPull(testContext(t, 10*time.Second), m.Host(), w.ID(), ask, 0)
		if !errors.Is(err, ErrPullRefused) || !strings.Contains(err.Error(), "disk budget") {
			t.Fatalf("refused pull: %v; want ErrPullRefused with the reason", err)
		}
	})
	t.Run("one pull at a time", func(t *testing.T) {
		h := &pullRecorder{started: make(chan struct{}, 1), release: make(chan struct{})}
		w, m, secret := pullPair(t, h)
		// A second member: one member may hold only one pull stream at a worker.
		other := newTestNode(t, WithSecret(secret), WithBootstrap(w.AddrInfo()))
		if err := other.Host().Connect(testContext(t, 10*time.Second), w.AddrInfo()); err != nil {
			t.Fatal(err)
		}
		first := make(chan error, 1)
		go func() { first <- AskPull(testContext(t, 20*time.Second), m.Host(), w.ID(), ask, 0) }()
		<-h.started
		err := AskPull(testContext(t, 10*time.Second), other.Host(), w.ID(), ask, 0)
		if !errors.Is(err, ErrPullRefused) || !strings.Contains(err.Error(), "busy") {
			t.Errorf("second pull while one runs: %v; want refused as busy", err)
		}
		close(h.release)
		if err := <-first; err != nil {
			t.Errorf("first pull: %v", err)
		}
	})
}

// TestPullRequestChecked: a request naming no holder, or with a bad
// address or an empty CID, is refused before it is sent (and a worker would
// reset it unread).
func TestPullRequestChecked(t *testing.T) {
	good := holderAddr(t)
	noP2P := ma.StringCast("/ip4/127.0.0.1/tcp/4001")
	many := make([]ma.Multiaddr, maxIPFSAddrs+1)
	for i := range many {
		many[i] = good
	}
	for _, c := range []struct {
		name string
		ask  PullAsk
	}{
		{"no holder", PullAsk{ModelID: "m", DirCID: "d", WeightsCID: "w"}},
		{"holder without /p2p", PullAsk{ModelID: "m", DirCID: "d", WeightsCID: "w", Holders: []ma.Multiaddr{noP2P}}},
		{"too many holders", PullAsk{ModelID: "m", DirCID: "d", WeightsCID: "w", Holders: many}},
		{"no directory CID", PullAsk{ModelID: "m", WeightsCID: "w", Holders: []ma.Multiaddr{good}}},
		{"no model", PullAsk{DirCID: "d", WeightsCID: "w", Holders: []ma.Multiaddr{good}}},
		{"long id", PullAsk{ModelID: strings.Repeat("m", maxStringLen+1), DirCID: "d", WeightsCID: "w", Holders: []ma.Multiaddr{good}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			// No stream is opened: a nil host would panic if it were.
			if err := AskPull(context.Background(), nil, "", c.ask, time.Second); !errors.Is(err, ErrInvalidPullMessage) {
				t.Fatalf("AskPull: %v; want ErrInvalidPullMessage", err)
			}
		})
	}
	if _, err := NewPullService(nil, nil, 0, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("a service without a handler: %v", err)
	}
}
