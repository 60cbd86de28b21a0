package p2p

import (
	"encoding/json"
	"testing"
)

// TestMergeKVManifests: the manifests of a split's holders (one layer range
// each) merge into one covering every layer; leading blocks only, parts and
// providers deduplicated, another model's manifest left out.
func TestMergeKVManifests(t *testing.T) {
	doc := func(model string, providers []string, blocks ...kvBlockDoc) []byte {
		b, _ := json.Marshal(kvManifestDoc{Format: "edgellm-kv-manifest/1", ModelCID: model, DType: "float32",
			BlockSize: 16, Providers: providers, Blocks: blocks})
		return b
	}
	part := func(start, end int, cid string) kvPartDoc { return kvPartDoc{start, end, cid, 100} }
	block := func(key string, pos int, parts ...kvPartDoc) kvBlockDoc { return kvBlockDoc{key, pos, parts} }
	first := doc("m", []string{"/a"}, block("k0", 0, part(0, 15, "a0")), block("k1", 16, part(0, 15, "a1")),
		block("k2", 32, part(0, 15, "a2")))
	second := doc("m", []string{"/b", "/a"}, block("k0", 0, part(15, 30, "b0"), part(0, 15, "a0")),
		block("k1", 16, part(15, 30, "b1")))
	other := doc("other", []string{"/c"}, block("k0", 0, part(0, 30, "c0")))
	moved := doc("m", nil, block("k0", 0, part(15, 30, "x0")), block("k1", 48, part(15, 30, "x1")))

	tests := []struct {
		name      string
		docs      [][]byte
		blocks    int
		parts     []int // parts per block
		providers int
	}{
		{"one holder", [][]byte{first}, 3, []int{1, 1, 1}, 1},
		{"two layer ranges", [][]byte{first, second}, 3, []int{2, 2, 1}, 2},
		{"another model left out", [][]byte{first, other}, 3, []int{1, 1, 1}, 1},
		{"a moved block stops the merge there", [][]byte{first, moved}, 3, []int{2, 1, 1}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, n, err := MergeKVManifests(tt.docs...)
			if err != nil || n != tt.blocks {
				t.Fatalf("MergeKVManifests = %d blocks, %v; want %d", n, err, tt.blocks)
			}
			var got kvManifestDoc
			if err := json.Unmarshal(raw, &got); err != nil {
				t.Fatal(err)
			}
			if len(got.Providers) != tt.providers || got.ModelCID != "m" || got.Format != "edgellm-kv-manifest/1" {
				t.Fatalf("merged %+v", got)
			}
			for i, b := range got.Blocks {
				if len(b.Parts) != tt.parts[i] || b.Position != 16*i {
					t.Fatalf("block %d: %+v; want %d parts at %d", i, b, tt.parts[i], 16*i)
				}
			}
		})
	}
	if _, _, err := MergeKVManifests([]byte("{")); err == nil {
		t.Fatal("a broken manifest merged")
	}
}
