package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
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
	PhasesMs map[string]float64 `json:"phases_ms"`
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
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()} // two workers, the requester, serve, a vllm node
	t.Cleanup(func() { noProcessesOf(t, dirs) })                                      // after the workers' cleanups

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
		want := referenceTokens(t, distPrompt, maxTokens)
		// --log-level info: a failure shows the requester's own account (once in CI, under
		// load, both workers counted as lost after joining, and its one line did not say why).
		out, stderr, code := infer("--json", "--log-level", "info", "--stages", "2", "--max-tokens", strconv.Itoa(maxTokens), distPrompt)
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
		for _, phase := range []string{"discover_plan", "node_start", "node_ready", "prefix_lookup", "ray_head_and_joins"} {
			if ms, ok := res.PhasesMs[phase]; !ok || ms <= 0 {
				t.Errorf("phases_ms %v: want %s > 0", res.PhasesMs, phase)
			}
		}
	})

	t.Run("split runs fill and use the swarm's KV cache", func(t *testing.T) {
		if !c.kubo() {
			t.Skip("no Kubo binary (make setup builds .bin/ipfs)")
		}
		const maxTokens = 6
		// The first split run stores each stage's layers of the prompt's
		// blocks on its worker, which announces them. (It may take the chat
		// template's first block, which the earlier runs in this swarm stored,
		// but none of the long prompt, which no other test uses.)
		first := splitKVPrompt + " Answer briefly."
		want := referenceTokens(t, first, maxTokens)
		got := distKV(t, infer, "--json", "--stages", "2", "--max-tokens", strconv.Itoa(maxTokens), first)
		if !slices.Equal(got.TokenIDs, want) || got.CachedPromptTokens >= 200 {
			t.Fatalf("first split run: %d cached, tokens %v, want %v", got.CachedPromptTokens, got.TokenIDs, want)
		}
		// A second split run sharing the prefix: every stage takes its layers'
		// blocks (cached tokens are what all stages took), same greedy tokens.
		second := splitKVPrompt + " Answer in one line."
		want = referenceTokens(t, second, maxTokens)
		got = distKV(t, infer, "--json", "--stages", "2", "--max-tokens", strconv.Itoa(maxTokens), second)
		if !slices.Equal(got.TokenIDs, want) || got.CachedPromptTokens < 900 || len(got.CachedFrom) == 0 {
			t.Fatalf("second split run: %d of %d cached from %v, tokens %v, want %v",
				got.CachedPromptTokens, got.PromptTokens, got.CachedFrom, got.TokenIDs, want)
		}
		// infer --local on the requester's node: the prefix comes from both
		// workers' layer ranges (merged manifests), same greedy tokens.
		third := splitKVPrompt + " Say it in a sentence."
		want = referenceTokens(t, third, maxTokens)
		got = distKV(t, func(args ...string) (string, string, int) {
			return c.run(append([]string{"--data-dir", dirs[2], "infer", "--local", "--join", join, "--no-mdns",
				"--bootstrap", aAddrs[0], "--listen", "/ip4/127.0.0.1/tcp/0"}, args...)...)
		}, "--json", "--max-tokens", strconv.Itoa(maxTokens), third)
		if !slices.Equal(got.TokenIDs, want) || got.CachedPromptTokens < 900 {
			t.Fatalf("infer --local after split runs: %d of %d cached, tokens %v, want %v",
				got.CachedPromptTokens, got.PromptTokens, got.TokenIDs, want)
		}
	})

	t.Run("a vllm node takes the split runs' blocks", func(t *testing.T) {
		if !c.kubo() {
			t.Skip("no Kubo binary (make setup builds .bin/ipfs)")
		}
		testutil.NeedVLLM(t)
		// A node on the vllm engine (its own data directory) answers
		// locally, loading both workers' layer ranges of the prefix into
		// vLLM's pages through the KV connector. Its spot check is off so
		// that it takes the whole hit: with the check on, vLLM takes the
		// prefix only up to a random position (tests/python/test_vllm_kv.py
		// covers the check's catches).
		config := "node:\n  engine: vllm\nbackend:\n  kv:\n    spot_check: false\n"
		if err := os.WriteFile(filepath.Join(dirs[4], "edgellm.yaml"), []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		const maxTokens = 6
		prompt := splitKVPrompt + " Say it in two words."
		want := referenceTokens(t, prompt, maxTokens)
		got := distKV(t, func(args ...string) (string, string, int) {
			// vLLM's engine start takes longer than c.run allows on a busy machine.
			return c.runFor(8*time.Minute, append([]string{"--data-dir", dirs[4], "infer", "--local", "--join", join,
				"--no-mdns", "--bootstrap", aAddrs[0], "--listen", "/ip4/127.0.0.1/tcp/0"}, args...)...)
		}, "--json", "--max-tokens", strconv.Itoa(maxTokens), prompt)
		// vLLM loads whole vLLM blocks (32 tokens): the 900-odd tokens the
		// torch node took, floored.
		if !slices.Equal(got.TokenIDs, want) || got.CachedPromptTokens < 864 || got.CachedPromptTokens%32 != 0 {
			t.Fatalf("infer --local on vllm: %d of %d cached, tokens %v, want %v and >= 864 cached in whole vLLM blocks",
				got.CachedPromptTokens, got.PromptTokens, got.TokenIDs, want)
		}
		t.Logf("vllm node: %d of %d prompt tokens from the workers' blocks", got.CachedPromptTokens, got.PromptTokens)
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

	t.Run("serve through the swarm", func(t *testing.T) {
		testServeThroughSwarm(t, c, python, dirs[3], []*workerProc{a, b},
			[]string{"--join", join, "--no-mdns", "--bootstrap", aAddrs[0]})
	})

	clusters := 3 // one each for the split infer, the interrupted one and serve's
	if c.kubo() {
		clusters += 2 // the KV subtest's two split runs
	}
	for _, w := range []*workerProc{a, b} {
		if err := w.stop(t); err != nil {
			t.Fatalf("worker exit after SIGTERM: %v\n%s", err, w.stderr)
		}
		log := w.stderr.String()
		if strings.Count(log, "joined cluster") != clusters || strings.Count(log, "left cluster") != clusters {
			t.Errorf("worker %s never joined and left a cluster:\n%s", w.dataDir, log)
		}
	}
}

// kvRun is the part of `infer --json` the KV subtests read.
type kvRun struct {
	PromptTokens       uint32   `json:"prompt_tokens"`
	CachedPromptTokens uint32   `json:"cached_prompt_tokens"`
	CachedFrom         []string `json:"cached_from"`
	TokenIDs           []uint32 `json:"token_ids"`
}

// distKV runs an infer --json to success with run and decodes it.
func distKV(t *testing.T, run func(args ...string) (string, string, int), args ...string) kvRun {
	t.Helper()
	out, stderr, code := run(args...)
	if code != 0 {
		t.Fatalf("infer %v exited %d: %s", args, code, stderr)
	}
	var res kvRun
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("infer --json: %v\n%s", err, out)
	}
	t.Logf("infer %v: %d of %d prompt tokens cached (from %v)", args[:len(args)-1], res.CachedPromptTokens,
		res.PromptTokens, res.CachedFrom)
	return res
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

// TestDistributedFailover: four `edgellm worker` processes (each in its own
// process group) and a requester. First a P/D run loses its decode worker
// (SIGKILL of its group) mid-answer and a spare takes the decode over, with
// the reference answer and one warning; the spare fetched the prompt's KV
// blocks the prefill worker had handed over for the lost attempt and
// computed only the prompt's tail and the tokens so far (counted in the
// requester's backend log). Then infer --stages 2: as soon as the
// answer streams, the whole process group of one stage's worker is killed
// with SIGKILL; the requester re-plans onto the third worker, replays the
// prompt and the tokens so far, and finishes: exit 0, the streamed text is
// exactly the transformers reference answer, and stderr has exactly one
// warning line. The killed worker's backend and Ray node go away with it (its
// backend gets SIGTERM from the kernel and stops the Ray node it started).
// Then, with two workers left, a second infer loses one of them and has no
// worker to replace it: exit 4 with one line naming it. Nothing the test
// started is left afterwards. Runs in a loopback-only network namespace, as
// TestDistributedInfer. With EDGELLM_TEST_CRASH set, the killed worker's
// backend and Ray node are killed too, as in a machine crash.
func TestDistributedFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	testutil.NoLeakedChildren(t)
	c := newCLIEnv(t)
	c.ns = testutil.NewNetNS(t)
	join := c.swarmInit()
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()} // four workers, the requester
	t.Cleanup(func() { noProcessesOf(t, dirs) })
	req := dirs[4]

	const maxTokens = 64
	wantIDs := referenceTokens(t, distPrompt, maxTokens)
	wantText := referenceText(t, distPrompt, wantIDs)

	workers := map[string]*workerProc{}
	var ids []string
	var boot string
	for i, dir := range dirs[:4] {
		args := []string{"--no-mdns", "--join", join, "--log-level", "info"}
		if i > 0 {
			args = append(args, "--bootstrap", boot)
		}
		w := c.startWorkerOwnGroup(dir, args...)
		id, addrs := w.state(t)
		if i == 0 {
			boot = addrs[0]
		}
		workers[id] = w
		ids = append(ids, id)
	}
	c.peersUntil(map[string]bool{ids[0]: true, ids[1]: true, ids[2]: true, ids[3]: true}, "--join", join, "--no-mdns", "--bootstrap", boot)
	args := []string{"--data-dir", req, "infer", "--join", join, "--no-mdns", "--bootstrap", boot,
		"--listen", "/ip4/127.0.0.1/tcp/0", "--ray-address", "127.0.0.1", "--stages", "2",
		"--max-tokens", strconv.Itoa(maxTokens), distPrompt}
	dump := func() string {
		var b strings.Builder
		for _, id := range ids {
			fmt.Fprintf(&b, "worker %s:\n%s\n", id, workers[id].stderr)
		}
		return b.String()
	}
	killed := map[string]bool{}

	// P/D first: the decode worker is killed mid-answer; a spare worker
	// takes the decode over (it fetches the prompt's blocks the prefill
	// worker stored in its IPFS node for the lost attempt and computes the
	// tokens so far on top), and the answer is the reference one. The
	// bootstrap worker (never a victim: the swarm stays reachable through
	// it) prefills.
	pdArgs := []string{"--data-dir", req, "infer", "--join", join, "--no-mdns", "--bootstrap", boot,
		"--listen", "/ip4/127.0.0.1/tcp/0", "--ray-address", "127.0.0.1", "--prefill-peer", ids[0], "--decode-peer", ids[1],
		"--max-tokens", strconv.Itoa(maxTokens), distPrompt}
	run := c.inferAndKill(t, pdArgs, workers, ids[0])
	killed[run.victim] = true
	if run.err != nil || run.victim != ids[1] {
		t.Fatalf("P/D infer after losing its decode worker %s: %v\n%s", run.victim, run.err, dump())
	}
	if run.stdout != wantText+"\n" {
		t.Errorf("P/D answer %q\nwant (transformers generate) %q", run.stdout, wantText+"\n")
	}
	if n := strings.Count(run.stderr, "decode worker "+ids[1]+" was lost"); n != 1 || !strings.Contains(run.stderr, "replaying") {
		t.Errorf("P/D stderr %q; want one warning that the decode worker was replaced", run.stderr)
	}
	if c.kubo() {
		checkPDResumed(t, filepath.Join(req, "logs", "backend.log"))
	} else {
		t.Log("no Kubo binary: the workers hand no KV blocks over; not checking the replacement's fetch")
	}
	noProcessesOf(t, []string{workers[run.victim].dataDir, req})

	// The bootstrap worker is never the victim: the swarm stays reachable
	// through it.
	run = c.inferAndKill(t, args, workers, ids[0])
	killed[run.victim] = true
	if run.err != nil {
		t.Fatalf("infer after the failover: %v\n%s", run.err, dump())
	}
	if run.stdout != wantText+"\n" {
		t.Errorf("answer %q\nwant (transformers generate) %q", run.stdout, wantText+"\n")
	}
	var warnings []string // (other warnings, e.g. about the KV cache, may come too)
	for line := range strings.Lines(run.stderr) {
		if strings.Contains(line, "lost") || strings.Contains(line, run.victim) {
			warnings = append(warnings, line)
		}
	}
	if len(warnings) != 2 || !strings.HasPrefix(warnings[1], "edgellm: warning: worker "+run.victim) ||
		!strings.Contains(warnings[1], "replaying") {
		t.Errorf("lines about the lost worker %q; want its stage line and one warning", warnings)
	}
	// The killed worker's backend and Ray node are gone; so is the requester's cluster.
	noProcessesOf(t, []string{workers[run.victim].dataDir, req})

	t.Run("no replacement exits 4", func(t *testing.T) {
		run := c.inferAndKill(t, args, workers, ids[0])
		killed[run.victim] = true
		var ee *exec.ExitError
		last := lastLine(run.stderr)
		if !errors.As(run.err, &ee) || ee.ExitCode() != 4 || !strings.HasPrefix(last, "edgellm: unavailable: worker "+run.victim) ||
			!strings.Contains(last, "was lost after") || strings.Contains(run.stderr, "replaying") {
			t.Fatalf("losing the last spare worker: %v, stderr %q; want exit 4 and one line naming %s\n%s",
				run.err, run.stderr, run.victim, dump())
		}
		noProcessesOf(t, []string{workers[run.victim].dataDir, req})
	})

	for _, id := range ids {
		if killed[id] {
			continue
		}
		w := workers[id]
		if err := w.stop(t); err != nil {
			t.Errorf("worker exit after SIGTERM: %v\n%s", err, w.stderr)
		}
		if log := w.stderr.String(); strings.Count(log, "joined cluster") == 0 ||
			strings.Count(log, "joined cluster") != strings.Count(log, "left cluster") {
			t.Errorf("worker %s did not leave every cluster it joined:\n%s", id, log)
		}
	}
}

