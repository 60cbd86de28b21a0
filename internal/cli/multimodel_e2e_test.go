package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgellm/edgellm/internal/cli"
	"github.com/edgellm/edgellm/internal/testutil"
)

// TestSeveralModelsPerWorker: a swarm whose workers hold different models.
// Worker A serves two small random models (built here; --model all) with a
// model memory budget for one of them; worker B serves the embedded model. Each request
// goes to the worker holding its model and answers exactly as transformers
// generate does; A serves its two models in turn, unloading the least
// recently used one, which its record shows (loaded, not loaded). A model
// larger than the budget is refused at start with one line.
//
// Both workers accept pulls (worker --accept-pulls; A within a 40 MiB disk
// budget): a request for two stages of a model only A serves makes B pull it
// from A and serve it, and the split answers as generate does; two stages of
// the embedded model (B holds it) would need A to pull 270 MB, which A
// refuses: the request fails with one line and the exit code for
// unavailable.
func TestSeveralModelsPerWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	testutil.NoLeakedChildren(t)
	c := newCLIEnv(t)
	if !c.kubo() {
		t.Fatal("no Kubo binary (make setup builds .bin/ipfs)")
	}
	storeA, storeB := t.TempDir(), t.TempDir()
	smol := filepath.Join(testutil.ModelsDir(t), "smollm2-135m")
	if err := os.Symlink(smol, filepath.Join(storeB, "smollm2-135m")); err != nil {
		t.Fatal(err)
	}
	c.ns = testutil.NewNetNS(t)
	a, b := c.withModels(storeA), c.withModels(storeB)
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()} // A, B, the requester
	t.Cleanup(func() { noProcessesOf(t, dirs) })
	for i, arch := range []string{"qwen2", "llama"} {
		src := filepath.Join(t.TempDir(), arch)
		build := exec.CommandContext(t.Context(), testutil.Python(t), "-m", "tests.python.tiny_models", arch, src, smol, strconv.Itoa(i))
		build.Dir = testutil.RepoRoot(t)
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build a tiny %s model: %v\n%s", arch, err, out)
		}
		if _, stderr, code := a.run("--data-dir", dirs[0], "model", "add", src, "--id", "tiny-"+arch); code != 0 {
			t.Fatalf("model add: exit %d: %s", code, stderr)
		}
	}
	// The requester's store holds every model (its backend tokenizes).
	storeR := t.TempDir()
	for _, m := range []string{filepath.Join(storeA, "tiny-qwen2"), filepath.Join(storeA, "tiny-llama"), smol} {
		if err := os.Symlink(m, filepath.Join(storeR, filepath.Base(m))); err != nil {
			t.Fatal(err)
		}
	}
	r := c.withModels(storeR)
	const prompt, maxTokens = "The river carries sediment to the sea,", 8
	// transformers generate's answers, computed while the swarm starts.
	refs := make(chan modelReferences, 1)
	python := testutil.Python(t)
	go func() {
		refs <- referenceMany(t.Context(), python, storeR, []string{"tiny-qwen2", "tiny-llama", "smollm2-135m"}, prompt, maxTokens)
	}()
	var answers map[string][]uint32
	// Each tiny model's weights take about 26 MiB: the budget holds one.
	writeBackendConfig(t, dirs[0], "model_memory_mb: 40")
	join := c.swarmInit()

	t.Run("a model larger than the budget", func(t *testing.T) {
		dir := t.TempDir()
		writeBackendConfig(t, dir, "model_memory_mb: 1")
		_, stderr, code := a.run("--data-dir", dir, "worker", "--join", join, "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0", "--model", "tiny-qwen2")
		if code != 2 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "model memory budget") {
			t.Errorf("worker with a budget too small: exit %d, stderr %q; want 2 and one line", code, stderr)
		}
	})

	// --model all: the two in the store, in id order; the first loads at start.
	wa := a.startWorker(dirs[0], "--no-mdns", "--join", join, "--model", "all", "--accept-pulls", "--pull-disk-budget-mb", "40")
	aID, aAddrs := wa.state(t)
	swarm := []string{"--join", join, "--no-mdns", "--bootstrap", aAddrs[0]}
	wb := b.startWorker(dirs[1], append(swarm, "--model", "smollm2-135m", "--accept-pulls")...)
	bID, _ := wb.state(t)
	c.peersUntil(map[string]bool{aID: true, bID: true}, swarm...)
	c.loadedUntil(aID, "tiny-llama", "tiny-qwen2", swarm)

	run := func(model string, stages int) (string, string, int) {
		return r.run(append(append([]string{"--data-dir", dirs[2], "infer"}, swarm...),
			"--listen", "/ip4/127.0.0.1/tcp/0", "--ray-address", "127.0.0.1", "--model", model, "--stages", strconv.Itoa(stages),
			"--raw", "--json", "--max-tokens", strconv.Itoa(maxTokens), prompt)...)
	}
	// infer checks model's answer and that it ran on the workers want.
	infer := func(model string, want ...string) {
		t.Helper()
		out, stderr, code := run(model, len(want))
		if code != 0 {
			t.Fatalf("infer --model %s: exit %d: %s\nA:\n%s\nB:\n%s", model, code, stderr, wa.stderr, wb.stderr)
		}
		var res distResult
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("infer --json: %v\n%s", err, out)
		}
		if answers == nil {
			got := <-refs
			if got.err != nil {
				t.Fatalf("reference generate: %v", got.err)
			}
			answers = got.tokens
		}
		ref := slices.Clone(answers[model])
		if res.FinishReason == "stop" && len(ref) > len(res.TokenIDs) {
			ref = ref[:len(res.TokenIDs)]
		}
		if res.Model != model || !slices.Equal(res.TokenIDs, ref) {
			t.Errorf("%s answered %v (model %s)\nwant (transformers generate) %v", model, res.TokenIDs, res.Model, ref)
		}
		var ran []string
		for _, st := range res.Stages {
			ran = append(ran, st.PeerID)
		}
		slices.Sort(ran)
		if !slices.Equal(ran, slices.Sorted(slices.Values(want))) {
			t.Errorf("%s ran on %+v; want the workers %v", model, res.Stages, want)
		}
	}
	infer("tiny-qwen2", aID) // loaded on demand: tiny-llama goes
	c.loadedUntil(aID, "tiny-qwen2", "tiny-llama", swarm)
	infer("smollm2-135m", bID)
	infer("tiny-llama", aID) // and back
	c.loadedUntil(aID, "tiny-llama", "tiny-qwen2", swarm)

	// Requested pulls: each worker's record says it accepts them, and the
	// holders' records name their directories.
	for _, p := range c.sharedUntil(map[string]string{aID: "tiny-llama", bID: "smollm2-135m"}, swarm...) {
		if want := map[string]uint64{aID: 40 << 20, bID: 0}[p.PeerID]; !p.AcceptPulls || p.PullBudgetBytes != want {
			t.Errorf("%s: accept_pulls %v, pull_disk_budget_bytes %d; want true, %d", p.PeerID, p.AcceptPulls, p.PullBudgetBytes, want)
		}
	}
	t.Run("a requested pull over the worker's disk budget", func(t *testing.T) {
		_, stderr, code := run("smollm2-135m", 2) // only B serves it: A is asked, and refuses
		if code != cli.ExitUnavailable || strings.Count(strings.TrimSpace(stderr), "\n") != 0 ||
			!strings.Contains(stderr, "disk budget") || !strings.Contains(stderr, aID) {
			t.Errorf("two stages of smollm2-135m: exit %d, stderr %q; want %d, one line naming A's disk budget", code, stderr, cli.ExitUnavailable)
		}
	})
	t.Run("B pulls the model A holds, then the split answers", func(t *testing.T) {
		infer("tiny-llama", aID, bID)
		if _, err := os.Stat(filepath.Join(storeB, "tiny-llama", "model.safetensors")); err != nil {
			t.Errorf("B's store after the pull: %v", err)
		}
	})
	for _, w := range []*workerProc{wa, wb} {
		if err := w.stop(t); err != nil {
			t.Fatalf("worker exit after SIGTERM: %v\n%s", err, w.stderr)
		}
	}
}

