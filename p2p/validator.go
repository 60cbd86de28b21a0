package p2p

import (
	"fmt"
	"strings"
	"time"

	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/peer"
)

// RecordNamespace is the DHT namespace of capability records: a peer's record
// lives under /edgellm-caps/<binary peer id>.
const RecordNamespace = "edgellm-caps"

// RecordKey is the DHT key of p's capability record.
func RecordKey(p peer.ID) string { return "/" + RecordNamespace + "/" + string(p) }

// Validator is the DHT record.Validator for RecordNamespace. Validate accepts
// only a signed envelope of at most MaxRecordSize bytes whose signer is the
// peer named by the key and by the record, and whose expiry is in the future;
// Select prefers the highest sequence number. A withdrawal is a valid record
// (so that it replaces the live one) that Lookup treats as "gone".
type Validator struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

var _ record.Validator = Validator{}

// Validate implements record.Validator.
func (v Validator) Validate(key string, value []byte) error {
	_, err := v.open(key, value)
	return err
}

// Select implements record.Validator: the index of the record with the highest
// sequence number, the first on ties. Invalid records are never selected.
func (v Validator) Select(key string, values [][]byte) (int, error) {
	best, bestSeq := -1, uint64(0)
	for i, val := range values {
		rec, err := v.open(key, val)
		if err != nil {
			continue
		}
		if best == -1 || rec.Seq > bestSeq {
			best, bestSeq = i, rec.Seq
		}
	}
	if best == -1 {
		return 0, fmt.Errorf("%w: no valid record among %d", ErrInvalidRecord, len(values))
	}
	return best, nil
}

func (v Validator) open(key string, value []byte) (*Record, error) {
	id, err := peerFromRecordKey(key)
	if err != nil {
		return nil, err
	}
	rec, err := OpenRecord(value)
	if err != nil {
		return nil, err
	}
	if rec.PeerID != id {
		return nil, fmt.Errorf("%w: record of %s stored under the key of %s", ErrInvalidRecord, rec.PeerID, id)
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	if !now().Before(rec.Expires) {
		return nil, fmt.Errorf("%w: at %s", ErrRecordExpired, rec.Expires.UTC().Format(time.RFC3339))
	}
	if rec.Issued.After(now().Add(MaxClockSkew)) {
		return nil, fmt.Errorf("%w: issued in the future, at %s", ErrInvalidRecord, rec.Issued.UTC().Format(time.RFC3339))
	}
	return rec, nil
}

func peerFromRecordKey(key string) (peer.ID, error) {
	rest, ok := strings.CutPrefix(key, "/"+RecordNamespace+"/")
	if !ok {
		return "", fmt.Errorf("%w: key outside /%s/", ErrInvalidRecord, RecordNamespace)
	}
	id, err := peer.IDFromBytes([]byte(rest))
	if err != nil {
		return "", fmt.Errorf("%w: key: %v", ErrInvalidRecord, err)
	}
	return id, nil
}
