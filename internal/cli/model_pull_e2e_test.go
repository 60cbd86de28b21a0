package cli_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/internal/testutil"
)

// withModels is a copy of c whose processes use the model store dir.
func (c *cliEnv) withModels(dir string) *cliEnv {
	d := *c
	d.env = append(slices.Clone(c.env), "EDGELLM_MODELS_DIR="+dir)
	return &d
}

// TestModelPullAcrossWorkers: worker A holds a small random model that
// worker B lacks; A publishes it into its Kubo, B pulls it over the swarm's
// private IPFS network (verified by CID) with `edgellm model pull`, restarts
// serving it, and a split inference across A and B equals transformers
// generate. A CID nobody has fails with one line within the given time.
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
	peers := c.peersUntil(map[string]bool{aID: true, bID: true}, swarm...)

	out, stderr, code := a.run("--data-dir", dirs[0], "model", "publish", "tiny")
	fields := strings.Fields(out)
	if code != 0 || len(fields) != 3 || fields[0] != "tiny" {
		t.Fatalf("model publish: exit %d, stdout %q, stderr %s", code, out, stderr)
	}
	weightsCID, dirCID := fields[1], fields[2]
	var holder string
	for _, p := range peers {
		if p.PeerID == aID && len(p.IPFSAddrs) > 0 {
			holder = p.IPFSAddrs[0] + "/p2p/" + p.IPFSPeerID
		}
	}
	if holder == "" {
		t.Fatalf("A's record names no IPFS node: %+v", peers)
	}

	t.Run("a CID nobody has", func(t *testing.T) {
		// The raw CID of "no edgellm peer holds this block", never added anywhere.
		const nobody = "bafkreieafbpdoh32q5l2b4chhomh2ycpxridzulii7iyyituhpbkeyblve"
		_, stderr, code := b.run("--data-dir", dirs[1], "model", "pull", nobody, "--connect", holder, "--timeout", "3s")
		if code != 2 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "no peer in the swarm provided") {
			t.Errorf("pull of an unknown CID: exit %d, stderr %q; want 2 and one line", code, stderr)
		}
	})

	out, stderr, code = b.run("--data-dir", dirs[1], "model", "pull", dirCID, "--connect", holder, "--timeout", "60s")
	if code != 0 || strings.TrimSpace(out) != "tiny "+weightsCID {
		t.Fatalf("model pull: exit %d, stdout %q, stderr %s", code, out, stderr)
	}
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
