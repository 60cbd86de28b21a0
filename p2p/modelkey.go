package p2p

import (
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// MembersKey is the provider key every worker announces, so that a node can
// list the swarm's workers without knowing their models.
var MembersKey = keyFor("edgellm/workers")

// ModelKey is the DHT provider key of a model. For a weights CID it is the
// raw-codec CIDv1 of sha2-256("edgellm/model/<weights cid>"), so only peers
// holding exactly those bytes are found; for a short id without a CID it is
// derived from "edgellm/model-id/<id>". Workers provide both.
func ModelKey(weightsCID string) cid.Cid { return keyFor("edgellm/model/" + weightsCID) }

// ModelIDKey is the provider key of a model's short id.
func ModelIDKey(id string) cid.Cid { return keyFor("edgellm/model-id/" + id) }

// LookupKey picks the provider key for what a user typed: a CID means the
// weights, anything else the short id.
func LookupKey(model string) cid.Cid {
	if _, err := cid.Decode(model); err == nil {
		return ModelKey(model)
	}
	return ModelIDKey(model)
}

func keyFor(s string) cid.Cid {
	h, err := mh.Sum([]byte(s), mh.SHA2_256, -1)
	if err != nil { // sha2-256 is always available
		panic(err)
	}
	return cid.NewCidV1(cid.Raw, h)
}
