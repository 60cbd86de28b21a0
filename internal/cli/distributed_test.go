package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgellm/edgellm/internal/testutil"
)

// distPrompt asks for a long answer, so 24 greedy tokens end by length.
const distPrompt = "Write a short story about a robot who learns to paint."

// distResult is the part of `infer --json` the test reads.
type distResult struct {
	Text         string   `json:"text"`
	Model        string   `json:"model"`
	WeightsCID   string   `json:"weights_cid"`
	FinishReason string   `json:"finish_reason"`
	TokenIDs     []uint32 `json:"token_ids"`
	Stages       []struct {
		PeerID     string `json:"peer_id"`
		LayerStart int    `json:"layer_start"`
		LayerEnd   int    `json:"layer_end"`
	} `json:"stages"`
}

// TestDistributedInfer: two `edgellm worker` processes and a requester; infer
// --stages 2 splits the model across both workers over a real Ray cluster,
// and its greedy tokens equal single-process transformers generate. Bad
// plans exit 2 or 3 with one line; Ctrl-C during generation exits 130 and
// stops every Ray process of the session. Afterwards no process the test started
// (edgellm, backend, Ray) is left. Everything runs in a loopback-only network
// namespace (root and iproute2; skipped otherwise, never on the real network).
func TestDistributedInfer(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	testutil.NoLeakedChildren(t)
	c := newCLIEnv(t)
	python := testutil.Python(t)
	if _, err := os.Stat(filepath.Join(testutil.RepoRoot(t), "backend", "edgellm", "server", "cluster.py")); err != nil {
		t.Skip("skipping: the backend has no cluster RPCs (backend/edgellm/server/cluster.py)")
	}
	// Ray listens on every interface and swaps a loopback node address for
	// the machine's routable one: every edgellm process (and so every Ray
	// node) runs in a namespace whose only interface is loopback. Created
	// before the workers, so it is deleted after their cleanups stop them.
	c.ns = testutil.NewNetNS(t)
	join := c.swarmInit()
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()} // two workers, the requester
	t.Cleanup(func() { noProcessesOf(t, dirs) })            // after the workers' cleanups

	a := c.startWorker(dirs[0], "--no-mdns", "--join", join, "--log-level", "info")
	aID, aAddrs := a.state(t)
	b := c.startWorker(dirs[1], "--no-mdns", "--join", join, "--bootstrap", aAddrs[0], "--log-level", "info")
	bID, _ := b.state(t)
	c.peersUntil(map[string]bool{aID: true, bID: true}, "--join", join, "--no-mdns", "--bootstrap", aAddrs[0])

	infer := func(args ...string) (string, string, int) {
		base := []string{"--data-dir", dirs[2], "infer", "--join", join, "--no-mdns", "--bootstrap", aAddrs[0],
			"--listen", "/ip4/127.0.0.1/tcp/0", "--ray-address", "127.0.0.1"}
		return c.run(append(base, args...)...)
	}

	t.Run("too many stages", func(t *testing.T) {
		_, stderr, code := infer("--stages", "3", "hi")
		t.Logf("stderr: %s", stderr)
		if code != 2 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "too many stages") {
			t.Fatalf("--stages 3 with two workers: code %d, stderr %q; want 2 and one line", code, stderr)
		}
	})
	t.Run("unknown model", func(t *testing.T) {
		_, stderr, code := infer("--model", "unknown", "hi")
		t.Logf("stderr: %s", stderr)
		if code != 3 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "unknown") {
			t.Fatalf("--model unknown: code %d, stderr %q; want 3 and one line", code, stderr)
		}
	})

	t.Run("two stages match generate", func(t *testing.T) {
		const maxTokens = 24
		want := referenceTokens(t, python, distPrompt, maxTokens)
		out, stderr, code := infer("--json", "--stages", "2", "--max-tokens", strconv.Itoa(maxTokens), distPrompt)
		if code != 0 {
			t.Fatalf("infer exited %d: %s\nworker a:\n%s\nworker b:\n%s", code, stderr, a.stderr, b.stderr)
		}
		var res distResult
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("infer --json: %v\n%s", err, out)
		}
		t.Logf("infer --json: %s", out)
		if res.FinishReason == "stop" && len(want) > len(res.TokenIDs) { // EOS ends HF's output, not ours
			want = want[:len(res.TokenIDs)]
		}
		if !slices.Equal(res.TokenIDs, want) {
			t.Errorf("token ids %v\nwant (transformers generate) %v\ntext %q", res.TokenIDs, want, res.Text)
		}
		if len(res.Stages) != 2 || res.WeightsCID == "" {
			t.Fatalf("stages %+v, weights CID %q; want two stages", res.Stages, res.WeightsCID)
		}
		ran := map[string]bool{res.Stages[0].PeerID: true, res.Stages[1].PeerID: true}
		if !ran[aID] || !ran[bID] || res.Stages[0].LayerStart != 0 || res.Stages[0].LayerEnd != res.Stages[1].LayerStart ||
			res.Stages[1].LayerEnd != 30 {
			t.Errorf("stages %+v; want both workers, contiguous layers [0,30)", res.Stages)
		}
	})

	t.Run("ctrl-c tears the cluster down", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		args := []string{"--data-dir", dirs[2], "infer", "--join", join, "--no-mdns", "--bootstrap", aAddrs[0],
			"--listen", "/ip4/127.0.0.1/tcp/0", "--ray-address", "127.0.0.1", "--stages", "2", "--max-tokens", "4000",
			"Write a very long story about a dragon and a knight."}
		cmd := c.command(ctx, args...)
		cmd.Env = c.env
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The first streamed byte means the cluster is up and generating.
		if _, err := bufio.NewReader(stdout).ReadByte(); err != nil {
			cmd.Wait()
			t.Fatalf("no output before the interrupt: %v\n%s", err, stderr.String())
		}
		if err := cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, stdout)
		err = cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 130 || lastLine(stderr.String()) != "edgellm: interrupted" {
			t.Fatalf("after Ctrl-C: %v, stderr %q; want exit 130 and 'interrupted'", err, stderr.String())
		}
		t.Logf("stderr: %s", stderr.String())
		// Every Ray process of the session is gone: the requester's head and
		// both workers' nodes (the workers themselves keep running).
		noProcessesOf(t, dirs[2:])
		for _, dir := range dirs[:2] {
			for _, pid := range processesMarked(dir) {
				testutil.WaitExit(t, pid, 30*time.Second)
			}
		}
	})

	for _, w := range []*workerProc{a, b} {
		if err := w.stop(t); err != nil {
			t.Fatalf("worker exit after SIGTERM: %v\n%s", err, w.stderr)
		}
		log := w.stderr.String()
		if strings.Count(log, "joined cluster") != 2 || strings.Count(log, "left cluster") != 2 {
			t.Errorf("worker %s never joined and left a cluster:\n%s", w.dataDir, log)
		}
	}
}

