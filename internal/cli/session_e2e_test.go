package cli_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgellm/edgellm/internal/testutil"
)

// sessionPrompts are the three prompts one session serves.
var sessionPrompts = []string{
	"Write a short story about a robot who learns to paint.",
	"Explain why the sky is blue in three sentences.",
	"List five fruits and describe each one.",
}

// sessionRecord is the part of <data-dir>/sessions/<id>.json the test reads.
type sessionRecord struct {
	ID     string `json:"session_id"`
	PID    int    `json:"pid"`
	Socket string `json:"socket"`
	Model  string `json:"model"`
	Stages []struct {
		PeerID     string `json:"peer_id"`
		RayAddress string `json:"ray_address"`
	} `json:"stages"`
}

// TestSessionInfer: two `edgellm worker` processes; `session open --stages
// 2` forms one cluster across them; three `infer --session ID --json` with
// different prompts each equal single-process transformers generate, on that
// one cluster (each worker joined exactly one cluster, the same Ray nodes
// answer every request, the daemon is the same process); `session close`
// stops the daemon, every worker leaves and no Ray process of the session is
// left; bad input exits 2 or 3 with one line; a session with --idle-timeout
// closes itself. Everything runs in a loopback-only network namespace
// (skipped where none can be made), as TestDistributedInfer.
func TestSessionInfer(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	testutil.NoLeakedChildren(t)
	c := newCLIEnv(t)
	if _, err := os.Stat(filepath.Join(testutil.RepoRoot(t), "backend", "edgellm", "server", "cluster.py")); err != nil {
		t.Skip("skipping: the backend has no cluster RPCs (backend/edgellm/server/cluster.py)")
	}
	c.ns = testutil.NewNetNS(t)
	join := c.swarmInit()
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()} // two workers, the requester
	t.Cleanup(func() { noProcessesOf(t, dirs) })
	requester := dirs[2]

	a := c.startWorker(dirs[0], "--no-mdns", "--join", join, "--log-level", "info")
	aID, aAddrs := a.state(t)
	b := c.startWorker(dirs[1], "--no-mdns", "--join", join, "--bootstrap", aAddrs[0], "--log-level", "info")
	bID, _ := b.state(t)
	// Runs before the workers stop: no session daemon outlives a failed test.
	t.Cleanup(func() { closeLeftSessions(t, requester) })
	c.peersUntil(map[string]bool{aID: true, bID: true}, "--join", join, "--no-mdns", "--bootstrap", aAddrs[0])

	net := []string{"--join", join, "--no-mdns", "--bootstrap", aAddrs[0], "--listen", "/ip4/127.0.0.1/tcp/0",
		"--ray-address", "127.0.0.1"}
	edgellm := func(args ...string) (string, string, int) {
		return c.run(append([]string{"--data-dir", requester}, args...)...)
	}
	wantExit := func(what string, want int, args ...string) {
		t.Helper()
		_, stderr, code := edgellm(args...)
		if code != want || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%s: exit %d, stderr %q; want exit %d and one line", what, code, stderr, want)
		}
	}
	wantExit("infer --session nosuch", 3, "infer", "--session", "nosuch", "hi")
	wantExit("session close nosuch", 3, "session", "close", "nosuch")
	wantExit("infer --session ../x", 2, "infer", "--session", "../x", "hi")
	wantExit("session close of a well-formed unknown id", 3, "session", "close", strings.Repeat("ab", 16))
	wantExit("session open --idle-timeout 0", 2, append([]string{"session", "open", "--idle-timeout", "0"}, net...)...)

	// The daemon's own failure comes back as open's exit code and one line.
	_, stderr, code := edgellm(append([]string{"session", "open", "--stages", "3"}, net...)...)
	if code != 2 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "too many stages") {
		t.Errorf("session open --stages 3 with two workers: exit %d, stderr %q; want 2 and one line", code, stderr)
	}
	noProcessesOf(t, dirs[2:])

	joins := func() []int {
		return []int{strings.Count(a.stderr.String(), "joined cluster"), strings.Count(b.stderr.String(), "joined cluster")}
	}
	joinsBefore := joins()

	const maxTokens = 16
	var want [][]uint32
	for _, ans := range referenceAnswers(t, sessionPrompts, maxTokens) {
		want = append(want, ans.Tokens)
	}

	out, stderr, code := edgellm(append([]string{"session", "open", "--stages", "2", "--log-level", "info"}, net...)...)
	id := strings.TrimSpace(out)
	if code != 0 || len(id) != 32 || strings.Contains(id, "\n") {
		t.Fatalf("session open: exit %d, stdout %q, stderr %s\nworker a:\n%s\nworker b:\n%s", code, out, stderr, a.stderr, b.stderr)
	}
	t.Logf("session open: %s\n%s", id, stderr)
	rec := readSessionRecord(t, requester, id)
	if len(rec.Stages) != 2 || !isDaemon(rec.PID, id) {
		t.Fatalf("session record %+v; want two stages and a live daemon", rec)
	}
	// The swarm secret was given with --join: the daemon, alive for the
	// session's whole life, must not show it to `ps` (every local user
	// reads /proc/<pid>/cmdline).
	if cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(rec.PID) + "/cmdline"); err != nil ||
		bytes.Contains(cmdline, []byte(join)) || bytes.Contains(cmdline, []byte("--join")) {
		t.Errorf("session daemon's arguments hold the join string (%v): %q", err, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
	}
	if fi, err := os.Stat(rec.Socket); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("session socket %s: %v, %v; want a 0600 socket", rec.Socket, fi, err)
	}

	wantExit("infer --session ID --stages 2", 2, "infer", "--session", id, "--stages", "2", "hi")
	wantExit("infer --session ID --local", 2, "infer", "--session", id, "--local", "hi")
	wantExit("infer --session ID --join", 2, "infer", "--session", id, "--join", join, "hi")

	var rayAddrs []string
	for i, prompt := range sessionPrompts {
		out, stderr, code := edgellm("infer", "--session", id, "--json", "--max-tokens", strconv.Itoa(maxTokens), prompt)
		if code != 0 {
			t.Fatalf("infer --session (prompt %d): exit %d: %s\nsession log:\n%s", i, code, stderr, sessionLog(requester, id))
		}
		var res distResult
		var stages struct {
			Stages []struct {
				RayAddress string `json:"ray_address"`
			} `json:"stages"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil || json.Unmarshal([]byte(out), &stages) != nil {
			t.Fatalf("infer --session --json: %v\n%s", err, out)
		}
		w := want[i]
		if res.FinishReason == "stop" && len(w) > len(res.TokenIDs) { // EOS ends HF's output, not ours
			w = w[:len(res.TokenIDs)]
		}
		if !slices.Equal(res.TokenIDs, w) {
			t.Errorf("prompt %d: token ids %v\nwant (transformers generate) %v\ntext %q", i, res.TokenIDs, w, res.Text)
		}
		if len(res.Stages) != 2 || res.WeightsCID == "" || res.Model != "smollm2-135m" {
			t.Errorf("prompt %d: stages %+v, weights CID %q, model %q", i, res.Stages, res.WeightsCID, res.Model)
		}
		ran := map[string]bool{}
		for _, s := range res.Stages {
			ran[s.PeerID] = true
		}
		if !ran[aID] || !ran[bID] {
			t.Errorf("prompt %d: stages %+v; want both workers", i, res.Stages)
		}
		var addrs []string
		for _, s := range stages.Stages {
			addrs = append(addrs, s.RayAddress)
		}
		if rayAddrs == nil {
			rayAddrs = addrs
		} else if !slices.Equal(addrs, rayAddrs) {
			t.Errorf("prompt %d ran on Ray nodes %v, the first on %v: not one cluster", i, addrs, rayAddrs)
		}
	}
	// One cluster: each worker joined exactly once for the three prompts, and
	// the same daemon still holds it.
	if got := joins(); got[0]-joinsBefore[0] != 1 || got[1]-joinsBefore[1] != 1 {
		t.Errorf("workers joined %v clusters (before the session: %v); want exactly one each", got, joinsBefore)
	}
	if again := readSessionRecord(t, requester, id); again.PID != rec.PID || !isDaemon(rec.PID, id) {
		t.Errorf("session daemon changed: pid %d, then %d", rec.PID, again.PID)
	}

	out, _, code = edgellm("session", "list", "--json")
	var listed []sessionRecord
	if code != 0 || json.Unmarshal([]byte(out), &listed) != nil || len(listed) != 1 || listed[0].ID != id || listed[0].PID != rec.PID {
		t.Errorf("session list --json: exit %d, %s; want the one session", code, out)
	}

	_, stderr, code = edgellm("session", "close", id)
	if code != 0 {
		t.Fatalf("session close: exit %d: %s", code, stderr)
	}
	testutil.WaitExit(t, rec.PID, 30*time.Second)
	for _, f := range []string{id + ".json", id + ".sock", id + ".log"} {
		if _, err := os.Stat(filepath.Join(requester, "sessions", f)); !os.IsNotExist(err) {
			t.Errorf("after close, sessions/%s: %v; want it removed", f, err)
		}
	}
	// Every Ray process of the session is gone: the requester's head (close
	// waited for it) and both workers' nodes.
	noProcessesOf(t, dirs[2:])
	for _, dir := range dirs[:2] {
		for _, pid := range processesMarked(dir) {
			testutil.WaitExit(t, pid, 30*time.Second)
		}
	}
	wantExit("infer --session after close", 3, "infer", "--session", id, "hi")
	wantExit("session close twice", 3, "session", "close", id)
	if out, _, code := edgellm("session", "list", "--json"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("session list after close: exit %d, %q; want []", code, out)
	}

	t.Run("idle timeout", func(t *testing.T) {
		out, stderr, code := edgellm(append([]string{"session", "open", "--stages", "2", "--idle-timeout", "3s"}, net...)...)
		id := strings.TrimSpace(out)
		if code != 0 {
			t.Fatalf("session open: exit %d: %s", code, stderr)
		}
		rec := readSessionRecord(t, requester, id)
		// Polls a condition, bounded: the record goes when the daemon closes.
		deadline := time.Now().Add(3 * time.Minute)
		for {
			if _, err := os.Stat(filepath.Join(requester, "sessions", id+".json")); os.IsNotExist(err) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("idle session %s still open\n%s", id, sessionLog(requester, id))
			}
			time.Sleep(200 * time.Millisecond)
		}
		testutil.WaitExit(t, rec.PID, 2*time.Minute)
		noProcessesOf(t, dirs[2:])
		for _, dir := range dirs[:2] {
			for _, pid := range processesMarked(dir) {
				testutil.WaitExit(t, pid, 30*time.Second)
			}
		}
		_, _, code = edgellm("infer", "--session", id, "hi")
		if code != 3 {
			t.Errorf("infer on the idle-closed session: exit %d; want 3", code)
		}
	})

	for i, w := range []*workerProc{a, b} {
		if err := w.stop(t); err != nil {
			t.Fatalf("worker exit after SIGTERM: %v\n%s", err, w.stderr)
		}
		log := w.stderr.String()
		if n := strings.Count(log, "joined cluster"); n != joinsBefore[i]+2 || strings.Count(log, "left cluster") != n {
			t.Errorf("worker %s: %d joins, %d leaves; want two sessions, each joined and left:\n%s", w.dataDir, n,
				strings.Count(log, "left cluster"), log)
		}
	}
}

func readSessionRecord(t *testing.T, dataDir, id string) sessionRecord {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dataDir, "sessions", id+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var rec sessionRecord
	if err := json.Unmarshal(data, &rec); err != nil || rec.ID != id || rec.PID <= 0 {
		t.Fatalf("session record: %v\n%s", err, data)
	}
	return rec
}

func sessionLog(dataDir, id string) string {
	data, _ := os.ReadFile(filepath.Join(dataDir, "sessions", id+".log"))
	return string(data)
}

// isDaemon reports whether pid is alive and runs `session serve` for id.
func isDaemon(pid int, id string) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && bytes.Contains(data, []byte("serve")) && bytes.Contains(data, []byte(id))
}

// closeLeftSessions stops every session daemon still running for dataDir
// (a test that failed half way), by pid, and waits for it to tear down.
func closeLeftSessions(t *testing.T, dataDir string) {
	records, _ := filepath.Glob(filepath.Join(dataDir, "sessions", "*.json"))
	for _, path := range records {
		var rec sessionRecord
		data, err := os.ReadFile(path)
		if err != nil || json.Unmarshal(data, &rec) != nil || !isDaemon(rec.PID, rec.ID) {
			continue
		}
		t.Logf("stopping session daemon %d left by the test", rec.PID)
		syscall.Kill(rec.PID, syscall.SIGTERM)
		testutil.WaitExit(t, rec.PID, 2*time.Minute)
	}
}