// modelReferences are transformers generate's greedy answers by model.
type modelReferences struct {
	tokens map[string][]uint32
	err    error
}

// referenceMany is rawReferenceTokens for several models of store in one
// Python process (one import of torch and transformers).
func referenceMany(ctx context.Context, python, store string, models []string, prompt string, maxTokens int) modelReferences {
	const script = `
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
store, prompt, n, models = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
out = {}
for m in models:
    path = store + "/" + m
    ids = torch.tensor([AutoTokenizer.from_pretrained(path)(prompt)["input_ids"]])
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.inference_mode():
        gen = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n)
    out[m] = gen[0, ids.shape[1]:].tolist()
print(json.dumps(out))
`
	cmd := exec.CommandContext(ctx, python, append([]string{"-c", script, store, prompt, strconv.Itoa(maxTokens)}, models...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return modelReferences{err: fmt.Errorf("%w\n%s", err, stderr.String())}
	}
	var res modelReferences
	if err := json.Unmarshal(out, &res.tokens); err != nil || len(res.tokens) != len(models) {
		return modelReferences{err: fmt.Errorf("printed %q: %v", out, err)}
	}
	return res
}

// writeBackendConfig writes edgellm.yaml in dataDir with one backend: line.
func writeBackendConfig(t *testing.T, dataDir, line string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dataDir, "edgellm.yaml"), []byte("backend:\n  "+line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// loadedUntil runs `edgellm peers --json` until worker id's record lists
// model loaded and other not loaded (it still serves both).
func (c *cliEnv) loadedUntil(id, loaded, other string, swarm []string) {
	c.t.Helper()
	var last string
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
		out, errOut, code := c.run(append([]string{"--data-dir", c.t.TempDir(), "peers", "--json", "--timeout", "4s"}, swarm...)...)
		if code != 0 {
			c.t.Fatalf("peers exited %d: %s", code, errOut)
		}
		last = out
		var peers []struct {
			PeerID string `json:"peer_id"`
			Models []struct {
				ID     string `json:"id"`
				Loaded bool   `json:"loaded"`
				LoadMs int64  `json:"load_ms"`
			} `json:"models"`
		}
		if err := json.Unmarshal([]byte(out), &peers); err != nil {
			c.t.Fatalf("peers --json: %v\n%s", err, out)
		}
		for _, p := range peers {
			state := map[string]bool{}
			for _, m := range p.Models {
				state[m.ID] = m.Loaded
			}
			_, listed := state[other]
			if p.PeerID == id && state[loaded] && listed && !state[other] {
				return
			}
		}
	}
	c.t.Fatalf("worker %s never listed %s loaded and %s not loaded; last:\n%s", id, loaded, other, last)
}
