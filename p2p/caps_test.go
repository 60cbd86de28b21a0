package p2p

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-msgio"
	"github.com/libp2p/go-msgio/pbio"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// pair starts a worker and a connected client in one private swarm.
func pair(t *testing.T) (worker, client *Node) {
	t.Helper()
	s := newSecret(t)
	worker = newTestNode(t, WithSecret(s), WithCapabilitySource(StaticSource(sampleCaps("m"))),
		WithRecordTiming(time.Second, 3*time.Second))
	client = newTestNode(t, WithSecret(s), WithBootstrap(worker.AddrInfo()))
	eventually(t, 10*time.Second, "the worker's first record and a connection", func() bool {
		return worker.Record() != nil && client.Host().Network().Connectedness(worker.ID()) == network.Connected
	})
	return worker, client
}

func TestCapsFetch(t *testing.T) {
	worker, client := pair(t)
	rec, _, err := client.caps.Fetch(testContext(t, 10*time.Second), worker.ID())
	if err != nil {
		t.Fatal(err)
	}
	if rec.PeerID != worker.ID() || !rec.Serves("m") || !rec.Live(time.Now()) {
		t.Fatalf("fetched %+v", rec)
	}
}

func TestCapsRefusesGarbage(t *testing.T) {
	worker, client := pair(t)
	ctx := testContext(t, 20*time.Second)
	junk := [][]byte{
		{},                             // nothing, then EOF
		{0xff, 0xff, 0xff, 0xff, 0x0f}, // a huge length prefix
		append([]byte{0x10}, bytes.Repeat([]byte{0xff}, 16)...), // invalid protobuf
		// Random bytes behind a length prefix over the request limit: unprefixed random
		// bytes can, rarely, decode as a valid small request.
		append([]byte{0xff, 0x1f}, randomBytes(t, 4094)...),
	}
	for i, b := range junk {
		st, err := client.Host().NewStream(ctx, worker.ID(), CapsProtocol)
		if err != nil {
			t.Fatal(err)
		}
		st.SetDeadline(time.Now().Add(5 * time.Second))
		st.Write(b)
		st.CloseWrite()
		got, _ := msgio.NewVarintReaderSize(st, MaxRecordSize).ReadMsg()
		if i > 0 && len(got) > 0 {
			t.Errorf("garbage %d got an answer", i)
		}
		st.Reset()
	}
	// The worker is unharmed.
	if _, _, err := client.caps.Fetch(ctx, worker.ID()); err != nil {
		t.Fatalf("fetch after garbage: %v", err)
	}
}

// A peer that answers with someone else's record, an oversized answer, or
// an expired record is refused by the fetcher.
func TestCapsFetchRefusesBadAnswers(t *testing.T) {
	worker, client := pair(t)
	ctx := testContext(t, 20*time.Second)
	someoneElse, _ := signedRecord(t, newKey(t), 1, time.Minute, sampleCaps("m"))
	expired, _ := signedRecord(t, worker.cfg.Identity, 1, time.Millisecond, sampleCaps("m"))
	answers := map[string]struct {
		data []byte
		want error
	}{
		"another peer's record": {someoneElse, ErrInvalidRecord},
		"expired":               {expired, ErrRecordExpired},
		"oversized":             {make([]byte, MaxRecordSize+1), ErrRecordTooLarge},
		"garbage":               {randomBytes(t, 100), ErrInvalidRecord},
	}
	for name, a := range answers {
		t.Run(name, func(t *testing.T) {
			worker.Host().SetStreamHandler(CapsProtocol, func(s network.Stream) {
				defer s.Close()
				var req pb.CapabilityRequest
				pbio.NewDelimitedReader(s, MaxRequestSize).ReadMsg(&req)
				msgio.NewVarintWriter(s).WriteMsg(a.data)
			})
			time.Sleep(2 * time.Millisecond) // the 1ms record must be expired (not synchronization)
			if _, _, err := client.caps.Fetch(ctx, worker.ID()); !errors.Is(err, a.want) {
				t.Fatalf("Fetch = %v, want %v", err, a.want)
			}
		})
	}
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func FuzzCapsRequest(f *testing.F) {
	var buf bytes.Buffer
	pbio.NewDelimitedWriter(&buf).WriteMsg(&pb.CapabilityRequest{KnownSeq: 42})
	f.Add(buf.Bytes())
	f.Add([]byte{})
	f.Add([]byte{0x00})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		readCapsRequest(bytes.NewReader(data)) // must not panic or over-read
	})
}

func FuzzCapsAnswer(f *testing.F) {
	key := newKey(f)
	env, rec := signedRecord(f, key, 1, time.Hour, sampleCaps("m"))
	var buf bytes.Buffer
	msgio.NewVarintWriter(&buf).WriteMsg(env)
	f.Add(buf.Bytes())
	f.Add([]byte{0x05, 1, 2, 3, 4, 5})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := readEnvelope(bytes.NewReader(data))
		if err != nil {
			return
		}
		if len(msg) > MaxRecordSize {
			t.Fatalf("read %d bytes past the cap", len(msg))
		}
		got, err := decodeFetched(msg, rec.PeerID, time.Now())
		if err == nil && got.PeerID != rec.PeerID {
			t.Fatal("accepted a record of another peer")
		}
	})
}

// Republish publishes a new record at once, long before the next refresh.
func TestRepublishSignsANewRecordNow(t *testing.T) {
	s := newSecret(t)
	worker := newTestNode(t, WithSecret(s), WithCapabilitySource(StaticSource(sampleCaps("m"))),
		WithRecordTiming(time.Hour, 3*time.Hour))
	eventually(t, 10*time.Second, "the first record", func() bool { return worker.Record() != nil })
	first := worker.Record().Seq
	worker.Republish()
	eventually(t, 10*time.Second, "a re-published record", func() bool { return worker.Record().Seq > first })
	newTestNode(t, WithSecret(s)).Republish() // a client has nothing to publish: no-op
}
