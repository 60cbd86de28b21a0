package cli

import (
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/edgellm/edgellm/p2p"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// Prefill/decode disaggregation (DESIGN.md, "KV blocks over IPFS"):
// `infer --prefill-peer A --decode-peer B` runs the prompt on worker A and
// the decode on worker B. The backend does the work
// (backend/edgellm/cluster/disaggregated.py): A computes the prompt, stores
// its KV blocks in A's IPFS node and returns their manifest; B fetches the
// blocks by CID, checks each against the request, computes what they do not
// cover and generates.
//
// Decisions:
//   - Both flags or neither; different peers; each must be a worker found
//     by discovery that can hold the whole model (planner.ChoosePD).
//     --stages > 1 is refused (each role runs every layer).
//   - Both workers join the session with the whole layer range (what a
//     worker serving the model advertises). The stage lines read "prefill
//     on …" and "decode on …"; infer --json's stages carry "role".
//   - Failover: the prefill worker is needed only until its KV blocks are
//     handed over, and the backend covers its loss before that (the decode
//     worker computes the prompt), so its loss is not watched. A decode
//     worker lost mid-generation ends the request with exit 4 and one line
//     naming it: a P/D run does not fail over (replaying onto a new decode
//     worker would need a fresh prefill/decode plan; pipeline runs do fail
//     over).

// registerPD defines the P/D flags (distOptions.register calls it).
func (d *distOptions) registerPD(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&d.prefillPeer, "prefill-peer", "", "run the prompt (prefill) on this worker (peer id); needs --decode-peer")
	f.StringVar(&d.decodePeer, "decode-peer", "", "run the decode on this worker (peer id), continuing from the prefill worker's KV blocks fetched over IPFS; needs --prefill-peer")
}

// disaggregated reports whether --prefill-peer or --decode-peer was given.
func (d *distOptions) disaggregated() bool {
	return d != nil && (d.prefillPeer != "" || d.decodePeer != "")
}

// validatePD checks the P/D flags (distOptions.validate calls it).
func (d *distOptions) validatePD() error {
	if !d.disaggregated() {
		return nil
	}
	switch {
	case d.prefillPeer == "" || d.decodePeer == "":
		return fmt.Errorf("%w: --prefill-peer and --decode-peer go together", ErrInvalidArgument)
	case d.local:
		return fmt.Errorf("%w: --prefill-peer and --decode-peer name swarm workers; --local runs on this machine", ErrInvalidArgument)
	case d.stages > 1:
		return fmt.Errorf("%w: --stages %d cannot be combined with --prefill-peer/--decode-peer (each runs every layer)", ErrInvalidArgument, d.stages)
	}
	for _, f := range []struct{ name, id string }{{"--prefill-peer", d.prefillPeer}, {"--decode-peer", d.decodePeer}} {
		if _, err := peer.Decode(f.id); err != nil {
			return fmt.Errorf("%w: %s %q is not a peer id", ErrInvalidArgument, f.name, f.id)
		}
	}
	if d.prefillPeer == d.decodePeer {
		return fmt.Errorf("%w: --prefill-peer and --decode-peer must be different workers", ErrInvalidArgument)
	}
	return nil
}

// stageRoles are the roles of a plan's stages on the wire: pipeline stages
// for a pipeline, prefill then decode for a P/D run.
func (d *distOptions) stageRoles(n int) []pb.StageRole {
	roles := make([]pb.StageRole, n)
	if d.disaggregated() && n == 2 {
		roles[0], roles[1] = pb.StageRole_STAGE_ROLE_PREFILL, pb.StageRole_STAGE_ROLE_DECODE
	}
	return roles
}

// roleName is a stage's role in infer --json ("" for a pipeline stage).
func roleName(r pb.StageRole) string {
	switch r {
	case pb.StageRole_STAGE_ROLE_PREFILL:
		return "prefill"
	case pb.StageRole_STAGE_ROLE_DECODE:
		return "decode"
	}
	return ""
}

// setRoles marks a backend plan's stages with the run's roles.
func (d *distOptions) setRoles(p *pb.Plan) {
	for i, r := range d.stageRoles(len(p.GetStages())) {
		p.Stages[i].Role = r
	}
}

// watched are the sessions whose loss ends a generation: every stage's for
// a pipeline; for a P/D run only the decode worker's (the backend covers
// the prefill worker's loss).
func (d *distOptions) watched(handles []*p2p.SessionHandle) []*p2p.SessionHandle {
	if d.disaggregated() && len(handles) == 2 {
		return handles[1:]
	}
	return handles
}

// pdLost is the error of a P/D generation whose decode worker was lost.
func (c *clusterRun) pdLost(tokens int) error {
	plan := c.Plan()
	id := "?"
	if len(plan.Stages) == 2 {
		id = plan.Stages[1].PeerID
	}
	return fmt.Errorf("%w: decode worker %s was lost after %s; a prefill/decode run does not fail over (run without --prefill-peer/--decode-peer for failover)",
		ErrUnavailable, id, plural(tokens, "token"))
}

// stageLine is the stderr line of stage i of n.
func (d *distOptions) stageLine(i, n int, s stageJSON, numLayers int, rtt string) string {
	if s.Role != "" {
		return fmt.Sprintf("%s on %s: layers [%d,%d) of %d (rtt %s)", s.Role, s.PeerID, s.LayerStart, s.LayerEnd, numLayers, rtt)
	}
	return fmt.Sprintf("stage %d/%d: layers [%d,%d) of %d on %s (rtt %s)", i+1, n, s.LayerStart, s.LayerEnd, numLayers, s.PeerID, rtt)
}
