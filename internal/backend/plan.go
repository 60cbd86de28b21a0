package backend

import (
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// PlanStage is one peer's part of a distributed generation: the layers
// [Start, End) on the Ray node that offers Resource ("peer:<peer id>").
type PlanStage struct {
	Resource   string
	Start, End uint32
	WeightsCID string
}

// NewPlan is the GenerateRequest.Plan for running a generation across the
// session's cluster; stages in pipeline order. Set it on the request given
// to Generate; the backend validates it (INVALID_ARGUMENT when the stages
// are not contiguous, do not cover the model, or name an unknown session).
func NewPlan(sessionID string, stages []PlanStage) *pb.Plan {
	p := &pb.Plan{SessionId: sessionID}
	for _, s := range stages {
		p.Stages = append(p.Stages, &pb.PlanStage{
			PeerResource: s.Resource, LayerStart: s.Start, LayerEnd: s.End, WeightsCid: s.WeightsCID,
		})
	}
	return p
}
