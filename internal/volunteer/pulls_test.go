package volunteer

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/p2p"
)

// republishCount counts the record's re-publications.
type republishCount int

func (r *republishCount) Republish() { *r++ }

// TestPullHandler: a pulled model joins the served models (the record lists
// it, unloaded, with its directory CID) and the record is re-published; a
// model already served is not pulled again; the same id with other weights
// and a failed pull are refused with the reason, and serve nothing new.
func TestPullHandler(t *testing.T) {
	tests := []struct {
		name       string
		ask        p2p.PullAsk
		pullErr    error
		wantPulled bool
		wantErr    string
		wantServed []string
	}{
		{"pulled and served", p2p.PullAsk{ModelID: "other", DirCID: "bafy-other", WeightsCID: "bafk-other"}, nil, true, "", []string{"m", "other"}},
		{"already served", p2p.PullAsk{ModelID: "m", DirCID: "bafy-m", WeightsCID: "bafk-m"}, nil, false, "", []string{"m"}},
		{"served with other weights", p2p.PullAsk{ModelID: "m", DirCID: "bafy-x", WeightsCID: "bafk-x"}, nil, false, "other weights", []string{"m"}},
		{"over the disk budget", p2p.PullAsk{ModelID: "other", DirCID: "bafy-other", WeightsCID: "bafk-other"},
			errors.New("the model needs 4 MiB, the disk budget allows 1 MiB"), true, "disk budget", []string{"m"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &backendSource{b: &fakeLocal{}, served: []string{"m"}, acceptPulls: true, pullBudget: 1 << 20}
			var pulled []p2p.PullAsk
			var republished republishCount
			h := &pullHandler{src: src, node: &republished, log: slog.New(slog.DiscardHandler),
				pull:    func(_ context.Context, ask p2p.PullAsk) error { pulled = append(pulled, ask); return tt.pullErr },
				publish: func(_ context.Context, id string) (string, error) { return "bafy-" + id, nil }}
			err := h.Pull(t.Context(), "", tt.ask)
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Pull: %v; want an error containing %q", err, tt.wantErr)
			}
			if (len(pulled) == 1) != tt.wantPulled {
				t.Errorf("pulled %v; want a pull: %v", pulled, tt.wantPulled)
			}
			c, err := src.Capabilities(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, m := range c.Models {
				ids = append(ids, m.ID)
			}
			if !slices.Equal(ids, tt.wantServed) || !c.AcceptPulls || c.PullDiskBudgetBytes != 1<<20 {
				t.Errorf("record serves %v (accept pulls %v, budget %d); want %v, true, 1 MiB", ids, c.AcceptPulls, c.PullDiskBudgetBytes, tt.wantServed)
			}
			if tt.wantPulled && tt.wantErr == "" {
				last := c.Models[len(c.Models)-1]
				if !last.Unloaded || last.DirCID != "bafy-other" || republished != 1 {
					t.Errorf("pulled model %+v, %d re-publications; want unloaded, shared as bafy-other, one", last, republished)
				}
			}
		})
	}
}
