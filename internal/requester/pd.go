package requester

import (
	"fmt"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// Prefill/decode runs (Request.PrefillPeer, DecodePeer): the plan is two
// whole-model stages, prefill then decode (planner.ChoosePD), and the
// backend does the handover (backend/edgellm/cluster/disaggregated.py): the
// prefill worker computes the prompt and stores its KV blocks in its IPFS
// node, the decode worker fetches them by CID and generates.
//
// Decisions:
//   - Both workers join the session with the whole layer range (what a
//     worker serving the model advertises); the backend plan's stages carry
//     their roles, as do Stages.
//   - Failover: the prefill worker is needed only until its KV blocks are
//     handed over, and the backend covers its loss before that (the decode
//     worker computes the prompt), so its loss is not watched. A decode
//     worker lost mid-generation ends the request with ErrUnavailable naming
//     it: a P/D run does not fail over (replaying onto a new decode worker
//     would need a fresh prefill/decode plan; pipeline runs do fail over).

// stageRoles are the roles of a plan's n stages on the wire: pipeline
// stages, or prefill then decode.
func (c *Cluster) stageRoles(n int) []pb.StageRole {
	roles := make([]pb.StageRole, n)
	if c.req.disaggregated() && n == 2 {
		roles[0], roles[1] = pb.StageRole_STAGE_ROLE_PREFILL, pb.StageRole_STAGE_ROLE_DECODE
	}
	return roles
}

// watched are the indices of the n stages whose worker's loss ends a
// generation: every stage of a pipeline, only the decode stage of a P/D
// run.
func (c *Cluster) watched(n int) []int {
	if c.req.disaggregated() && n == 2 {
		return []int{1}
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// pdLost is the error of a P/D generation whose decode worker was lost.
func (c *Cluster) pdLost(tokens int) error {
	plan := c.Plan()
	id := "?"
	if len(plan.Stages) == 2 {
		id = plan.Stages[1].PeerID
	}
	return fmt.Errorf("%w: decode worker %s was lost after %s; a prefill/decode run does not fail over (a pipeline run does)",
		ErrUnavailable, id, plural(tokens, "token"))
}
