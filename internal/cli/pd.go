package cli

import (
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// Prefill/decode disaggregation: `infer --prefill-peer A --decode-peer B`
// runs the prompt on worker A and the decode on worker B, which continues
// from A's KV blocks fetched over IPFS (planner.ChoosePD plans it,
// internal/requester runs it; docs/architecture.md, "KV blocks over
// IPFS").
//
// Decisions:
//   - Both flags or neither; different peers, each a valid peer id;
//     --stages > 1 and --local are refused (exit 2). A named peer that
//     discovery does not find exits 3.
//   - The stage lines read "prefill on …" and "decode on …"; infer --json's
//     stages carry "role".
//   - Without the flags the planner may choose P/D itself for a long prompt
//     (requester.ChooseMode, once the prompt's length is known); --no-pd
//     forbids that, and with the flags it is a usage error.

// registerPD defines the P/D flags (distOptions.register calls it).
func (d *distOptions) registerPD(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&d.prefillPeer, "prefill-peer", "", "run the prompt (prefill) on this worker (peer id); needs --decode-peer")
	f.StringVar(&d.decodePeer, "decode-peer", "", "run the decode on this worker (peer id), continuing from the prefill worker's KV blocks fetched over IPFS; needs --prefill-peer")
	f.BoolVar(&d.noPD, "no-pd", false, "never split the prompt and the decode across two workers unless --prefill-peer/--decode-peer say so")
}

// disaggregated reports whether --prefill-peer or --decode-peer was given.
func (d *distOptions) disaggregated() bool {
	return d.prefillPeer != "" || d.decodePeer != ""
}

// validatePD checks the P/D flags (distOptions.validate calls it).
func (d *distOptions) validatePD() error {
	if !d.disaggregated() {
		return nil
	}
	switch {
	case d.noPD:
		return fmt.Errorf("%w: --no-pd cannot be combined with --prefill-peer/--decode-peer", ErrInvalidArgument)
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

// roleName is a stage's role in infer --json and the stage lines ("" for a
// pipeline stage).
func roleName(r pb.StageRole) string {
	switch r {
	case pb.StageRole_STAGE_ROLE_PREFILL:
		return "prefill"
	case pb.StageRole_STAGE_ROLE_DECODE:
		return "decode"
	}
	return ""
}
