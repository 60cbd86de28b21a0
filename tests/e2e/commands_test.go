package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestModelsAndVersion(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	t.Run("models --json lists the embedded model", func(t *testing.T) {
		t.Parallel()
		r := e.run(t, "", nil, "models", "--json")
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		var out struct {
			Models []struct {
				ID        string `json:"id"`
				NumLayers int    `json:"num_layers"`
			} `json:"models"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
			t.Fatalf("stdout is not JSON: %v\n%s", err, r.stdout)
		}
		found := false
		for _, m := range out.Models {
			found = found || m.ID == "smollm2-135m"
		}
		if !found {
			t.Errorf("models = %+v, want smollm2-135m", out.Models)
		}
	})

	t.Run("version names the backend", func(t *testing.T) {
		t.Parallel()
		r := e.run(t, "", nil, "version")
		if r.code != 0 || !strings.HasPrefix(r.stdout, "edgellm ") || !strings.Contains(r.stdout, "\nbackend: ") ||
			strings.Contains(r.stdout, "unavailable") {
			t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("version without a backend still succeeds", func(t *testing.T) {
		t.Parallel()
		r := e.run(t, "", []string{"EDGELLM_PYTHON=/nonexistent/python"}, "version")
		if r.code != 0 || !strings.Contains(r.stdout, "backend: unavailable (") {
			t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("help on every command", func(t *testing.T) {
		t.Parallel()
		for _, c := range []string{"infer", "models", "version"} {
			r := e.run(t, "", nil, c, "--help")
			if r.code != 0 || !strings.Contains(r.stdout, "Usage:") {
				t.Errorf("%s --help: exit %d, stdout %q", c, r.code, r.stdout)
			}
		}
		r := e.run(t, "", nil, "--help")
		if !strings.Contains(r.stdout, "Exit codes:") {
			t.Errorf("root help does not document exit codes: %q", r.stdout)
		}
	})
}
