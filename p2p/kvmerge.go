package p2p

import (
	"encoding/json"
	"fmt"
	"slices"
)

// Merging the manifests of several holders of a prompt's blocks.
//
// Decision: a split run leaves each block's layers on several workers (one
// layer range each), so no single holder's manifest covers a whole-model
// prefill. The requester merges the manifests of the providers it asked:
// per block key, the union of the parts (the backend picks parts covering
// its layers, and checks every block it fetches); the providers' IPFS
// addresses together. The merge keeps the leading blocks every manifest
// agrees on the position of, so a holder cannot move another's blocks.

// kvManifestDoc mirrors edgellm.kv.manifest's JSON (edgellm-kv-manifest/1).
type kvManifestDoc struct {
	Format    string       `json:"format"`
	ModelCID  string       `json:"model_cid"`
	DType     string       `json:"dtype"`
	BlockSize int          `json:"block_size"`
	Providers []string     `json:"providers"`
	Blocks    []kvBlockDoc `json:"blocks"`
}

type kvBlockDoc struct {
	Key      string      `json:"key"`
	Position int         `json:"position"`
	Parts    []kvPartDoc `json:"parts"`
}

type kvPartDoc struct {
	LayerStart int    `json:"layer_start"`
	LayerEnd   int    `json:"layer_end"`
	CID        string `json:"cid"`
	Size       int    `json:"size"`
}

// maxMergedProviders caps the merged providers (the backend reads at most
// as many from a manifest).
const maxMergedProviders = 16

// MergeKVManifests merges manifests of the same model, dtype and block size
// into one, and says how many leading blocks it names. Manifests for another
// model than the first's are left out.
func MergeKVManifests(docs ...[]byte) ([]byte, int, error) {
	var out *kvManifestDoc
	at := map[string]int{} // key -> index in out.Blocks
	for i, raw := range docs {
		var doc kvManifestDoc
		if err := json.Unmarshal(raw, &doc); err != nil {
			return nil, 0, fmt.Errorf("manifest %d: %w", i, err)
		}
		if out == nil {
			out = &kvManifestDoc{Format: doc.Format, ModelCID: doc.ModelCID, DType: doc.DType, BlockSize: doc.BlockSize}
		} else if doc.ModelCID != out.ModelCID || doc.DType != out.DType || doc.BlockSize != out.BlockSize {
			continue
		}
		for _, p := range doc.Providers {
			if !slices.Contains(out.Providers, p) && len(out.Providers) < maxMergedProviders {
				out.Providers = append(out.Providers, p)
			}
		}
		for j, b := range doc.Blocks {
			k, ok := at[b.Key]
			if !ok {
				if j != len(out.Blocks) { // past the blocks merged so far: not leading
					break
				}
				at[b.Key] = len(out.Blocks)
				out.Blocks = append(out.Blocks, kvBlockDoc{Key: b.Key, Position: b.Position})
				k = len(out.Blocks) - 1
			}
			if out.Blocks[k].Position != b.Position {
				break
			}
			for _, p := range b.Parts {
				if !slices.Contains(out.Blocks[k].Parts, p) {
					out.Blocks[k].Parts = append(out.Blocks[k].Parts, p)
				}
			}
		}
	}
	if out == nil {
		return nil, 0, nil
	}
	merged, err := json.Marshal(out)
	if err != nil {
		return nil, 0, err
	}
	return merged, len(out.Blocks), nil
}
