package p2p

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	ma "github.com/multiformats/go-multiaddr"
)

// signedRecord signs a record of key's peer with seq, valid for ttl from now.
func signedRecord(t testing.TB, key crypto.PrivKey, seq uint64, ttl time.Duration, c Capabilities) ([]byte, *Record) {
	t.Helper()
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rec := &Record{Capabilities: c, PeerID: id, Seq: seq, Issued: now.Add(-time.Second), Expires: now.Add(ttl),
		Addrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/4001")}}
	env, err := SealRecord(rec, key)
	if err != nil {
		t.Fatal(err)
	}
	return env, rec
}

func TestRecordRoundTrip(t *testing.T) {
	key := newKey(t)
	caps := sampleCaps("smollm2-135m")
	caps.Models[0].WeightsBytes = 270 << 20
	env, want := signedRecord(t, key, 7, time.Minute, caps)
	got, err := OpenRecord(env)
	if err != nil {
		t.Fatal(err)
	}
	if got.PeerID != want.PeerID || got.Seq != 7 || got.Device != "cpu" || got.Engine != "vllm" || len(got.Models) != 1 ||
		got.Models[0].LayerRanges[0] != (LayerRange{0, 30}) || got.Models[0].WeightsBytes != 270<<20 ||
		got.Models[0].DirCID != "bafy-dir-smollm2-135m" ||
		got.PricePer1kMicros != 1500 ||
		got.RayAddress != want.RayAddress || !got.Addrs[0].Equal(want.Addrs[0]) {
		t.Fatalf("round trip: %+v", got)
	}
	if !got.Serves("smollm2-135m") || !got.Serves("bafk-smollm2-135m") || got.Serves("other") {
		t.Fatal("Serves")
	}
	if got.IPFSPeerID != "" || got.IPFSAddrs != nil || got.IPFSDialAddrs() != nil {
		t.Fatalf("IPFS fields without an IPFS node: %+v", got)
	}
}

func TestRecordIPFS(t *testing.T) {
	key, ipfsKey := newKey(t), newKey(t)
	ipfsID, _ := peer.IDFromPrivateKey(ipfsKey)
	caps := sampleCaps("m")
	caps.IPFSPeerID = ipfsID
	caps.IPFSAddrs = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/4101"), ma.StringCast("/ip6/::1/tcp/4101")}
	env, _ := signedRecord(t, key, 1, time.Minute, caps)
	got, err := OpenRecord(env)
	if err != nil {
		t.Fatal(err)
	}
	if got.IPFSPeerID != ipfsID || len(got.IPFSAddrs) != 2 || !got.IPFSAddrs[1].Equal(caps.IPFSAddrs[1]) {
		t.Fatalf("IPFS fields: %s %v", got.IPFSPeerID, got.IPFSAddrs)
	}
	dial := got.IPFSDialAddrs()
	if len(dial) != 2 || dial[0].String() != "/ip4/127.0.0.1/tcp/4101/p2p/"+ipfsID.String() {
		t.Fatalf("IPFSDialAddrs = %v", dial)
	}
}

func TestLimitIPFSAddrs(t *testing.T) {
	var in []ma.Multiaddr
	in = append(in, ma.StringCast("/ip4/1.2.3.4/tcp/1/p2p/12D3KooWSZHB5crW1uvEfoa3G83WTTN6htkBfXtcoY56hz3bjxbF"))
	in = append(in, ma.StringCast("/dns4/"+strings.Repeat("a", 250)+".example/tcp/1"))
	for i := range 20 {
		in = append(in, ma.StringCast(fmt.Sprintf("/ip4/10.0.0.%d/tcp/4001", i)))
	}
	got := LimitIPFSAddrs(in)
	if len(got) != maxIPFSAddrs || got[0].String() != "/ip4/10.0.0.0/tcp/4001" {
		t.Fatalf("LimitIPFSAddrs kept %d: %v", len(got), got)
	}
}

func TestForgedRecordRefused(t *testing.T) {
	victim, forger := newKey(t), newKey(t)
	victimID, _ := peer.IDFromPrivateKey(victim)
	rec := &Record{PeerID: victimID, Seq: 1, Issued: time.Now(), Expires: time.Now().Add(time.Minute)}
	// SealRecord refuses to sign for another peer...
	if _, err := SealRecord(rec, forger); !errors.Is(err, ErrInvalidRecord) {
		t.Fatalf("SealRecord with a foreign key: %v", err)
	}
	// ...and an envelope made by hand is refused on open and by the validator.
	env, err := record.Seal(rec, forger)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := env.Marshal()
	if _, err := OpenRecord(data); !errors.Is(err, ErrInvalidRecord) {
		t.Fatalf("OpenRecord(forged) = %v", err)
	}
	if err := (Validator{}).Validate(RecordKey(victimID), data); !errors.Is(err, ErrInvalidRecord) {
		t.Fatalf("Validate(forged) = %v", err)
	}
	// A tampered payload breaks the signature.
	good, _ := signedRecord(t, victim, 1, time.Minute, sampleCaps("m"))
	i := strings.Index(string(good), "lab")
	bad := append([]byte(nil), good...)
	bad[i] = 'X'
	if _, err := OpenRecord(bad); !errors.Is(err, ErrInvalidRecord) {
		t.Fatalf("OpenRecord(tampered) = %v", err)
	}
}

func TestRecordFieldLimits(t *testing.T) {
	key := newKey(t)
	id, _ := peer.IDFromPrivateKey(key)
	now := time.Now()
	base := func() *Record {
		return &Record{Capabilities: sampleCaps("m"), PeerID: id, Seq: 1, Issued: now, Expires: now.Add(time.Minute)}
	}
	cases := map[string]func(r *Record){
		"seq zero":        func(r *Record) { r.Seq = 0 },
		"expires first":   func(r *Record) { r.Expires = r.Issued.Add(-time.Second) },
		"lives too long":  func(r *Record) { r.Expires = r.Issued.Add(25 * time.Hour) },
		"bad layer range": func(r *Record) { r.Models[0].LayerRanges = []LayerRange{{Start: 10, End: 40}} },
		"empty model id":  func(r *Record) { r.Models[0].ID = "" },
		"long string":     func(r *Record) { r.Region = strings.Repeat("x", maxStringLen+1) },
		"negative speed":  func(r *Record) { r.DecodeTokensPerS = -1 },
		"too many models": func(r *Record) { r.Models = make([]Model, maxModels+1) },
		"ipfs addrs without id": func(r *Record) {
			r.IPFSAddrs = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/1")}
		},
		"too many ipfs addrs": func(r *Record) {
			r.IPFSPeerID = id
			for range maxIPFSAddrs + 1 {
				r.IPFSAddrs = append(r.IPFSAddrs, ma.StringCast("/ip4/127.0.0.1/tcp/1"))
			}
		},
		"ipfs addr with p2p": func(r *Record) {
			r.IPFSPeerID = id
			r.IPFSAddrs = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/1/p2p/" + id.String())}
		},
		"long ipfs addr": func(r *Record) {
			r.IPFSPeerID = id
			r.IPFSAddrs = []ma.Multiaddr{ma.StringCast("/dns4/" + strings.Repeat("a", 260) + "/tcp/1")}
		},
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			r := base()
			mutate(r)
			env, err := record.Seal(r, key) // bypass SealRecord's own checks
			if err != nil {
				t.Fatal(err)
			}
			data, _ := env.Marshal()
			if _, err := OpenRecord(data); !errors.Is(err, ErrInvalidRecord) {
				t.Fatalf("OpenRecord = %v, want ErrInvalidRecord", err)
			}
		})
	}
}

