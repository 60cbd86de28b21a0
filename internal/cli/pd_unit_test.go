package cli

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
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
		{"--no-pd alone", distOptions{noPD: true}, ""},
		{"--no-pd with the peers", distOptions{prefillPeer: a, decodePeer: b, noPD: true}, "--no-pd cannot be combined"},
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
