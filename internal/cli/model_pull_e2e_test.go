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
	"syscall"
	"testing"
	"time"

	"github.com/edgellm/edgellm/internal/cli"
	"github.com/edgellm/edgellm/internal/testutil"
)

// withModels is a copy of c whose processes use the model store dir.
func (c *cliEnv) withModels(dir string) *cliEnv {
	d := *c
	d.env = append(slices.Clone(c.env), "EDGELLM_MODELS_DIR="+dir)
	return &d
}

// sharedUntil runs `peers --json` until every worker in want lists its
// model with a directory CID (the worker has added it to its Kubo) and
// returns the peers then listed.
func (c *cliEnv) sharedUntil(want map[string]string, args ...string) []peerEntry {
	c.t.Helper()
	ids := map[string]bool{}
	for id := range want {
		ids[id] = true
	}
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		peers := c.peersUntil(ids, args...)
		shared := 0
		for _, p := range peers {
			for _, m := range p.Models {
				if m.ID == want[p.PeerID] && m.DirCID != "" {
					shared++
				}
			}
		}
		if shared == len(want) {
			return peers
		}
	}
	c.t.Fatalf("the workers' records never named directory CIDs for %v", want)
	return nil
}

// sharedModel is the entry of model id in peer's record.
func sharedModel(t *testing.T, peers []peerEntry, peer, id string) (peerEntry, peerModel) {
	t.Helper()
	for _, p := range peers {
		for _, m := range p.Models {
			if p.PeerID == peer && m.ID == id {
				return p, m
			}
		}
	}
	t.Fatalf("%s does not list %s: %+v", peer, id, peers)
	return peerEntry{}, peerModel{}
}

