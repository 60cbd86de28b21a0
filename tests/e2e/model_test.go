package e2e

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/internal/testutil"
)

// buildTinyModel writes a small random model of arch (tests/python/tiny_models.py)
// into a temp directory and returns it.
func buildTinyModel(t *testing.T, arch string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), arch)
	root := testutil.RepoRoot(t)
	cmd := exec.CommandContext(t.Context(), testutil.Python(t), "-m", "tests.python.tiny_models",
		arch, out, filepath.Join(testutil.ModelsDir(t), "smollm2-135m"))
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build a tiny %s model: %v\n%s", arch, err, b)
	}
	return out
}

// TestModelCommand adds a model directory to a store of its own, lists it, answers
// with it through infer, and removes it; bad inputs each end in one line and the
// exit code of their kind (the Python tool's own tests cover every bad input).
func TestModelCommand(t *testing.T) {
	e := newEnv(t)
	store := []string{"EDGELLM_MODELS_DIR=" + t.TempDir()}
	src := buildTinyModel(t, "qwen2")

	r := e.run(t, "", store, "model", "add", src, "--id", "tiny")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("model add: exit %d, stderr %q", r.code, r.stderr)
	}
	id, cid, _ := strings.Cut(strings.TrimSpace(r.stdout), " ")
	if id != "tiny" || !strings.HasPrefix(cid, "bafy") {
		t.Fatalf("model add printed %q, want the id and a CID", r.stdout)
	}

	r = e.run(t, "", store, "model", "list", "--json")
	var list struct {
		Models []struct {
			ID           string `json:"id"`
			Architecture string `json:"architecture"`
			WeightsCID   string `json:"weights_cid"`
			Parameters   int64  `json:"parameters"`
		} `json:"models"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("model list --json: %v\n%s", err, r.stdout)
	}
	found := false
	for _, m := range list.Models {
		found = found || (m.ID == "tiny" && m.Architecture == "Qwen2ForCausalLM" && m.WeightsCID == cid && m.Parameters > 0)
	}
	if !found {
		t.Errorf("model list = %+v, want tiny with its CID", list.Models)
	}

	r = e.run(t, "", store, "infer", "--model", "tiny", "--raw", "--max-tokens", "8", "--json", "The river")
	var answer struct {
		Model            string `json:"model"`
		WeightsCID       string `json:"weights_cid"`
		CompletionTokens int    `json:"completion_tokens"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &answer); err != nil || r.code != 0 {
		t.Fatalf("infer --model tiny: exit %d, %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	if answer.Model != "tiny" || answer.WeightsCID != cid || answer.CompletionTokens == 0 {
		t.Errorf("infer answered %+v, want tiny's weights", answer)
	}

	for _, c := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"nonexistent path", []string{"model", "add", filepath.Join(src, "nope")}, 2, "no such file"},
		{"id naming other weights", []string{"model", "add", buildTinyModel(t, "llama"), "--id", "tiny"}, 2, "already names other weights"},
		{"show unknown", []string{"model", "show", "nope"}, 3, "unknown model"},
	} {
		t.Run(c.name, func(t *testing.T) {
			wantOneLineError(t, e.run(t, "", store, c.args...), c.code, c.want)
		})
	}

	if r = e.run(t, "", store, "model", "rm", "tiny"); r.code != 0 {
		t.Fatalf("model rm: exit %d: %s", r.code, r.stderr)
	}
	wantOneLineError(t, e.run(t, "", store, "model", "show", "tiny"), 3, "unknown model")
}
