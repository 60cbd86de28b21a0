package requester

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	ma "github.com/multiformats/go-multiaddr"
)

// maxIPFSAddrs caps one holder's IPFS addresses put in a manifest: its
// record's, in order. A manifest merged from several holders (a split's layer
// ranges on different workers) names each one's, maxManifestProviders in all
// (the backend refuses a manifest of more than 64).
const (
	maxIPFSAddrs         = 8
	maxManifestProviders = 4 * maxIPFSAddrs
)

// vetManifest returns the holder's manifest as the backend gets it: only the
// leading blocks whose keys are the prompt's own, counted here (the count
// the holder claims is not trusted), and as providers only addrs, the IPFS
// addresses of the holders' signed capability records (capped), whatever the
// manifest listed.
//
// Decision (hardening, manifest floods): the backend dials every provider a
// manifest names; a holder that lists a megabyte of unroutable addresses
// would stall each requester for hours. The requester has already connected
// its IPFS node to the record's addresses, so the manifest's own list adds
// nothing but risk.
func vetManifest(manifest []byte, keys [][]byte, addrs []ma.Multiaddr) ([]byte, int, error) {
	var doc map[string]any
	if err := json.Unmarshal(manifest, &doc); err != nil {
		return nil, 0, fmt.Errorf("the holder's manifest is not JSON: %w", err)
	}
	size, ok := doc["block_size"].(float64)
	if !ok || size < 1 || size != float64(int(size)) {
		return nil, 0, errors.New("the holder's manifest has no valid block_size")
	}
	blocks, _ := doc["blocks"].([]any)
	count := 0
	for count < len(blocks) && count < len(keys) {
		b, ok := blocks[count].(map[string]any)
		if !ok || b["key"] != hex.EncodeToString(keys[count]) || b["position"] != float64(count)*size {
			break
		}
		count++
	}
	if count == 0 {
		return nil, 0, errors.New("the holder's manifest names none of the prompt's blocks")
	}
	providers := make([]string, 0, min(len(addrs), maxManifestProviders))
	for _, a := range addrs[:min(len(addrs), maxManifestProviders)] {
		providers = append(providers, a.String())
	}
	doc["blocks"], doc["providers"] = blocks[:count], providers
	out, err := json.Marshal(doc)
	if err != nil {
		return nil, 0, err
	}
	return out, count, nil
}
