package cli

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/edgellm/edgellm/p2p"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

func pdPeerID(t *testing.T) string {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

// TestValidatePD: the P/D flags' refusals (exit 2) and what passes.
func TestValidatePD(t *testing.T) {
	a, b := pdPeerID(t), pdPeerID(t)
	tests := []struct {
		name string
		d    distOptions
		want string // "" = valid
	}{
		{"neither", distOptions{}, ""},
		{"both", distOptions{prefillPeer: a, decodePeer: b}, ""},
		{"with --stages 1", distOptions{prefillPeer: a, decodePeer: b, stages: 1}, ""},
		{"only prefill", distOptions{prefillPeer: a}, "go together"},
		{"only decode", distOptions{decodePeer: b}, "go together"},
		{"same peer", distOptions{prefillPeer: a, decodePeer: a}, "different workers"},
		{"bad prefill id", distOptions{prefillPeer: "xyz", decodePeer: b}, `--prefill-peer "xyz" is not a peer id`},
		{"bad decode id", distOptions{prefillPeer: a, decodePeer: "12D3"}, `--decode-peer "12D3" is not a peer id`},
		{"with --stages 2", distOptions{prefillPeer: a, decodePeer: b, stages: 2}, "--stages 2 cannot be combined"},
		{"with --local", distOptions{prefillPeer: a, decodePeer: b, local: true}, "--local runs on this machine"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.d.discoverFor = time.Second
			err := tt.d.validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("validate: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("validate: %v; want invalid argument with %q", err, tt.want)
			}
			if ExitCode(err) != 2 {
				t.Fatalf("exit %d; want 2", ExitCode(err))
			}
		})
	}
}

// TestPDRoles: roles on the backend plan and in --json, and which sessions
// are watched for loss.
func TestPDRoles(t *testing.T) {
	pd := &distOptions{prefillPeer: "A", decodePeer: "B"}
	p := &pb.Plan{Stages: []*pb.PlanStage{{}, {}}}
	pd.setRoles(p)
	if p.Stages[0].Role != pb.StageRole_STAGE_ROLE_PREFILL || p.Stages[1].Role != pb.StageRole_STAGE_ROLE_DECODE {
		t.Errorf("roles %v", p.Stages)
	}
	pipe := &distOptions{}
	p = &pb.Plan{Stages: []*pb.PlanStage{{}, {}}}
	pipe.setRoles(p)
	if p.Stages[0].Role != pb.StageRole_STAGE_ROLE_PIPELINE || p.Stages[1].Role != pb.StageRole_STAGE_ROLE_PIPELINE {
		t.Errorf("pipeline roles %v", p.Stages)
	}
	if roleName(pb.StageRole_STAGE_ROLE_PREFILL) != "prefill" || roleName(pb.StageRole_STAGE_ROLE_DECODE) != "decode" ||
		roleName(pb.StageRole_STAGE_ROLE_PIPELINE) != "" {
		t.Error("role names")
	}
	handles := []*p2p.SessionHandle{{}, {}}
	if w := pd.watched(handles); len(w) != 1 || w[0] != handles[1] {
		t.Errorf("P/D watches %d sessions; want the decode worker's", len(w))
	}
	if w := pipe.watched(handles); len(w) != 2 {
		t.Errorf("a pipeline watches %d sessions; want 2", len(w))
	}
	var none *distOptions
	if none.disaggregated() {
		t.Error("nil options are not P/D")
	}
	line := pd.stageLine(0, 2, stageJSON{PeerID: "A", LayerEnd: 30, Role: "prefill"}, 30, "1.00 ms")
	if line != "prefill on A: layers [0,30) of 30 (rtt 1.00 ms)" {
		t.Errorf("stage line %q", line)
	}
}
