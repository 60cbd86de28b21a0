package cli

import (
	"testing"
	"time"

	"github.com/edgellm/edgellm/internal/requester"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// TestStageOutput: the stage lines on stderr and infer --json's stages,
// for a pipeline and a P/D run.
func TestStageOutput(t *testing.T) {
	rtt := 1500 * time.Microsecond
	tests := []struct {
		name  string
		stage requester.Stage
		line  string
		role  string
		rttMs float64 // 0: null
	}{
		{"pipeline stage", requester.Stage{PeerID: "A", Start: 15, End: 30, RTT: rtt},
			"stage 2/2: layers [15,30) of 30 on A (rtt 1.50 ms)", "", 1.5},
		{"prefill", requester.Stage{PeerID: "A", End: 30, Role: pb.StageRole_STAGE_ROLE_PREFILL, RTT: rtt},
			"prefill on A: layers [0,30) of 30 (rtt 1.50 ms)", "prefill", 1.5},
		{"decode, not measured", requester.Stage{PeerID: "B", End: 30, Role: pb.StageRole_STAGE_ROLE_DECODE},
			"decode on B: layers [0,30) of 30 (rtt not measured)", "decode", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := stageLine(1, 2, tt.stage, 30); got != tt.line {
				t.Errorf("stage line %q, want %q", got, tt.line)
			}
			j := toStagesJSON([]requester.Stage{tt.stage})[0]
			if j.Role != tt.role || j.PeerID != tt.stage.PeerID || j.LayerStart != tt.stage.Start || j.LayerEnd != tt.stage.End ||
				(tt.rttMs == 0) != (j.RTTMs == nil) || (j.RTTMs != nil && *j.RTTMs != tt.rttMs) {
				t.Errorf("json %+v (rtt %v); want role %q, rtt %v", j, j.RTTMs, tt.role, tt.rttMs)
			}
		})
	}
}

// TestModeOf: infer --json's mode says whether a P/D plan came from the
// flags or from the planner.
func TestModeOf(t *testing.T) {
	pd := requester.Request{PrefillPeer: "A", DecodePeer: "B"}
	tests := []struct {
		name    string
		planned requester.Request
		flags   distOptions
		want    string
	}{
		{"one worker or a split", requester.Request{Stages: 2}, distOptions{}, "pipeline"},
		{"forced by the flags", pd, distOptions{prefillPeer: "A", decodePeer: "B"}, "pd"},
		{"chosen by the planner", pd, distOptions{}, "pd_planner"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := modeOf(&requester.Planned{Request: tt.planned}, &tt.flags); got != tt.want {
				t.Errorf("modeOf = %q, want %q", got, tt.want)
			}
		})
	}
}
