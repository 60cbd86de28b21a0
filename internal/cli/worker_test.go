package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/edgellm/edgellm/internal/ipfs"
	"github.com/edgellm/edgellm/internal/testutil"
	"github.com/edgellm/edgellm/p2p"
)

// edgellmBinary is the edgellm binary every test of the package runs, built
// once: each build is a link of several CPU-seconds, and thirteen tests built
// their own on a two-core machine shared with the rest of `make test`.
// TestMain removes it.
var edgellmBinary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// buildEdgellm returns the package's edgellm binary, building it on first use.
func buildEdgellm(t *testing.T) string {
	t.Helper()
	b := &edgellmBinary
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "edgellm-cli-bin-"); b.err != nil {
			return
		}
		b.path = filepath.Join(b.dir, "edgellm")
		cmd := exec.Command("go", "build", "-o", b.path, ".")
		cmd.Dir = testutil.RepoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

type cliEnv struct {
	t   *testing.T
	bin string
	env []string
	ns  *testutil.NetNS // when set, every edgellm process runs in this namespace
	// wrap, when set, runs edgellm through this command line (e.g. taskset
	// pinning a worker to one CPU).
	wrap []string
}

// command returns the edgellm command line, inside c.ns if set.
func (c *cliEnv) command(ctx context.Context, args ...string) *exec.Cmd {
	bin := c.bin
	if len(c.wrap) > 0 {
		bin, args = c.wrap[0], append(append(c.wrap[1:len(c.wrap):len(c.wrap)], c.bin), args...)
	}
	if c.ns != nil {
		return c.ns.Command(ctx, bin, args...)
	}
	return exec.CommandContext(ctx, bin, args...)
}