func TestOversizedRecordRefused(t *testing.T) {
	key := newKey(t)
	c := sampleCaps()
	for i := 0; i < maxModels; i++ {
		c.Models = append(c.Models, Model{ID: strings.Repeat("m", 250) + string(rune('a'+i%26)),
			WeightsCID: strings.Repeat("c", 200), NumLayers: 1})
	}
	id, _ := peer.IDFromPrivateKey(key)
	rec := &Record{Capabilities: c, PeerID: id, Seq: 1, Issued: time.Now(), Expires: time.Now().Add(time.Minute)}
	if _, err := SealRecord(rec, key); !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("SealRecord(huge) = %v", err)
	}
	env, _ := record.Seal(rec, key)
	data, _ := env.Marshal()
	if _, err := OpenRecord(data); !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("OpenRecord(huge) = %v", err)
	}
	if err := (Validator{}).Validate(RecordKey(id), data); !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("Validate(huge) = %v", err)
	}
}

func FuzzOpenRecord(f *testing.F) {
	key := newKey(f)
	good, _ := signedRecord(f, key, 3, time.Hour, sampleCaps("a", "b"))
	withdrawn, _ := signedRecord(f, key, 4, time.Hour, Capabilities{})
	f.Add(good)
	f.Add(withdrawn)
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x00})
	f.Add(good[:len(good)/2])
	withIPFS := sampleCaps("a")
	withIPFS.IPFSPeerID, _ = peer.IDFromPrivateKey(newKey(f))
	withIPFS.IPFSAddrs = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/4101")}
	ipfsEnv, _ := signedRecord(f, key, 5, time.Hour, withIPFS)
	f.Add(ipfsEnv)
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := OpenRecord(data)
		if err != nil {
			return
		}
		// A record that opens is signed by its own peer and re-encodes.
		if _, err := rec.MarshalRecord(); err != nil {
			t.Fatal(err)
		}
		v := Validator{Now: func() time.Time { return rec.Issued }}
		if err := v.Validate(RecordKey(rec.PeerID), data); err != nil && !errors.Is(err, ErrRecordExpired) {
			t.Fatalf("opened but does not validate: %v", err)
		}
	})
}

