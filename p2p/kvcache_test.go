package p2p

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio/pbio"
	mh "github.com/multiformats/go-multihash"
	"google.golang.org/protobuf/proto"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// chainKeys returns n distinct 32-byte keys standing for a prompt's chain.
func chainKeys(tag string, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		h := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", tag, i)))
		out[i] = h[:]
	}
	return out
}

// fakeKV holds the leading `held` keys of one chain for one model.
type fakeKV struct {
	model string
	keys  [][]byte
	held  int

	mu    sync.Mutex
	asked []peer.ID
}

func (f *fakeKV) Manifest(_ context.Context, from peer.ID, weightsCID string, keys [][]byte) (KVManifest, error) {
	f.mu.Lock()
	f.asked = append(f.asked, from)
	f.mu.Unlock()
	if weightsCID != f.model {
		return KVManifest{}, fmt.Errorf("no KV cache for %s", weightsCID)
	}
	n := 0
	for n < len(keys) && n < f.held && bytes.Equal(keys[n], f.keys[n]) {
		n++
	}
	if n == 0 {
		return KVManifest{}, nil
	}
	return KVManifest{Manifest: []byte(fmt.Sprintf(`{"blocks":%d}`, n)), Blocks: n}, nil
}

func TestKVKeyCID(t *testing.T) {
	key := chainKeys("k", 1)[0]
	c, err := KVKeyCID(key)
	if err != nil {
		t.Fatal(err)
	}
	if c.Version() != 1 || c.Type() != cid.Raw {
		t.Fatalf("CID %s: version %d codec %x", c, c.Version(), c.Type())
	}
	want, _ := mh.Sum(append([]byte("edgellm-kv/1"), key...), mh.SHA2_256, -1)
	if !bytes.Equal(c.Hash(), want) {
		t.Fatal("provider key is not sha2-256 over the domain tag and the key")
	}
	again, _ := KVKeyCID(append([]byte(nil), key...))
	other, _ := KVKeyCID(chainKeys("k", 2)[1])
	if !again.Equals(c) || other.Equals(c) || c.Equals(ModelKey("x")) {
		t.Fatal("provider keys are not a function of the block key alone")
	}
	for _, bad := range [][]byte{nil, make([]byte, 31), make([]byte, 33)} {
		if _, err := KVKeyCID(bad); !errors.Is(err, ErrInvalidKVMessage) {
			t.Fatalf("key of %d bytes: %v", len(bad), err)
		}
	}
}