var (
	// pdLoadLine is the requester backend's line for a decode worker's load
	// of the prompt (edgellm.cluster.disaggregated.driver).
	pdLoadLine = regexp.MustCompile(`p/d: (\d+) prompt tokens from the prefill peer's KV blocks, (\d+) computed on the decode peer`)
	// pdResumeLine is its line for a failover's new decode worker starting
	// from the lost attempt's handoff.
	pdResumeLine = regexp.MustCompile(`p/d: resuming on a new decode peer from the prefill peer's handoff of (\d+) prompt tokens, (\d+) tokens after the prompt`)
)

// checkPDResumed reads the requester backend's log after a P/D run that
// lost its decode worker once (it only observes) and checks, by counted
// tokens, that the new decode worker took the same prompt blocks the lost
// one took, handed over by the prefill worker for the lost attempt, and
// computed only the prompt's tail and the tokens generated before the loss.
func checkPDResumed(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	atoi := func(s string) int { n, _ := strconv.Atoi(s); return n }
	var loads [][2]int // (tokens from blocks, tokens computed), in order
	var resumes [][2]int
	for line := range strings.Lines(string(data)) {
		if m := pdLoadLine.FindStringSubmatch(line); m != nil {
			loads = append(loads, [2]int{atoi(m[1]), atoi(m[2])})
		}
		if m := pdResumeLine.FindStringSubmatch(line); m != nil {
			resumes = append(resumes, [2]int{atoi(m[1]), atoi(m[2])})
		}
	}
	t.Logf("decode loads (from blocks, computed): %v; resumed (handed over, tokens since): %v", loads, resumes)
	if len(loads) != 2 || len(resumes) != 1 {
		t.Fatalf("want the lost decode worker's load, one resume and the new one's load in the backend log; got loads %v, resumes %v", loads, resumes)
	}
	first, again, resumed := loads[0], loads[1], resumes[0]
	if first[0] == 0 || first[0]%16 != 0 || resumed[0] != first[0] || resumed[1] == 0 {
		t.Errorf("the prefill worker handed %d prompt tokens over (want %d > 0, whole blocks), %d tokens after them",
			resumed[0], first[0], resumed[1])
	}
	if again[0] != first[0] || again[1] != first[1]+resumed[1] {
		t.Errorf("the new decode worker took %d tokens from blocks and computed %d; want %d and %d (the tail and the %d tokens so far)",
			again[0], again[1], first[0], first[1]+resumed[1], resumed[1])
	}
}