// FuzzUnmarshalRecord feeds the record payload decoder directly (OpenRecord
// refuses almost every fuzzed envelope at the signature): whatever decodes
// keeps the limits and re-encodes to a record that decodes the same way.
func FuzzUnmarshalRecord(f *testing.F) {
	key := newKey(f)
	caps := sampleCaps("a")
	caps.IPFSPeerID, _ = peer.IDFromPrivateKey(newKey(f))
	caps.IPFSAddrs = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/4101"), ma.StringCast("/ip6/::1/tcp/4101")}
	_, rec := signedRecord(f, key, 5, time.Hour, caps)
	good, err := rec.MarshalRecord()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte{})
	f.Add(good[:len(good)-3])
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Record
		if err := r.UnmarshalRecord(data); err != nil {
			return
		}
		if len(r.IPFSAddrs) > maxIPFSAddrs || len(r.Addrs) > maxAddrs || (r.IPFSPeerID == "" && len(r.IPFSAddrs) > 0) {
			t.Fatalf("limits not kept: %d ipfs addrs, %d addrs", len(r.IPFSAddrs), len(r.Addrs))
		}
		for _, a := range r.IPFSAddrs {
			if len(a.Bytes()) > maxAddrLen || hasP2P(a) {
				t.Fatalf("bad ipfs addr %s", a)
			}
		}
		again, err := r.MarshalRecord()
		if err != nil {
			t.Fatal(err)
		}
		var r2 Record
		if err := r2.UnmarshalRecord(again); err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if r2.IPFSPeerID != r.IPFSPeerID || len(r2.IPFSAddrs) != len(r.IPFSAddrs) {
			t.Fatal("IPFS fields changed in a round trip")
		}
	})
}

// TestRecordUnloadedModel: a model the peer loads on demand keeps its flag
// and load time through the signed record and into the planner's input.
func TestRecordUnloadedModel(t *testing.T) {
	key := newKey(t)
	caps := sampleCaps("smollm2-135m")
	caps.Models = append(caps.Models, Model{ID: "cold", WeightsCID: "bafk-cold", NumLayers: 4,
		Unloaded: true, LoadTime: 1500 * time.Millisecond})
	env, _ := signedRecord(t, key, 1, time.Minute, caps)
	got, err := OpenRecord(env)
	if err != nil {
		t.Fatal(err)
	}
	if got.Models[0].Unloaded || !got.Models[1].Unloaded || got.Models[1].LoadTime != 1500*time.Millisecond {
		t.Fatalf("models %+v; want the first loaded, the second unloaded with its 1.5 s load", got.Models)
	}
	p := PlannerPeer(got, Observation{})
	if p.Models[0].Unloaded || !p.Models[1].Unloaded || p.Models[1].LoadTime != 1500*time.Millisecond {
		t.Fatalf("planner models %+v", p.Models)
	}
}

// TestRecordAcceptPulls: the accept-pulls flag and its disk budget survive
// the signed record; a record without them (older peers) accepts none.
func TestRecordAcceptPulls(t *testing.T) {
	key := newKey(t)
	for _, c := range []struct {
		accept bool
		budget uint64
	}{{false, 0}, {true, 0}, {true, 512 << 20}} {
		caps := sampleCaps("smollm2-135m")
		caps.AcceptPulls, caps.PullDiskBudgetBytes = c.accept, c.budget
		env, _ := signedRecord(t, key, 1, time.Minute, caps)
		got, err := OpenRecord(env)
		if err != nil {
			t.Fatal(err)
		}
		if got.AcceptPulls != c.accept || got.PullDiskBudgetBytes != c.budget {
			t.Errorf("accept pulls %v, budget %d; want %v, %d", got.AcceptPulls, got.PullDiskBudgetBytes, c.accept, c.budget)
		}
	}
}
