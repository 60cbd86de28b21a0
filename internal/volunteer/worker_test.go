package volunteer

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/edgellm/edgellm/internal/ipfs"
	"github.com/edgellm/edgellm/p2p"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// fakeLocal is a backend serving one model, with no IPFS node.
type fakeLocal struct {
	Backend
	active uint32
}

func (f *fakeLocal) Status(context.Context) (*pb.StatusResponse, error) {
	return &pb.StatusResponse{BackendVersion: "test", Device: "cpu", MemoryTotalBytes: 8 << 30, MemoryFreeBytes: 4 << 30,
		DecodeTokensPerS: 40, ActiveRequests: f.active,
		LoadedModels: []*pb.ModelInfo{{Id: "m", WeightsCid: "bafk-m", NumLayers: 30, WeightsBytes: 100 << 20}}}, nil
}

func (f *fakeLocal) ListModels(context.Context) ([]*pb.ModelInfo, error) {
	return []*pb.ModelInfo{{Id: "m", WeightsCid: "bafk-m", NumLayers: 30, WeightsBytes: 100 << 20},
		{Id: "cold", WeightsCid: "bafk-cold", NumLayers: 4, WeightsBytes: 1 << 20, LoadMs: 1500},
		{Id: "other", WeightsCid: "bafk-other", NumLayers: 4}}, nil
}

func (f *fakeLocal) IPFS() *ipfs.Client { return nil }

// TestCapabilitiesSeveralModels: a worker serving several models lists each
// one it serves, in order, the loaded one as loaded and the others with
// their last load time; a model in the store it does not serve is left out.
func TestCapabilitiesSeveralModels(t *testing.T) {
	src := &backendSource{b: &fakeLocal{}, served: []string{"cold", "m", "absent"}}
	c, err := src.Capabilities(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Models) != 2 || c.Models[0].ID != "cold" || !c.Models[0].Unloaded || c.Models[0].LoadTime != 1500*time.Millisecond ||
		c.Models[1].ID != "m" || c.Models[1].Unloaded || c.Models[0].LayerRanges[0] != (p2p.LayerRange{Start: 0, End: 4}) {
		t.Fatalf("models %+v; want cold (unloaded, 1.5 s) then m (loaded)", c.Models)
	}
}

// TestCapabilities: the record a worker advertises, from its backend's
// status and the operator's settings; sessions count as load.
func TestCapabilities(t *testing.T) {
	tests := []struct {
		name       string
		active     uint32
		sessions   int
		wantActive uint32
	}{
		{"idle", 0, 0, 0},
		{"generating", 1, 0, 1},
		{"in a session between requests", 0, 2, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &backendSource{b: &fakeLocal{active: tt.active}, price: 1500, region: "lab", maxSessions: 3}
			src.serve("10.0.0.2", func() int { return tt.sessions })
			c, err := src.Capabilities(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if c.ActiveSessions != tt.wantActive || c.MaxSessions != 3 || c.PricePer1kMicros != 1500 || c.Region != "lab" ||
				c.RayAddress != "10.0.0.2" || c.Device != "cpu" || c.MemoryFreeBytes != 4<<30 {
				t.Errorf("capabilities %+v", c)
			}
			if len(c.Models) != 1 || c.Models[0].WeightsCID != "bafk-m" ||
				len(c.Models[0].LayerRanges) != 1 || c.Models[0].LayerRanges[0] != (p2p.LayerRange{Start: 0, End: 30}) {
				t.Errorf("models %+v; want m held whole", c.Models)
			}
		})
	}
}

// TestStartClose: a started worker is found by a member of its swarm with
// the record its backend makes, writes its state file (owner-only: it holds
// the swarm's join string), and on Close withdraws and removes the file.
func TestStartClose(t *testing.T) {
	secret, err := p2p.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	w, err := Start(t.Context(), &fakeLocal{}, Options{DataDir: dir, Join: p2p.Join{Secret: secret},
		Listen: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")}, NoMDNS: true, RayAddress: "127.0.0.1",
		Refresh: time.Second, RecordTTL: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			w.Close(context.Background())
		}
	})

	path := filepath.Join(dir, StateFile)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v, %v; want mode 0600", fi, err)
	}
	var st workerState
	data, _ := os.ReadFile(path)
	if err := json.Unmarshal(data, &st); err != nil || st.PeerID != w.Node().ID().String() || st.Join == "" || len(st.Addrs) == 0 {
		t.Fatalf("state %s: %v", data, err)
	}

	join, err := p2p.ParseJoin(st.Join)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := p2p.NewEphemeralIdentity()
	member, err := p2p.New(p2p.WithIdentity(key), p2p.WithSecret(join.Secret), p2p.WithBootstrap(join.Bootstrap...),
		p2p.WithMDNS(false), p2p.WithListenAddrs(ma.StringCast("/ip4/127.0.0.1/tcp/0")))
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	found := member.LookupSettled(ctx, "m")
	if len(found) != 1 || found[0].Record.PeerID != w.Node().ID() || found[0].Record.RayAddress != "127.0.0.1" {
		t.Fatalf("found %+v; want the worker serving m", found)
	}

	w.Close(t.Context())
	closed = true
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file after Close: %v", err)
	}
}