// killRun is one infer that lost a worker: what it printed and how it ended.
type killRun struct {
	stdout, stderr string
	err            error // from Wait
	victim         string
}

// inferAndKill runs infer (args name two stages), and once some of the
// answer has streamed kills the whole process group of a stage's worker
// (not keep) with SIGKILL; it returns when infer has exited.
func (c *cliEnv) inferAndKill(t *testing.T, args []string, workers map[string]*workerProc, keep string) killRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := c.command(ctx, args...)
	cmd.Env = c.env
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderrPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The stage lines come before the answer: "stage i/2: layers [a,b) of 30 on PEER (rtt …)".
	var stderr syncBuffer
	stageLines := make(chan string, 8)
	stderrDone := make(chan struct{})
	var warnedAt atomic.Value // time.Time of the failover warning
	go func() {
		defer close(stderrDone)
		defer close(stageLines)
		sc := bufio.NewScanner(stderrPipe)
		for sc.Scan() {
			stderr.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "replaying") {
				warnedAt.Store(time.Now())
			}
			if strings.HasPrefix(sc.Text(), "stage ") || strings.HasPrefix(sc.Text(), "prefill on ") ||
				strings.HasPrefix(sc.Text(), "decode on ") {
				select {
				case stageLines <- sc.Text():
				default:
				}
			}
		}
	}()
	// Some tokens of the answer have streamed: the cluster is up and
	// generating, and the replay will have several tokens to replay.
	first := make([]byte, 24)
	if _, err := io.ReadFull(stdout, first); err != nil {
		<-stderrDone
		cmd.Wait()
		t.Fatalf("no output: %v\n%s", err, stderr.String())
	}
	var staged []string
	for len(staged) < 2 {
		line, ok := <-stageLines
		if !ok {
			t.Fatalf("stage lines missing:\n%s", stderr.String())
		}
		f := strings.Fields(line)
		staged = append(staged, strings.TrimSuffix(f[slices.Index(f, "on")+1], ":"))
	}
	victim := staged[0]
	if victim == keep {
		victim = staged[1]
	}
	w := workers[victim]
	if w == nil {
		t.Fatalf("stage peer %s is none of the workers", victim)
	}
	if err := syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	t.Logf("killed worker %s (pid %d) after %q", victim, w.cmd.Process.Pid, first)
	if os.Getenv("EDGELLM_TEST_CRASH") != "" {
		// As if the machine died: its backend and Ray node get no chance
		// to leave either (the head learns of it from Ray's health checks).
		for _, pid := range append(testutil.ProcessesMentioning(w.dataDir), processesMarked(w.dataDir)...) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		t.Log("EDGELLM_TEST_CRASH: killed its backend and Ray node too")
	}
	rest, _ := io.ReadAll(stdout)
	<-stderrDone
	err = cmd.Wait()
	if at, ok := warnedAt.Load().(time.Time); ok {
		t.Logf("kill to warning (re-plan and join): %v", at.Sub(killedAt).Round(time.Millisecond))
	}
	t.Logf("kill to exit: %v", time.Since(killedAt).Round(time.Millisecond))
	out := killRun{stdout: string(first) + string(rest), stderr: stderr.String(), err: err, victim: victim}
	t.Logf("stdout: %q\nstderr:\n%s", out.stdout, out.stderr)
	return out
}

// startWorkerOwnGroup is startWorker with the worker in a process group of
// its own, so the test can kill the whole group (the backend is in another
// group of its own, as the node starts it).
func (c *cliEnv) startWorkerOwnGroup(dataDir string, args ...string) *workerProc {
	c.t.Helper()
	full := append([]string{"--data-dir", dataDir, "worker", "--listen", "/ip4/127.0.0.1/tcp/0",
		"--refresh", "2s", "--record-ttl", "6s"}, args...)
	cmd := c.command(context.Background(), full...)
	cmd.Env = c.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	w := &workerProc{cmd: cmd, dataDir: dataDir, stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	cmd.Stderr = w.stderr
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() { w.done <- cmd.Wait() }()
	c.t.Cleanup(func() { w.stop(c.t) })
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if _, err := os.Stat(filepath.Join(dataDir, "worker.json")); err == nil {
			return w
		}
		select {
		case err := <-w.done:
			w.done <- err
			c.t.Fatalf("worker exited before joining: %v\n%s", err, w.stderr)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("worker did not join in time\n%s", w.stderr)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) WriteString(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.WriteString(s)
}

// Write makes it a process's stdout or stderr.
func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