// run runs edgellm to completion and returns stdout, stderr and exit code.
func (c *cliEnv) run(args ...string) (string, string, int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := c.command(ctx, args...)
	cmd.Env = c.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("run %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}

type workerProc struct {
	cmd     *exec.Cmd
	dataDir string
	stderr  *bytes.Buffer
	done    chan error
}

// startWorker starts `edgellm worker` and waits for its worker.json.
func (c *cliEnv) startWorker(dataDir string, args ...string) *workerProc {
	c.t.Helper()
	full := append([]string{"--data-dir", dataDir, "worker", "--listen", "/ip4/127.0.0.1/tcp/0",
		"--refresh", "2s", "--record-ttl", "6s"}, args...)
	return c.startWorkerArgs(dataDir, full)
}

// startWorkerArgs starts edgellm with full (a worker command line) and
// returns once the worker has joined (its worker.json exists).
func (c *cliEnv) startWorkerArgs(dataDir string, full []string) *workerProc {
	c.t.Helper()
	cmd := c.command(context.Background(), full...)
	cmd.Env = c.env
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

func (w *workerProc) state(t *testing.T) (peerID string, addrs []string) {
	data, err := os.ReadFile(filepath.Join(w.dataDir, "worker.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		PeerID string   `json:"peer_id"`
		Addrs  []string `json:"addrs"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	return st.PeerID, st.Addrs
}

// stop sends SIGTERM and waits; it is a no-op once the worker has exited.
func (w *workerProc) stop(t *testing.T) error {
	if w.cmd.ProcessState != nil {
		return nil
	}
	w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-w.done:
		w.done <- err
		return err
	case <-time.After(60 * time.Second):
		w.cmd.Process.Kill()
		err := <-w.done
		w.done <- err
		t.Errorf("worker ignored SIGTERM\n%s", w.stderr)
		return err
	}
}

type peerModel struct {
	ID         string `json:"id"`
	WeightsCID string `json:"weights_cid"`
	NumLayers  int    `json:"num_layers"`
	DirCID     string `json:"dir_cid"`
}

type peerEntry struct {
	PeerID           string      `json:"peer_id"`
	Models           []peerModel `json:"models"`
	Device           string      `json:"device"`
	RTTMs            *float64    `json:"rtt_ms"`
	DecodeTokensPerS *float64    `json:"decode_tokens_per_s"`
	// PrefillTokensPerS and the sessions are what ChooseMode weighs.
	PrefillTokensPerS float64  `json:"prefill_tokens_per_s"`
	ActiveSessions    uint32   `json:"active_sessions"`
	MaxSessions       uint32   `json:"max_sessions"`
	IPFSPeerID        string   `json:"ipfs_peer_id"`
	IPFSAddrs         []string `json:"ipfs_addrs"`
	AcceptPulls       bool     `json:"accept_pulls"`
	PullBudgetBytes   uint64   `json:"pull_disk_budget_bytes"`
}

// peers runs `edgellm peers --json` until it lists exactly want (or fails).
func (c *cliEnv) peersUntil(want map[string]bool, args ...string) []peerEntry {
	c.t.Helper()
	var got []peerEntry
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		out, errOut, code := c.run(append([]string{"--data-dir", c.t.TempDir(), "peers", "--json", "--timeout", "8s"}, args...)...)
		if code != 0 {
			c.t.Fatalf("peers exited %d: %s", code, errOut)
		}
		got = nil
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			c.t.Fatalf("peers --json: %v\n%s", err, out)
		}
		ids := map[string]bool{}
		for _, p := range got {
			ids[p.PeerID] = true
		}
		if len(ids) == len(want) && len(got) == len(want) {
			all := true
			for id := range want {
				all = all && ids[id]
			}
			if all {
				return got
			}
		}
	}
	c.t.Fatalf("peers never listed exactly %v; last: %+v", want, got)
	return nil
}

// newCLIEnv builds edgellm and returns the environment its runs get.
func newCLIEnv(t *testing.T) *cliEnv {
	t.Helper()
	python := testutil.Python(t)
	env := append(os.Environ(), "EDGELLM_PYTHON="+python, "EDGELLM_MODELS_DIR="+testutil.ModelsDir(t))
	env = append(env, testutil.IPFSEnv(t)...) // the test binary has no .bin/ipfs beside it
	return &cliEnv{t: t, bin: buildEdgellm(t), env: env}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// kubo reports whether the edgellm processes of c find a Kubo binary.
func (c *cliEnv) kubo() bool {
	for _, kv := range c.env {
		if v, ok := strings.CutPrefix(kv, testutil.EnvIPFSBin+"="); ok && v != "" {
			return fileExists(v)
		}
	}
	return false
}

// swarmInit runs `edgellm swarm init` and returns the join string.
func (c *cliEnv) swarmInit() string {
	c.t.Helper()
	join, errOut, code := c.run("--data-dir", c.t.TempDir(), "swarm", "init")
	join = strings.TrimSpace(join)
	if code != 0 || strings.Contains(join, "\n") || !strings.HasPrefix(join, "edgellm1:") {
		c.t.Fatalf("swarm init: code %d, stdout %q, stderr %q", code, join, errOut)
	}
	return join
}

// TestWorkersAndPeers: two `edgellm worker` processes and a third node;
// `peers --json` lists both with their models and RTTs through a bootstrap
// peer; a node of another swarm sees nobody; a malformed join string exits 2
// with one line; SIGTERM leaves gracefully. Every node runs with --no-mdns:
// all traffic is TCP on 127.0.0.1 (mDNS has TestPeersMDNS).
func TestWorkersAndPeers(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	testutil.NoLeakedChildren(t)
	c := newCLIEnv(t)
	join := c.swarmInit()

	_, stderr, code := c.run("--data-dir", t.TempDir(), "peers", "--no-mdns", "--join", join[:len(join)-3])
	if code != 2 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "invalid join string") {
		t.Fatalf("malformed join string: code %d, stderr %q", code, stderr)
	}

	a := c.startWorker(t.TempDir(), "--no-mdns", "--join", join, "--price", "0.25", "--label", "test")
	aID, aAddrs := a.state(t)
	joinFile := filepath.Join(t.TempDir(), "join")
	if err := os.WriteFile(joinFile, []byte(join+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := c.startWorker(t.TempDir(), "--no-mdns", "--join-file", joinFile, "--bootstrap", aAddrs[0])
	bID, _ := b.state(t)
	both := map[string]bool{aID: true, bID: true}
	c.checkJoinString(b, join, bID)

	got := c.peersUntil(both, "--join", join, "--no-mdns", "--bootstrap", aAddrs[0])
	for _, p := range got {
		if len(p.Models) != 1 || p.Models[0].ID != "smollm2-135m" || p.Models[0].WeightsCID == "" ||
			p.Models[0].NumLayers != 30 || p.RTTMs == nil || *p.RTTMs <= 0 || p.Device == "" || p.DecodeTokensPerS == nil {
			t.Fatalf("peer entry incomplete: %+v", p)
		}
	}
	c.peersUntil(both, "--join", join, "--no-mdns", "--bootstrap", mustAddr(t, b), "--model", "smollm2-135m")
	c.checkWorkerIPFS(a, b, got)

	// A node with another swarm's secret sees nobody, even pointed at a member.
	out, _, code := c.run("--data-dir", t.TempDir(), "peers", "--json", "--timeout", "3s", "--no-mdns",
		"--join", c.swarmInit(), "--bootstrap", aAddrs[0])
	if code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("outsider: code %d, %s", code, out)
	}

	// Graceful leave: SIGTERM, exit 0, and the other worker alone remains.
	if err := a.stop(t); err != nil {
		t.Fatalf("worker exit after SIGTERM: %v\n%s", err, a.stderr)
	}
	c.peersUntil(map[string]bool{bID: true}, "--join", join, "--no-mdns", "--bootstrap", mustAddr(t, b))
	if err := b.stop(t); err != nil {
		t.Fatalf("worker exit after SIGTERM: %v\n%s", err, b.stderr)
	}
	if !strings.Contains(lastLine(b.stderr.String()), "Left the swarm") {
		t.Fatalf("worker did not report leaving: %q", lastLine(b.stderr.String()))
	}
}

// TestPeersMDNS: two `edgellm worker` processes with no bootstrap address
// anywhere find each other and are listed by `peers --json` through mDNS
// alone; a node of another swarm sees nobody. mDNS multicasts on every
// multicast interface, so every process runs in a network namespace of the
// test's own whose only interface is loopback; the test skips where no
// namespace can be made (needs root and iproute2) or EDGELLM_SKIP_MDNS is set.
func TestPeersMDNS(t *testing.T) {
	if testing.Short() || os.Getenv("EDGELLM_SKIP_MDNS") != "" {
		t.Skip("mDNS end-to-end test skipped")
	}
	testutil.NoLeakedChildren(t)
	c := newCLIEnv(t)
	c.ns = testutil.NewNetNS(t) // deleted after the workers' cleanups stop them
	join := c.swarmInit()

	a := c.startWorker(t.TempDir(), "--join", join)
	aID, _ := a.state(t)
	b := c.startWorker(t.TempDir(), "--join", join)
	bID, _ := b.state(t)
	c.peersUntil(map[string]bool{aID: true, bID: true}, "--join", join, "--model", "smollm2-135m")

	out, _, code := c.run("--data-dir", t.TempDir(), "peers", "--json", "--timeout", "3s", "--join", c.swarmInit())
	if code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("outsider: code %d, %s", code, out)
	}
	for _, w := range []*workerProc{a, b} {
		if err := w.stop(t); err != nil {
			t.Fatalf("worker exit after SIGTERM: %v\n%s", err, w.stderr)
		}
	}
}

// checkJoinString: the worker printed no join string (its stderr ends up
// in logs), and `swarm join-string` prints one for the same swarm through
// that worker.
func (c *cliEnv) checkJoinString(w *workerProc, join, id string) {
	t := c.t
	if strings.Contains(w.stderr.String(), p2p.JoinPrefix) {
		t.Errorf("worker printed a join string:\n%s", w.stderr)
	}
	out, stderr, code := c.run("--data-dir", w.dataDir, "swarm", "join-string")
	got, err := p2p.ParseJoin(strings.TrimSpace(out))
	want, _ := p2p.ParseJoin(join)
	if code != 0 || err != nil || got.Secret != want.Secret || len(got.Bootstrap) != 1 || got.Bootstrap[0].ID.String() != id {
		t.Errorf("swarm join-string: exit %d, %v, stderr %q; want the swarm through worker %s", code, err, stderr, id)
	}
}

func mustAddr(t *testing.T, w *workerProc) string {
	_, addrs := w.state(t)
	return addrs[0]
}

func lastLine(s string) string {
	var last string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			last = l
		}
	}
	return last
}

// checkWorkerIPFS: each worker's record carries its IPFS node's peer id and
// loopback addresses, and B's IPFS node, told those addresses, connects to
// A's through the swarm's private IPFS network and fetches a block A holds.
func (c *cliEnv) checkWorkerIPFS(a, b *workerProc, got []peerEntry) {
	t := c.t
	if !c.kubo() {
		t.Logf("no Kubo binary (%s unset, no .bin/ipfs): IPFS checks skipped", testutil.EnvIPFSBin)
		return
	}
	type ipfsState struct {
		PeerID     string   `json:"peer_id"`
		IPFSPeerID string   `json:"ipfs_peer_id"`
		IPFSAPI    string   `json:"ipfs_api"`
		IPFSAddrs  []string `json:"ipfs_addrs"`
	}
	read := func(w *workerProc) ipfsState {
		var st ipfsState
		data, err := os.ReadFile(filepath.Join(w.dataDir, "worker.json"))
		if err == nil {
			err = json.Unmarshal(data, &st)
		}
		if err != nil || st.IPFSPeerID == "" || st.IPFSAPI == "" {
			t.Fatalf("worker.json without its IPFS node (%v): %s\n%s", err, data, w.stderr)
		}
		return st
	}
	sa, sb := read(a), read(b)
	byPeer := map[string]peerEntry{}
	for _, p := range got {
		byPeer[p.PeerID] = p
	}
	for _, st := range []ipfsState{sa, sb} {
		p := byPeer[st.PeerID]
		if p.IPFSPeerID != st.IPFSPeerID || len(p.IPFSAddrs) == 0 {
			t.Fatalf("peers --json: ipfs_peer_id %q addrs %v, want %q", p.IPFSPeerID, p.IPFSAddrs, st.IPFSPeerID)
		}
		for _, addr := range p.IPFSAddrs {
			if !strings.HasPrefix(addr, "/ip4/127.0.0.1/tcp/") {
				t.Fatalf("a loopback worker's IPFS node listens on %s", addr)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kuboA, kuboB := ipfs.NewClient(sa.IPFSAPI), ipfs.NewClient(sb.IPFSAPI)
	data := []byte("block from worker A " + time.Now().String())
	cid, err := kuboA.BlockPut(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	var dial []ma.Multiaddr
	for _, s := range byPeer[sa.PeerID].IPFSAddrs {
		dial = append(dial, ma.StringCast(s+"/p2p/"+sa.IPFSPeerID))
	}
	if err := kuboB.SwarmConnect(ctx, dial...); err != nil {
		t.Fatalf("worker B's IPFS node cannot connect to A's: %v", err)
	}
	if back, err := kuboB.BlockGet(ctx, cid); err != nil || !bytes.Equal(back, data) {
		t.Fatalf("block over bitswap: %q, %v", back, err)
	}
}
