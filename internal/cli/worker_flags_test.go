package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestWorkerPullFlags: a negative pull disk budget, or one without
// --accept-pulls, is refused in one line with exit 2 before anything starts.
func TestWorkerPullFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"negative budget", []string{"--accept-pulls", "--pull-disk-budget-mb", "-1"}, "must not be negative"},
		{"budget without accept-pulls", []string{"--pull-disk-budget-mb", "100"}, "needs --accept-pulls"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"--data-dir", t.TempDir(), "worker"}, tt.args...)
			code := Main(context.Background(), args, strings.NewReader(""), &stdout, &stderr)
			out := strings.TrimSpace(stderr.String())
			if code != ExitUsage || strings.Count(out, "\n") != 0 || !strings.Contains(out, tt.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and one line saying %q", code, out, ExitUsage, tt.want)
			}
		})
	}
}
