package p2p

import (
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestValidator(t *testing.T) {
	key, other := newKey(t), newKey(t)
	id, _ := peer.IDFromPrivateKey(key)
	otherID, _ := peer.IDFromPrivateKey(other)
	older, _ := signedRecord(t, key, 5, time.Minute, sampleCaps("m"))
	newer, _ := signedRecord(t, key, 6, time.Minute, sampleCaps("m"))
	expired, _ := signedRecord(t, key, 9, time.Millisecond, sampleCaps("m"))
	v := Validator{}
	time.Sleep(2 * time.Millisecond) // let the 1ms record expire (not synchronization)

	if err := v.Validate(RecordKey(id), newer); err != nil {
		t.Fatalf("valid record: %v", err)
	}
	if err := v.Validate(RecordKey(id), expired); !errors.Is(err, ErrRecordExpired) {
		t.Fatalf("expired: %v", err)
	}
	// Issued a year ahead (and so valid for a year and a day): refused, by
	// the DHT's validator and by Live.
	_, rec := signedRecord(t, key, 10, time.Minute, sampleCaps("m"))
	rec.Issued, rec.Expires = rec.Issued.Add(365*24*time.Hour), rec.Expires.Add(365*24*time.Hour)
	future, err := SealRecord(rec, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Validate(RecordKey(id), future); !errors.Is(err, ErrInvalidRecord) {
		t.Fatalf("issued in the future: %v", err)
	}
	if rec.Live(time.Now()) || !rec.Live(rec.Issued.Add(-time.Minute)) {
		t.Fatal("Live does not refuse a record issued beyond the clock skew")
	}
	if err := v.Validate(RecordKey(otherID), newer); !errors.Is(err, ErrInvalidRecord) {
		t.Fatalf("under another peer's key: %v", err)
	}
	for _, key := range []string{"/other/" + string(id), "/edgellm-caps/garbage", ""} {
		if err := v.Validate(key, newer); !errors.Is(err, ErrInvalidRecord) {
			t.Fatalf("key %q: %v", key, err)
		}
	}
	// Newest sequence wins, in either order; invalid entries never win.
	for _, vals := range [][][]byte{{older, newer}, {newer, older}, {expired, older, newer, []byte("junk")}} {
		i, err := v.Select(RecordKey(id), vals)
		if err != nil || string(vals[i]) != string(newer) {
			t.Fatalf("Select picked %d (%v)", i, err)
		}
	}
	if _, err := v.Select(RecordKey(id), [][]byte{expired, []byte("junk")}); err == nil {
		t.Fatal("Select chose among invalid records")
	}
}

func FuzzValidator(f *testing.F) {
	key := newKey(f)
	id, _ := peer.IDFromPrivateKey(key)
	good, _ := signedRecord(f, key, 2, time.Hour, sampleCaps("m"))
	f.Add(RecordKey(id), good)
	f.Add("/edgellm-caps/", []byte{})
	f.Add(RecordKey(id), []byte("junk"))
	f.Fuzz(func(t *testing.T, k string, data []byte) {
		v := Validator{}
		verr := v.Validate(k, data)
		i, err := v.Select(RecordKey(id), [][]byte{data, good})
		if err != nil || i < 0 || i > 1 {
			t.Fatalf("Select with one valid record: %d %v", i, err)
		}
		if i == 0 && k == RecordKey(id) && verr != nil {
			t.Fatal("Select picked a record Validate refuses")
		}
	})
}
