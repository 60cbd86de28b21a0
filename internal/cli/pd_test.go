package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/edgellm/edgellm/internal/testutil"
)

// pdPrompt is a few hundred tokens: many whole 16-token KV blocks and a tail.
var pdPrompt = func() string {
	var b strings.Builder
	for i := range 12 {
		fmt.Fprintf(&b, "Log %d: the night train left the valley station at %d minutes past ten, carrying mail, "+
			"two goats and a crate of lemons for the baker. ", i, 5+i)
	}
	b.WriteString("\n\nWhat did the night train carry for the baker?")
	return b.String()
}()

// splitKVPrompt is about a thousand tokens, sharing nothing past the chat
// template with pdPrompt: the split runs' KV subtest shares it as a prefix.
var splitKVPrompt = func() string {
	var b strings.Builder
	for i := range 31 {
		fmt.Fprintf(&b, "Entry %d: the morning ferry crossed the grey lake in %d minutes, carrying a piano, "+
			"three bicycles and a letter for the lighthouse keeper. ", i, 20+i)
	}
	b.WriteString("\n\nWhat did the morning ferry carry for the lighthouse keeper?")
	return b.String()
}()

// pdResult is the part of `infer --json` the P/D test reads.
type pdResult struct {
	Text               string   `json:"text"`
	FinishReason       string   `json:"finish_reason"`
	TokenIDs           []uint32 `json:"token_ids"`
	PromptTokens       uint32   `json:"prompt_tokens"`
	CachedPromptTokens uint32   `json:"cached_prompt_tokens"`
	KVFetchMs          float64  `json:"kv_fetch_ms"`
	KVStoreMs          float64  `json:"kv_store_ms"`
	Stages             []struct {
		PeerID     string `json:"peer_id"`
		Role       string `json:"role"`
		LayerStart int    `json:"layer_start"`
		LayerEnd   int    `json:"layer_end"`
	} `json:"stages"`
}

