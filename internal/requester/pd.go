package requester

import (
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
//     worker lost mid-generation is replaced as a pipeline stage is
//     (planner.Replace moves its whole range to a worker not in the plan,
//     so never onto the prefill worker): the replay is the P/D request with
//     the tokens so far (resume_token_ids) on the new plan. The backend
//     keeps the cluster session's recent handoffs across plans
//     (backend/edgellm/cluster/disaggregated/handoffs.py), so the new
//     decode worker fetches the prompt's blocks the prefill worker stored
//     for the lost attempt (still in its IPFS node) and computes only the
//     tokens generated so far on top; the prefill worker computes nothing.
//     Blocks it cannot fetch or that do not check out cost a recompute on
//     the new decode worker, with a warning, never the request. With no
//     spare worker the request ends with ErrUnavailable naming the lost
//     decode worker.

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

// pdDescribe names the decode worker of a P/D plan, for failover lines.
func (c *Cluster) pdDescribe() string {
	plan := c.Plan()
	id := "?"
	if len(plan.Stages) == 2 {
		id = plan.Stages[1].PeerID
	}
	return "decode worker " + id
}