// kvSwarm: B is the bootstrap worker, A a worker serving KV (it holds the
// first `held` keys), C a client that knows only B.
func kvSwarm(t *testing.T, kv *fakeKV) (a, b, c *Node) {
	t.Helper()
	s := newSecret(t)
	worker := func(extra ...Option) *Node {
		return newTestNode(t, append([]Option{WithSecret(s), WithRecordTiming(testRefresh, testTTL),
			WithCapabilitySource(StaticSource(sampleCaps("m")))}, extra...)...)
	}
	b = worker()
	a = worker(WithBootstrap(b.AddrInfo()))
	c = newTestNode(t, WithSecret(s), WithBootstrap(b.AddrInfo()))
	svc, err := NewKVService(a.Host(), kv, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return a, b, c
}

// TestKVAnnounceFindFetch: A announces the keys it holds; C, which knows
// only B, finds A as their provider, finds the longest cached prefix of a
// longer chain by binary search, and gets A's manifest over KVProtocol.
func TestKVAnnounceFindFetch(t *testing.T) {
	if testing.Short() {
		t.Skip("network test")
	}
	keys := chainKeys("prompt", 40)
	kv := &fakeKV{model: "bafk-m", keys: keys, held: 23}
	a, _, c := kvSwarm(t, kv)
	ctx := testContext(t, 60*time.Second)
	a.waitRoutable(ctx)
	n, err := a.AnnounceKeys(ctx, keys[:kv.held])
	if err != nil || n != kv.held {
		t.Fatalf("announced %d of %d: %v", n, kv.held, err)
	}
	eventually(t, 20*time.Second, "C to find A as a provider", func() bool {
		ps, _ := c.FindKeyProviders(ctx, keys[5], 0)
		return len(ps) == 1 && ps[0].ID == a.ID()
	})
	if ps, _ := c.FindKeyProviders(ctx, keys[30], 0); len(ps) != 0 {
		t.Fatalf("providers of a key nobody holds: %v", ps)
	}

	hit, err := c.LongestCachedPrefix(ctx, "bafk-m", keys)
	if err != nil {
		t.Fatal(err)
	}
	if hit.Peer.ID != a.ID() || hit.Blocks != kv.held || string(hit.Manifest) != `{"blocks":23}` {
		t.Fatalf("hit %s, %d blocks, manifest %q", hit.Peer.ID, hit.Blocks, hit.Manifest)
	}
	// A prompt that shares only a shorter prefix.
	short := append(append([][]byte(nil), keys[:7]...), chainKeys("other", 9)...)
	if hit, err := c.LongestCachedPrefix(ctx, "bafk-m", short); err != nil || hit.Blocks != 7 {
		t.Fatalf("shorter prefix: %d blocks, %v", hit.Blocks, err)
	}
	// Nothing shared: no hit, and no stream to anyone.
	asked := len(kv.asked)
	if _, err := c.LongestCachedPrefix(ctx, "bafk-m", chainKeys("fresh", 12)); !errors.Is(err, ErrNoCachedPrefix) {
		t.Fatalf("fresh prompt: %v", err)
	}
	if len(kv.asked) != asked {
		t.Fatal("a fresh prompt asked a peer for a manifest")
	}
	// Another model: A refuses, so no hit.
	if _, err := c.LongestCachedPrefix(ctx, "bafk-other", keys); !errors.Is(err, ErrNoCachedPrefix) || !strings.Contains(err.Error(), "no KV cache") {
		t.Fatalf("other model: %v", err)
	}
	// A skipped (its blocks failed a spot check): no hit, and A is not asked.
	asked = len(kv.asked)
	if _, err := c.LongestCachedPrefix(ctx, "bafk-m", keys, a.ID()); !errors.Is(err, ErrNoCachedPrefix) {
		t.Fatalf("skipped holder: %v", err)
	}
	if len(kv.asked) != asked {
		t.Fatal("a skipped holder was asked for a manifest")
	}
}

// TestKVProtocolRefusals: bad requests never leave the requester; a refusal
// and an empty answer are told apart; garbage gets a reset.
func TestKVProtocolRefusals(t *testing.T) {
	keys := chainKeys("r", 4)
	kv := &fakeKV{model: "bafk-m", keys: keys, held: 2}
	a, _, c := kvSwarm(t, kv)
	ctx := testContext(t, 30*time.Second)
	c.Host().Peerstore().AddAddrs(a.ID(), a.Host().Addrs(), time.Hour)

	m, err := FetchKVManifest(ctx, c.Host(), a.ID(), "bafk-m", keys, 0)
	if err != nil || m.Blocks != 2 {
		t.Fatalf("fetch: %d blocks, %v", m.Blocks, err)
	}
	if m, err := FetchKVManifest(ctx, c.Host(), a.ID(), "bafk-m", chainKeys("x", 3), 0); err != nil || m.Blocks != 0 || m.Manifest != nil {
		t.Fatalf("unheld keys: %+v, %v", m, err)
	}
	if _, err := FetchKVManifest(ctx, c.Host(), a.ID(), "bafk-nope", keys, 0); !errors.Is(err, ErrKVRefused) {
		t.Fatalf("other model: %v", err)
	}
	for name, bad := range map[string][][]byte{
		"no keys": nil, "short key": {make([]byte, 31)}, "too many": make([][]byte, MaxKVKeys+1),
	} {
		if _, err := FetchKVManifest(ctx, c.Host(), a.ID(), "bafk-m", bad, 0); !errors.Is(err, ErrInvalidKVMessage) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if _, err := FetchKVManifest(ctx, c.Host(), a.ID(), "", keys, 0); !errors.Is(err, ErrInvalidKVMessage) {
		t.Fatalf("no weights CID: %v", err)
	}

	// Raw garbage and a request with a 31-byte key: the server resets.
	for name, payload := range map[string][]byte{
		"garbage":  {0x05, 0xff, 0xff, 0xff, 0xff, 0xff},
		"oversize": {0xff, 0xff, 0xff, 0xff, 0x0f},
		"bad key":  delimited(t, &pb.KVManifestRequest{WeightsCid: "bafk-m", Keys: [][]byte{make([]byte, 31)}}),
	} {
		st, err := c.Host().NewStream(ctx, a.ID(), KVProtocol)
		if err != nil {
			t.Fatal(err)
		}
		st.Write(payload)
		st.CloseWrite()
		st.SetReadDeadline(time.Now().Add(10 * time.Second))
		var reply pb.KVManifestReply
		if err := pbio.NewDelimitedReader(st, MaxKVReplySize).ReadMsg(&reply); err == nil {
			t.Fatalf("%s: the server answered %v", name, &reply)
		}
		st.Close()
	}
	// The service still serves afterwards.
	if m, err := FetchKVManifest(ctx, c.Host(), a.ID(), "bafk-m", keys, 0); err != nil || m.Blocks != 2 {
		t.Fatalf("after garbage: %d, %v", m.Blocks, err)
	}
}

// TestKVReplyChecks: the requester's decoder refuses a lying reply (more
// blocks than asked, a manifest over the cap, a refusal with a manifest).
func TestKVReplyChecks(t *testing.T) {
	keys := chainKeys("l", 3)
	cases := map[string]*pb.KVManifestReply{
		"too many blocks":       {Manifest: []byte("{}"), Blocks: 4},
		"blocks without bytes":  {Blocks: 1},
		"bytes without blocks":  {Manifest: []byte("{}")},
		"refusal with manifest": {Manifest: []byte("{}"), Blocks: 1, Refused: "no"},
		"manifest over the cap": {Manifest: make([]byte, MaxKVManifestSize+1), Blocks: 1},
	}
	for name, reply := range cases {
		if _, err := readKVReply(bytes.NewReader(delimited(t, reply)), len(keys)); !errors.Is(err, ErrInvalidKVMessage) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	ok := &pb.KVManifestReply{Manifest: []byte("{}"), Blocks: 3}
	if _, err := readKVReply(bytes.NewReader(delimited(t, ok)), len(keys)); err != nil {
		t.Fatal(err)
	}
}

// TestKVServiceHandlerLimits: a handler that returns something out of
// protocol gets a refusal sent, not the bad manifest.
func TestKVServiceHandlerLimits(t *testing.T) {
	keys := chainKeys("h", 2)
	s := newSecret(t)
	a := newTestNode(t, WithSecret(s))
	c := newTestNode(t, WithSecret(s))
	c.Host().Peerstore().AddAddrs(a.ID(), a.Host().Addrs(), time.Hour)
	var answer KVManifest
	svc, err := NewKVService(a.Host(), handlerFunc(func() KVManifest { return answer }), time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t, 30*time.Second)
	for _, bad := range []KVManifest{
		{Manifest: []byte("{}"), Blocks: 3}, {Manifest: make([]byte, MaxKVManifestSize+1), Blocks: 1}, {Blocks: 1},
	} {
		answer = bad
		if _, err := FetchKVManifest(ctx, c.Host(), a.ID(), "m", keys, 0); !errors.Is(err, ErrKVRefused) {
			t.Fatalf("handler answer %d blocks, %d bytes: %v", bad.Blocks, len(bad.Manifest), err)
		}
	}
	svc.Close()
	if _, err := FetchKVManifest(ctx, c.Host(), a.ID(), "m", keys, 0); err == nil {
		t.Fatal("a closed service answered")
	}
	if _, err := NewKVService(a.Host(), nil, 0, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Fatal(err)
	}
}

type handlerFunc func() KVManifest

func (f handlerFunc) Manifest(context.Context, peer.ID, string, [][]byte) (KVManifest, error) {
	return f(), nil
}

func delimited(t testing.TB, m proto.Message) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := pbio.NewDelimitedWriter(&buf).WriteMsg(m); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func FuzzKVRequest(f *testing.F) {
	f.Add(delimited(f, &pb.KVManifestRequest{WeightsCid: "bafk", Keys: chainKeys("f", 3)}))
	f.Add([]byte{})
	f.Add([]byte{0x00})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := readKVRequest(bytes.NewReader(data))
		if err != nil {
			return
		}
		if checkKVRequest(req) != nil || len(req.GetKeys()) > MaxKVKeys {
			t.Fatal("an accepted request is out of bounds")
		}
	})
}

func FuzzKVReply(f *testing.F) {
	f.Add(delimited(f, &pb.KVManifestReply{Manifest: []byte(`{"a":1}`), Blocks: 2}), 3)
	f.Add(delimited(f, &pb.KVManifestReply{Refused: "no"}), 1)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}, 1)
	f.Fuzz(func(t *testing.T, data []byte, asked int) {
		reply, err := readKVReply(bytes.NewReader(data), asked)
		if err != nil {
			return
		}
		if int(reply.GetBlocks()) > asked || len(reply.GetManifest()) > MaxKVManifestSize {
			t.Fatal("an accepted reply is out of bounds")
		}
	})
}

// TestKVLookupAlone: a node whose swarm is unreachable finds no cached
// prefix (after waiting at most kvFindTimeout for a member), without an
// error of another kind.
func TestKVLookupAlone(t *testing.T) {
	n := newTestNode(t, WithSecret(newSecret(t)))
	ctx := testContext(t, 30*time.Second)
	start := time.Now()
	if _, err := n.LongestCachedPrefix(ctx, "bafk-m", chainKeys("alone", 8)); !errors.Is(err, ErrNoCachedPrefix) {
		t.Fatalf("alone: %v", err)
	}
	t.Logf("lookup with nobody to ask took %s", time.Since(start).Round(time.Millisecond))
}
