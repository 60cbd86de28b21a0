package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestEngineFlag: --engine with an unknown name is refused in one line with
// exit 2, by worker and serve alike, before anything starts.
func TestEngineFlag(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"worker", []string{"worker", "--engine", "tensorrt"}},
		{"serve", []string{"serve", "--engine", "tensorrt"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"--data-dir", t.TempDir()}, tt.args...)
			code := Main(context.Background(), args, strings.NewReader(""), &stdout, &stderr)
			out := strings.TrimSpace(stderr.String())
			if code != ExitUsage || strings.Count(out, "\n") != 0 || !strings.Contains(out, "want torch or vllm") {
				t.Errorf("exit %d, stderr %q; want exit %d and one line naming torch and vllm", code, out, ExitUsage)
			}
		})
	}
}
