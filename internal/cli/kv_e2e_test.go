package cli_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/edgellm/edgellm/internal/backend"
	"github.com/edgellm/edgellm/internal/testutil"
	"github.com/edgellm/edgellm/p2p"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// kvShared is a ~300-token prompt prefix two requests share.
var kvShared = strings.Repeat("The lighthouse keeper logs the ships, the weather and the tides every hour. ", 20)

// kvResult is the part of `infer --json` the test reads.
type kvResult struct {
	PromptTokens       uint32   `json:"prompt_tokens"`
	CachedPromptTokens uint32   `json:"cached_prompt_tokens"`
	TokenIDs           []uint32 `json:"token_ids"`
}

// TestKVPrefixFromSwarm: the prefix cache across the swarm, with real
// processes on loopback (no Ray, no mDNS). A worker W runs; a first request
// R1 runs on W's backend (node.backend_address), so the prompt's KV blocks
// land in W's store and W announces their keys. A requester R2 with a fresh
// data directory runs `infer --local --join` on a prompt with the same
// prefix and another ending: it finds W in the DHT, gets W's manifest over
// /edgellm/kv/1.0.0, its IPFS node fetches the blocks from W's, and it
// computes only the rest (cached_prompt_tokens > 0) with the same greedy
// tokens as single-process transformers. With W's IPFS node frozen, a third
// requester still answers correctly, computing everything, with a warning.
func TestKVPrefixFromSwarm(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	testutil.NoLeakedChildren(t)
	c := newCLIEnv(t)
	if !c.kubo() {
		t.Skip("no Kubo binary (make setup builds .bin/ipfs)")
	}
	python := testutil.Python(t)
	join := c.swarmInit()

	// W's backend listens on a socket R1 can be pointed at; the path is short
	// (unix socket paths are limited to ~100 bytes).
	wDir, err := os.MkdirTemp("", "kvw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(wDir) })
	sock := filepath.Join(wDir, "b.sock")
	if err := os.WriteFile(filepath.Join(wDir, "edgellm.yaml"),
		[]byte("node:\n  supervisor:\n    listen: unix:"+sock+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w := c.startWorker(wDir, "--no-mdns", "--join", join)
	wID, wAddrs := w.state(t)
	r1Dir, r2Dir, r3Dir := t.TempDir(), t.TempDir(), t.TempDir()

	// R1 computes the prompt on W's backend; W's store keeps its blocks.
	prompt1 := kvShared + "How often are the tides logged?"
	r1 := *c
	r1.env = append(slices.Clone(c.env), "EDGELLM_BACKEND_ADDRESS=unix:"+sock)
	first := r1.inferJSON(t, "--data-dir", r1Dir, "infer", "--local", "--json", "--max-tokens", "4", prompt1)
	if first.PromptTokens < 250 || first.CachedPromptTokens != 0 {
		t.Fatalf("first request: %d prompt tokens, %d cached", first.PromptTokens, first.CachedPromptTokens)
	}

	prompt2 := kvShared + "What does the keeper write down?"
	waitAnnounced(t, sock, join, wID, wAddrs[0], prompt2)
	want := referenceTokens(t, python, prompt2, 8)
	swarmArgs := []string{"infer", "--local", "--join", join, "--bootstrap", wAddrs[0], "--no-mdns",
		"--listen", "/ip4/127.0.0.1/tcp/0", "--json", "--max-tokens", "8", prompt2}

	got := c.inferJSON(t, append([]string{"--data-dir", r2Dir}, swarmArgs...)...)
	if got.CachedPromptTokens == 0 || got.CachedPromptTokens%16 != 0 || got.CachedPromptTokens >= got.PromptTokens {
		t.Fatalf("R2: %d of %d prompt tokens from the swarm's cache", got.CachedPromptTokens, got.PromptTokens)
	}
	if !slices.Equal(got.TokenIDs, want) {
		t.Fatalf("R2 tokens %v, transformers %v", got.TokenIDs, want)
	}
	t.Logf("R2 took %d of %d prompt tokens from W's blocks", got.CachedPromptTokens, got.PromptTokens)

	// W's IPFS node stops answering (SIGSTOP: the node's supervisor restarts
	// a Kubo that exits, not one that hangs). The lookup still finds W and its
	// manifest, but the blocks are out of reach: a warning, a full prefill,
	// the same tokens.
	kubo := testutil.ProcessesMentioning(filepath.Join(wDir, "ipfs"))
	if len(kubo) != 1 {
		t.Fatalf("W's Kubo: pids %v", kubo)
	}
	if err := syscall.Kill(kubo[0], syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			syscall.Kill(kubo[0], syscall.SIGCONT)
		}
	}
	t.Cleanup(resume) // before the worker's own cleanup stops it
	stdout, stderr, code := c.run(append([]string{"--data-dir", r3Dir}, swarmArgs...)...)
	resume()
	if code != 0 {
		t.Fatalf("R3 exited %d: %s", code, stderr)
	}
	var third kvResult
	if err := json.Unmarshal([]byte(stdout), &third); err != nil {
		t.Fatalf("R3 --json: %v\n%s", err, stdout)
	}
	if third.CachedPromptTokens != 0 || !slices.Equal(third.TokenIDs, want) {
		t.Fatalf("R3 without W's IPFS node: %d cached, tokens %v, want %v", third.CachedPromptTokens, third.TokenIDs, want)
	}
	if !strings.Contains(stderr, "warning") || !strings.Contains(stderr, "out of reach") {
		t.Fatalf("R3 gave no warning about the unreachable blocks: %q", stderr)
	}

	if err := w.stop(t); err != nil {
		t.Fatalf("worker exit after SIGTERM: %v\n%s", err, w.stderr)
	}
	noProcessesOf(t, []string{wDir, r1Dir, r2Dir, r3Dir})
}

// inferJSON runs an infer --json to success and decodes it.
func (c *cliEnv) inferJSON(t *testing.T, args ...string) kvResult {
	t.Helper()
	stdout, stderr, code := c.run(args...)
	if code != 0 {
		t.Fatalf("infer exited %d: %s", code, stderr)
	}
	var res kvResult
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("infer --json: %v\n%s", err, stdout)
	}
	return res
}

// waitAnnounced waits until W's backend holds the first block of prompt and
// a member of the swarm finds W as that block's provider in the DHT.
func waitAnnounced(t *testing.T, sock, join, wID, wAddr, prompt string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := backend.Dial("unix:" + sock)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	keys, err := b.PrefixKeys(ctx, &pb.PrefixKeysRequest{Model: "smollm2-135m",
		Input: &pb.PrefixKeysRequest_Prompt{Prompt: prompt}})
	if err != nil || len(keys.GetKeys()) == 0 {
		t.Fatalf("prefix keys: %v", err)
	}
	j, err := p2p.ParseJoin(join)
	if err != nil {
		t.Fatal(err)
	}
	boot, err := p2p.ParseBootstrapAddrs([]string{wAddr})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := p2p.NewEphemeralIdentity()
	n, err := p2p.New(p2p.WithIdentity(key), p2p.WithSecret(j.Secret), p2p.WithBootstrap(boot...),
		p2p.WithMDNS(false), p2p.WithListenAddrs(ma.StringCast("/ip4/127.0.0.1/tcp/0")))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for ctx.Err() == nil {
		fctx, fcancel := context.WithTimeout(ctx, 5*time.Second)
		ps, _ := n.FindKeyProviders(fctx, keys.GetKeys()[0], 1)
		fcancel()
		if len(ps) == 1 && ps[0].ID.String() == wID {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal("W never announced the prompt's first block")
}