// TestPrefillDecodeInfer: two `edgellm worker` processes, each with its own
// Kubo; `infer --prefill-peer A --decode-peer B` runs the prompt on A, which
// stores its KV blocks in A's Kubo, and the decode on B, which fetches them by
// CID over bitswap and continues: greedy tokens equal single-process
// transformers generate, the decode side took cached prompt tokens, the
// stages carry their roles. The run fills the swarm's prefix cache: both
// workers keep and announce the prompt's blocks, so `infer --local` on the
// requester's node (a third one) takes the prefix from them, and computes
// everything, with a warning, while their IPFS nodes are frozen. Bad flags exit 2 (or 3 for a peer not in the
// swarm) with one line. Last, the decode worker is SIGKILLed mid-answer with
// no spare worker to replace it: exit 4 with one line naming it (the spare
// case is TestDistributedFailover's). Nothing the test started is left
// afterwards. Runs in a loopback-only network namespace, as
// TestDistributedInfer.
func TestPrefillDecodeInfer(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	testutil.NoLeakedChildren(t)
	c := newCLIEnv(t)
	if !c.kubo() {
		t.Skip("skipping: no Kubo binary (make setup builds it; or set EDGELLM_IPFS_BIN)")
	}
	c.ns = testutil.NewNetNS(t)
	join := c.swarmInit()
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()} // two workers, the requester, a fresh node
	t.Cleanup(func() { noProcessesOf(t, dirs) })

	a := c.startWorker(dirs[0], "--no-mdns", "--join", join, "--log-level", "info")
	aID, aAddrs := a.state(t)
	// b in a process group of its own: the last subtest kills the group.
	b := c.startWorkerOwnGroup(dirs[1], "--no-mdns", "--join", join, "--bootstrap", aAddrs[0], "--log-level", "info")
	bID, _ := b.state(t)
	c.peersUntil(map[string]bool{aID: true, bID: true}, "--join", join, "--no-mdns", "--bootstrap", aAddrs[0])

	infer := func(args ...string) (string, string, int) {
		base := []string{"--data-dir", dirs[2], "infer", "--join", join, "--no-mdns", "--bootstrap", aAddrs[0],
			"--listen", "/ip4/127.0.0.1/tcp/0", "--ray-address", "127.0.0.1", "--discover-timeout", "5s"}
		return c.runFor(6*time.Minute, append(base, args...)...)
	}
	oneLine := func(t *testing.T, what string, code, want int, stderr, contains string) {
		t.Helper()
		t.Logf("%s: exit %d, stderr %q", what, code, stderr)
		if code != want || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, contains) {
			t.Errorf("%s: exit %d, stderr %q; want %d and one line with %q", what, code, stderr, want, contains)
		}
	}

	t.Run("bad flags", func(t *testing.T) {
		_, stderr, code := infer("--prefill-peer", aID, "hi")
		oneLine(t, "only --prefill-peer", code, 2, stderr, "go together")
		_, stderr, code = infer("--decode-peer", bID, "hi")
		oneLine(t, "only --decode-peer", code, 2, stderr, "go together")
		_, stderr, code = infer("--prefill-peer", aID, "--decode-peer", aID, "hi")
		oneLine(t, "same peer", code, 2, stderr, "different workers")
		_, stderr, code = infer("--prefill-peer", "nonsense", "--decode-peer", bID, "hi")
		oneLine(t, "bad peer id", code, 2, stderr, "not a peer id")
		_, stderr, code = infer("--prefill-peer", aID, "--decode-peer", bID, "--stages", "2", "hi")
		oneLine(t, "with --stages 2", code, 2, stderr, "--stages 2 cannot be combined")
		stranger := newPeerID(t)
		_, stderr, code = infer("--prefill-peer", aID, "--decode-peer", stranger, "hi")
		oneLine(t, "peer not in the swarm", code, 3, stderr, "decode peer "+stranger+" is not among")
	})

	t.Run("prefill on one worker, decode on the other, match generate", func(t *testing.T) {
		const maxTokens = 16
		want := referenceTokens(t, pdPrompt, maxTokens)
		out, stderr, code := infer("--json", "--prefill-peer", aID, "--decode-peer", bID,
			"--max-tokens", strconv.Itoa(maxTokens), pdPrompt)
		if code != 0 {
			t.Fatalf("infer exited %d: %s\nworker a:\n%s\nworker b:\n%s", code, stderr, a.stderr, b.stderr)
		}
		t.Logf("infer --json: %s\nstderr: %s", out, stderr)
		var res pdResult
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("infer --json: %v\n%s", err, out)
		}
		if res.FinishReason == "stop" && len(want) > len(res.TokenIDs) {
			want = want[:len(res.TokenIDs)]
		}
		if !slices.Equal(res.TokenIDs, want) {
			t.Errorf("token ids %v\nwant (transformers generate) %v\ntext %q", res.TokenIDs, want, res.Text)
		}
		if len(res.Stages) != 2 || res.Stages[0].Role != "prefill" || res.Stages[0].PeerID != aID ||
			res.Stages[1].Role != "decode" || res.Stages[1].PeerID != bID {
			t.Fatalf("stages %+v; want prefill on %s, decode on %s", res.Stages, aID, bID)
		}
		for _, s := range res.Stages {
			if s.LayerStart != 0 || s.LayerEnd != 30 {
				t.Errorf("stage %+v; want every layer [0,30)", s)
			}
		}
		// The decode worker took every whole block of the prompt from the prefill worker's.
		full := res.PromptTokens / 16 * 16
		if res.PromptTokens < 200 || res.CachedPromptTokens != full || res.KVFetchMs <= 0 || res.KVStoreMs <= 0 {
			t.Errorf("prompt %d tokens, %d cached (want %d), kv_fetch_ms %v, kv_store_ms %v",
				res.PromptTokens, res.CachedPromptTokens, full, res.KVFetchMs, res.KVStoreMs)
		}
		if strings.Contains(stderr, "warning") {
			t.Errorf("a clean handoff warned: %s", stderr)
		}
	})

	t.Run("after P/D, infer --local on a third node takes the prefix from the swarm", func(t *testing.T) {
		// Both workers keep the prompt's blocks (P stored them, D kept the
		// ones it verified) and announce them; the requester's node, a third
		// one, finds them with no back door.
		const maxTokens = 6
		prompt := pdPrompt + " Answer in one word."
		want := referenceTokens(t, prompt, maxTokens)
		got := distKV(t, func(args ...string) (string, string, int) {
			return c.runFor(6*time.Minute, append([]string{"--data-dir", dirs[2], "infer", "--local", "--join", join,
				"--no-mdns", "--bootstrap", aAddrs[0], "--listen", "/ip4/127.0.0.1/tcp/0"}, args...)...)
		}, "--json", "--max-tokens", strconv.Itoa(maxTokens), prompt)
		if !slices.Equal(got.TokenIDs, want) || got.CachedPromptTokens < 200 {
			t.Fatalf("infer --local after P/D: %d of %d cached, tokens %v, want %v",
				got.CachedPromptTokens, got.PromptTokens, got.TokenIDs, want)
		}
	})

	t.Run("holders' IPFS nodes frozen: infer --local computes, with a warning", func(t *testing.T) {
		// A fresh node (the requester's now holds the prefix itself). The
		// lookup still finds the holders and their manifests, but their
		// IPFS nodes stop answering (SIGSTOP: a node's supervisor restarts a
		// Kubo that exits, not one that hangs): a warning, a full prefill,
		// the same tokens.
		var frozen []int
		for _, dir := range dirs[:2] {
			pids := testutil.ProcessesMentioning(filepath.Join(dir, "ipfs"))
			if len(pids) != 1 {
				t.Fatalf("Kubo of %s: pids %v", dir, pids)
			}
			frozen = append(frozen, pids[0])
		}
		resume := sync.OnceFunc(func() {
			for _, pid := range frozen {
				syscall.Kill(pid, syscall.SIGCONT)
			}
		})
		t.Cleanup(resume) // before the workers' own cleanups stop them
		for _, pid := range frozen {
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
		}
		const maxTokens = 4
		prompt := pdPrompt + " Answer in one word."
		want := referenceTokens(t, prompt, maxTokens)
		out, stderr, code := c.runFor(6*time.Minute, "--data-dir", dirs[3], "infer", "--local", "--join", join,
			"--no-mdns", "--bootstrap", aAddrs[0], "--listen", "/ip4/127.0.0.1/tcp/0", "--json",
			"--max-tokens", strconv.Itoa(maxTokens), prompt)
		resume()
		if code != 0 {
			t.Fatalf("infer --local exited %d: %s", code, stderr)
		}
		var got kvRun
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("infer --json: %v\n%s", err, out)
		}
		if got.CachedPromptTokens != 0 || !slices.Equal(got.TokenIDs, want) {
			t.Fatalf("holders frozen: %d cached, tokens %v, want %v", got.CachedPromptTokens, got.TokenIDs, want)
		}
		if !strings.Contains(stderr, "warning") || !strings.Contains(stderr, "out of reach") {
			t.Fatalf("no warning about the unreachable blocks: %q", stderr)
		}
	})

	t.Run("decode worker killed, no spare: exit 4 with one line", func(t *testing.T) {
		// distPrompt's answer runs to --max-tokens: the kill lands mid-answer.
		args := []string{"--data-dir", dirs[2], "infer", "--join", join, "--no-mdns", "--bootstrap", aAddrs[0],
			"--listen", "/ip4/127.0.0.1/tcp/0", "--ray-address", "127.0.0.1", "--discover-timeout", "5s",
			"--prefill-peer", aID, "--decode-peer", bID, "--max-tokens", "64", distPrompt}
		run := c.inferAndKill(t, args, map[string]*workerProc{aID: a, bID: b}, aID)
		var lines []string // besides the stage lines
		for line := range strings.Lines(run.stderr) {
			if !strings.HasPrefix(line, "prefill on ") && !strings.HasPrefix(line, "decode on ") {
				lines = append(lines, line)
			}
		}
		var ee *exec.ExitError
		if !errors.As(run.err, &ee) || ee.ExitCode() != 4 || run.victim != bID || len(lines) != 1 ||
			!strings.HasPrefix(lines[0], "edgellm: unavailable: decode worker "+bID+" was lost after ") ||
			!strings.Contains(lines[0], "no other worker can hold its layers") {
			t.Fatalf("losing the decode worker with no spare: %v, stderr %q; want exit 4 and one line naming %s\nworker a:\n%s",
				run.err, run.stderr, bID, a.stderr)
		}
		// The stage lines name the roles, before the answer streams (checked on
		// this run: one cold P/D cluster fewer than a run of its own).
		if !strings.Contains(run.stderr, "prefill on "+aID) || !strings.Contains(run.stderr, "decode on "+bID) {
			t.Errorf("stderr %q; want 'prefill on %s' and 'decode on %s'", run.stderr, aID, bID)
		}
		noProcessesOf(t, []string{dirs[1], dirs[2]})
	})

	if err := a.stop(t); err != nil {
		t.Fatalf("worker exit after SIGTERM: %v\n%s", err, a.stderr)
	}
	if log := a.stderr.String(); strings.Count(log, "joined cluster") != 2 || strings.Count(log, "left cluster") != 2 {
		t.Errorf("worker %s did not join and leave two clusters:\n%s", a.dataDir, log)
	}
}

// runFor is run with a longer limit (a P/D run loads the whole model on two
// workers).
func (c *cliEnv) runFor(limit time.Duration, args ...string) (string, string, int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := c.command(ctx, args...)
	cmd.Env = c.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return stdout.String(), stderr.String(), ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("run %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), 0
}

// newPeerID is a fresh, valid peer id that no node uses.
func newPeerID(t *testing.T) string {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}
