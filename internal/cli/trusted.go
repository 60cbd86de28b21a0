package cli

import (
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/pflag"
)

// trustedPeersUsage is --trusted-peers's help, the same for infer, session
// open and serve.
const trustedPeersUsage = "plan only on these workers (peer ids, comma-separated; default: any member)"

// registerTrustedPeers adds --trusted-peers to f.
//
// Decision (hardening, lying capability records): a member's record is its
// own claim; a user who knows which machines are theirs names them, and the
// planner's trusted-only mode (planner.Request.TrustedOnly) then plans, fails
// over and runs P/D only on those.
func registerTrustedPeers(f *pflag.FlagSet, into *[]string) {
	f.StringSliceVar(into, "trusted-peers", nil, trustedPeersUsage)
}

// checkTrustedPeers refuses a --trusted-peers entry that is not a peer id.
func checkTrustedPeers(ids []string) error {
	for _, id := range ids {
		if _, err := peer.Decode(id); err != nil {
			return fmt.Errorf("%w: --trusted-peers: %q is not a peer id", ErrInvalidArgument, id)
		}
	}
	return nil
}
