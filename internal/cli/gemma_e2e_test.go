package cli_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/edgellm/edgellm/internal/testutil"
)

// gemmaPrompt is raw text: Gemma 3 270M is a base model without a chat template.
const gemmaPrompt = "The capital of France is"

// TestGemmaAcrossWorkers: gemma3-270m (`make gemma`), a Gemma 3 model with
// sliding-window and global layers, answers through `infer --model
// gemma3-270m` on this machine and split across two workers that serve it,
// both equal to transformers generate. Skipped until `make gemma` has
// converted it into the test store.
func TestGemmaAcrossWorkers(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	dir := filepath.Join(testutil.ModelsDir(t), "gemma3-270m")
	if _, err := os.Stat(filepath.Join(dir, "edgellm-model.json")); err != nil {
		t.Skip("skipping: gemma3-270m is not in the test store (make gemma)")
	}
	testutil.NoLeakedChildren(t)
	c := newCLIEnv(t)
	const maxTokens = 16
	want := rawReferenceTokens(t, testutil.Python(t), dir, gemmaPrompt, maxTokens)
	c.ns = testutil.NewNetNS(t)
	join := c.swarmInit()
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()} // two workers, the requester
	t.Cleanup(func() { noProcessesOf(t, dirs) })

	check := func(t *testing.T, args ...string) distResult {
		t.Helper()
		base := []string{"--data-dir", dirs[2], "infer", "--model", "gemma3-270m", "--raw", "--json",
			"--max-tokens", strconv.Itoa(maxTokens)}
		out, stderr, code := c.run(append(append(base, args...), gemmaPrompt)...)
		if code != 0 {
			t.Fatalf("infer exited %d: %s", code, stderr)
		}
		var res distResult
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("infer --json: %v\n%s", err, out)
		}
		if !slices.Equal(res.TokenIDs, want) || res.Model != "gemma3-270m" {
			t.Errorf("%s: token ids %v\nwant (transformers generate) %v\ntext %q", res.Model, res.TokenIDs, want, res.Text)
		}
		return res
	}
	t.Run("whole on this machine", func(t *testing.T) { check(t) })

	a := c.startWorker(dirs[0], "--no-mdns", "--join", join, "--model", "gemma3-270m")
	aID, aAddrs := a.state(t)
	b := c.startWorker(dirs[1], "--no-mdns", "--join", join, "--bootstrap", aAddrs[0], "--model", "gemma3-270m")
	bID, _ := b.state(t)
	swarm := []string{"--join", join, "--no-mdns", "--bootstrap", aAddrs[0]}
	c.peersUntil(map[string]bool{aID: true, bID: true}, swarm...)

	t.Run("split across two workers", func(t *testing.T) {
		res := check(t, append(swarm, "--listen", "/ip4/127.0.0.1/tcp/0", "--ray-address", "127.0.0.1", "--stages", "2")...)
		if len(res.Stages) != 2 || res.Stages[0].PeerID == res.Stages[1].PeerID || res.Stages[1].LayerEnd != 18 {
			t.Errorf("stages %+v; want both workers over layers [0, 18)", res.Stages)
		}
	})
	for _, w := range []*workerProc{a, b} {
		if err := w.stop(t); err != nil {
			t.Fatalf("worker exit after SIGTERM: %v\n%s", err, w.stderr)
		}
	}
}

// rawReferenceTokens is transformers generate (greedy) on the raw prompt, as
// the engine tokenizes a raw prompt.
func rawReferenceTokens(t *testing.T, python, dir, prompt string, maxTokens int) []uint32 {
	t.Helper()
	const script = `
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
path, prompt, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
ids = torch.tensor([AutoTokenizer.from_pretrained(path)(prompt)["input_ids"]])
model = AutoModelForCausalLM.from_pretrained(path).eval()
with torch.inference_mode():
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n)
print(json.dumps(out[0, ids.shape[1]:].tolist()))
`
	cmd := exec.Command(python, "-c", script, dir, prompt, strconv.Itoa(maxTokens))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("reference generate: %v\n%s", err, stderr.String())
	}
	var ids []uint32
	if err := json.Unmarshal(out, &ids); err != nil || len(ids) == 0 {
		t.Fatalf("reference generate printed %q: %v", out, err)
	}
	return ids
}