// TestModelPullAcrossWorkers: worker A holds a small random model that
// worker B lacks, B the embedded model; each adds its model to its Kubo
// and its record names the directory CID. `edgellm model pull ID` finds the
// holders in the records (bitswap over the swarm's private IPFS network,
// verified by CID): A pulls the embedded model from B, killed by SIGKILL
// midway and rerun (the rerun fetches only what is missing; the store never
// holds half a model); B pulls the small one from A, after a fake holder
// whose record lies about its directory is refused; B restarts serving it,
// and a split inference across A and B equals transformers generate. A
// model nobody shares fails with one line within the given time.
func TestModelPullAcrossWorkers(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	testutil.NoLeakedChildren(t)
	c := newCLIEnv(t)
	if !c.kubo() {
		t.Fatal("no Kubo binary (make setup builds .bin/ipfs)")
	}
	storeA, storeB := t.TempDir(), t.TempDir()
	// B starts out serving the embedded model only.
	if err := os.Symlink(filepath.Join(testutil.ModelsDir(t), "smollm2-135m"), filepath.Join(storeB, "smollm2-135m")); err != nil {
		t.Fatal(err)
	}
	c.ns = testutil.NewNetNS(t)
	a, b := c.withModels(storeA), c.withModels(storeB)
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()} // A, B, the requester
	t.Cleanup(func() { noProcessesOf(t, dirs) })

	src := filepath.Join(t.TempDir(), "tiny")
	build := exec.CommandContext(t.Context(), testutil.Python(t), "-m", "tests.python.tiny_models",
		"qwen2", src, filepath.Join(testutil.ModelsDir(t), "smollm2-135m"))
	build.Dir = testutil.RepoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the tiny model: %v\n%s", err, out)
	}
	if _, stderr, code := a.run("--data-dir", dirs[0], "model", "add", src, "--id", "tiny"); code != 0 {
		t.Fatalf("model add: exit %d: %s", code, stderr)
	}

	join := c.swarmInit()
	wa := a.startWorker(dirs[0], "--no-mdns", "--join", join, "--model", "tiny")
	aID, aAddrs := wa.state(t)
	swarm := []string{"--join", join, "--no-mdns", "--bootstrap", aAddrs[0]}
	wb := b.startWorker(dirs[1], append(swarm, "--model", "smollm2-135m")...)
	bID, _ := wb.state(t)
	peers := c.sharedUntil(map[string]string{aID: "tiny", bID: "smollm2-135m"}, swarm...)
	_, tiny := sharedModel(t, peers, aID, "tiny")
	_, smol := sharedModel(t, peers, bID, "smollm2-135m")
	weightsCID := tiny.WeightsCID

	// `model publish` adds the same directory the worker did.
	out, stderr, code := a.run("--data-dir", dirs[0], "model", "publish", "tiny")
	if fields := strings.Fields(out); code != 0 || len(fields) != 3 || fields[0] != "tiny" || fields[1] != weightsCID || fields[2] != tiny.DirCID {
		t.Fatalf("model publish: exit %d, stdout %q (record: %+v), stderr %s", code, out, tiny, stderr)
	}
	pull := func(env *cliEnv, dataDir string, args ...string) (string, string, int) {
		return env.run(append(append([]string{"--data-dir", dataDir, "model", "pull"}, args...), swarm...)...)
	}

	t.Run("a model nobody shares", func(t *testing.T) {
		// The raw CID of "no edgellm peer holds this block", never added anywhere.
		const nobody = "bafkreieafbpdoh32q5l2b4chhomh2ycpxridzulii7iyyituhpbkeyblve"
		for _, args := range [][]string{{nobody}, {"tiny", "--from", bID}} {
			_, stderr, code := pull(b, dirs[1], append(args, "--timeout", "3s")...)
			if code != cli.ExitNotFound || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, " share") {
				t.Errorf("pull %v: exit %d, stderr %q; want %d and one line", args, code, stderr, cli.ExitNotFound)
			}
		}
	})

	t.Run("SIGKILL midway, then a rerun", func(t *testing.T) {
		pullKilledMidway(t, a, dirs[0], storeA, append([]string{"smollm2-135m", "--from", bID}, swarm...))
		out, stderr, code := pull(a, dirs[0], "smollm2-135m", "--from", bID)
		if code != 0 || strings.TrimSpace(out) != "smollm2-135m "+smol.WeightsCID {
			t.Fatalf("rerun: exit %d, stdout %q, stderr %s", code, out, stderr)
		}
		info, err := os.Stat(filepath.Join(storeA, "smollm2-135m", "model.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		var fetched int64
		at := strings.Index(stderr, "pulled smollm2-135m: ")
		if _, err := fmt.Sscanf(stderr[max(at, 0):], "pulled smollm2-135m: %d bytes", &fetched); at < 0 || err != nil {
			t.Fatalf("rerun's stderr %q: %v", stderr, err)
		}
		t.Logf("the rerun fetched %d of %d bytes", fetched, info.Size())
		// The blocks fetched before the kill stayed in A's Kubo.
		if fetched >= info.Size()-killedAfter/2 {
			t.Errorf("the rerun fetched %d bytes of %d; at least %d were fetched before the kill", fetched, info.Size(), killedAfter)
		}
		if stale, _ := filepath.Glob(filepath.Join(storeA, ".pull-*")); len(stale) != 0 {
			t.Errorf("staging left in the store: %v", stale)
		}
	})

	t.Run("a holder whose directory is not what its record claims", func(t *testing.T) {
		// The liar claims the small model, in A's Kubo, with the embedded
		// model's directory (A holds it now).
		aEntry, _ := sharedModel(t, c.peersUntil(map[string]bool{aID: true, bID: true}, swarm...), aID, "tiny")
		liar, stop := c.startFakeLiar(fakeLiar{Join: join, Bootstrap: aAddrs[0], ID: "tiny", WeightsCID: weightsCID,
			DirCID: smol.DirCID, IPFSPeerID: aEntry.IPFSPeerID, IPFSAddrs: aEntry.IPFSAddrs})
		c.peersUntil(map[string]bool{aID: true, bID: true, liar: true}, swarm...)
		_, stderr, code := pull(b, dirs[1], "tiny", "--from", liar)
		if code != cli.ExitUnavailable || strings.Count(strings.TrimSpace(stderr), "\n") != 0 ||
			!strings.Contains(stderr, "not "+weightsCID+" as its holder's record claims") {
			t.Errorf("pull from the liar: exit %d, stderr %q; want %d, one line", code, stderr, cli.ExitUnavailable)
		}
		// With every holder, the liar (if tried first) is refused and A serves.
		out, stderr, code := pull(b, dirs[1], "tiny", "--timeout", "60s")
		if code != 0 || strings.TrimSpace(out) != "tiny "+weightsCID {
			t.Fatalf("model pull: exit %d, stdout %q, stderr %s", code, out, stderr)
		}
		stop()
	})
	if err := wb.stop(t); err != nil {
		t.Fatalf("worker B after SIGTERM: %v\n%s", err, wb.stderr)
	}
	wb = b.startWorker(dirs[1], append(swarm, "--model", "tiny")...)
	c.peersUntil(map[string]bool{aID: true, bID: true}, append(swarm, "--model", "tiny")...)

	const prompt, maxTokens = "The river carries sediment to the sea,", 12
	want := rawReferenceTokens(t, testutil.Python(t), filepath.Join(storeB, "tiny"), prompt, maxTokens)
	out, stderr, code = a.run(append(append([]string{"--data-dir", dirs[2], "infer"}, swarm...),
		"--listen", "/ip4/127.0.0.1/tcp/0", "--ray-address", "127.0.0.1", "--stages", "2", "--model", "tiny",
		"--raw", "--json", "--max-tokens", strconv.Itoa(maxTokens), prompt)...)
	if code != 0 {
		t.Fatalf("split infer: exit %d: %s\nA:\n%s\nB:\n%s", code, stderr, wa.stderr, wb.stderr)
	}
	var res distResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("infer --json: %v\n%s", err, out)
	}
	if res.FinishReason == "stop" && len(want) > len(res.TokenIDs) {
		want = want[:len(res.TokenIDs)]
	}
	if !slices.Equal(res.TokenIDs, want) || res.WeightsCID != weightsCID {
		t.Errorf("token ids %v (weights %s)\nwant (transformers generate) %v (weights %s)", res.TokenIDs, res.WeightsCID, want, weightsCID)
	}
	if len(res.Stages) != 2 || res.Stages[0].PeerID == res.Stages[1].PeerID {
		t.Errorf("stages %+v; want one on each worker", res.Stages)
	}
	for _, w := range []*workerProc{wa, wb} {
		if err := w.stop(t); err != nil {
			t.Fatalf("worker exit after SIGTERM: %v\n%s", err, w.stderr)
		}
	}
}

// killedAfter is how much of the weights a pull has staged when
// pullKilledMidway kills it.
const killedAfter = 32 << 20

// pullKilledMidway starts `model pull args` and kills it with SIGKILL once
// it has staged killedAfter bytes of weights; the store must not hold the
// model then.
func pullKilledMidway(t *testing.T, env *cliEnv, dataDir, store string, args []string) {
	t.Helper()
	cmd := env.command(context.Background(), append([]string{"--data-dir", dataDir, "model", "pull"}, args...)...)
	cmd.Env = env.env
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		staged, _ := filepath.Glob(filepath.Join(store, ".pull-*", "model.safetensors"))
		if len(staged) == 1 {
			if info, err := os.Stat(staged[0]); err == nil && info.Size() >= killedAfter {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("the pull ended (%v) before it could be killed", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the pull staged no weights in time")
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-done
	if _, err := os.Stat(filepath.Join(store, "smollm2-135m")); !os.IsNotExist(err) {
		t.Errorf("the store holds the killed pull's model (%v)", err)
	}
}
