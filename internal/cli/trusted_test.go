package cli

import (
	"bytes"
	"strings"
	"testing"
)

// TestTrustedPeersFlag: --trusted-peers takes peer ids; anything else is one
// line and exit 2 before anything starts, for infer, session open and serve.
func TestTrustedPeersFlag(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"infer", []string{"infer", "--trusted-peers", "not-a-peer", "hi"}},
		{"serve", []string{"serve", "--trusted-peers", "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo,nope"}},
		{"session open", []string{"session", "open", "--trusted-peers", "nope"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"--data-dir", t.TempDir()}, tt.args...)
			code := Main(t.Context(), args, strings.NewReader(""), &stdout, &stderr)
			line := strings.TrimSpace(stderr.String())
			if code != 2 || strings.Contains(line, "\n") || !strings.Contains(line, "--trusted-peers") {
				t.Fatalf("exit %d, stderr %q", code, line)
			}
		})
	}
}
