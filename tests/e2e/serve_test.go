package e2e

import (
	"os"
	"path/filepath"
	"testing"
)

// TestServeRejectsBadFlags: every refusal of `edgellm serve` is one line and
// the exit code of its kind, before any process starts.
func TestServeRejectsBadFlags(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.key")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	twoKeys := filepath.Join(dir, "two.key")
	if err := os.WriteFile(twoKeys, []byte("a b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"listen without a port", []string{"--listen", "127.0.0.1"}, 2, "--listen"},
		{"listen without a host", []string{"--listen", ":8080"}, 2, "name the host"},
		{"listen on an address not here", []string{"--listen", "192.0.2.1:0"}, 2, "--listen"},
		{"negative queue", []string{"--max-queue", "-1"}, 2, "--max-queue"},
		{"negative token cap", []string{"--max-completion-tokens", "-3"}, 2, "--max-completion-tokens"},
		{"bad stages", []string{"--stages", "-2"}, 2, "--stages"},
		{"bad ray address", []string{"--ray-address", "not-an-ip"}, 2, "--ray-address"},
		{"zero grace", []string{"--shutdown-grace", "0s"}, 2, "durations"},
		{"missing key file", []string{"--api-key-file", filepath.Join(dir, "nope")}, 2, "--api-key-file"},
		{"empty key file", []string{"--api-key-file", empty}, 2, "one key"},
		{"two keys in the file", []string{"--api-key-file", twoKeys}, 2, "one key"},
		{"worker without a swarm", []string{"--worker", "--listen", "127.0.0.1:0"}, 2, "--worker needs a swarm"},
		{"local and worker", []string{"--local", "--worker"}, 2, "cannot be combined"},
		{"an argument", []string{"extra"}, 2, "usage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := e.run(t, "", nil, append([]string{"--data-dir", t.TempDir(), "serve"}, tt.args...)...)
			wantOneLineError(t, r, tt.code, tt.want)
		})
	}
}