// referenceTokens is single-process transformers generate (greedy) on the
// chat-templated prompt, as the backend's engine templates it.
func referenceTokens(t *testing.T, python, prompt string, maxTokens int) []uint32 {
	t.Helper()
	const script = `
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
path, prompt, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
tok = AutoTokenizer.from_pretrained(path)
text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
model = AutoModelForCausalLM.from_pretrained(path).eval()
with torch.inference_mode():
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n)
print(json.dumps(out[0, ids.shape[1]:].tolist()))
`
	cmd := exec.Command(python, "-c", script, filepath.Join(testutil.ModelsDir(t), "smollm2-135m"), prompt, strconv.Itoa(maxTokens))
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

// noProcessesOf fails the test if a process still names one of dirs in its
// command line or (Ray's processes) in its EDGELLM_RAY_WORK_DIR marker. A
// process still exiting gets a moment, watched by pidfd.
func noProcessesOf(t *testing.T, dirs []string) {
	t.Helper()
	for _, dir := range dirs {
		pids := append(testutil.ProcessesMentioning(dir), processesMarked(dir)...)
		for _, pid := range pids {
			testutil.WaitExit(t, pid, 30*time.Second)
		}
	}
}

// processesMarked lists live processes whose environment has
// EDGELLM_RAY_WORK_DIR under dir (every Ray process of a node carries it).
func processesMarked(dir string) []int {
	envs, _ := filepath.Glob("/proc/[0-9]*/environ")
	var pids []int
	for _, path := range envs {
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		for _, kv := range bytes.Split(data, []byte{0}) {
			if v, ok := bytes.CutPrefix(kv, []byte("EDGELLM_RAY_WORK_DIR=")); ok && strings.HasPrefix(string(v), dir) {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
				if pid != os.Getpid() {
					pids = append(pids, pid)
				}
			}
		}
	}
	return pids
}
