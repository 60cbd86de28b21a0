package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// openaiChats runs the official openai Python client (inside the test's
// namespace, where serve listens) for every prompt at once, one thread each,
// greedy; it prints the answers' texts and usage (cached prompt tokens
// included), and serve's /metrics afterwards, as JSON.
const openaiChats = `
import json, sys, urllib.request
from concurrent.futures import ThreadPoolExecutor
import openai
url, prompts, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
def chat(p):
    r = client.chat.completions.create(model="smollm2-135m", messages=[{"role": "user", "content": p}],
                                       max_tokens=n, temperature=0)
    details = r.usage.prompt_tokens_details
    return {"text": r.choices[0].message.content, "finish": r.choices[0].finish_reason,
            "completion_tokens": r.usage.completion_tokens, "fingerprint": r.system_fingerprint,
            "cached_tokens": details.cached_tokens if details else None}
with ThreadPoolExecutor(len(prompts)) as pool:
    out = list(pool.map(chat, prompts))
metrics = urllib.request.urlopen(url + "/metrics", timeout=60).read().decode()
print(json.dumps({"answers": out, "metrics": metrics}))
`

// serveChat is one answer openaiChats prints.
type serveChat struct {
	Text             string `json:"text"`
	Finish           string `json:"finish"`
	CompletionTokens int    `json:"completion_tokens"`
	Fingerprint      string `json:"fingerprint"`
	CachedTokens     *int   `json:"cached_tokens"`
}

// openaiChat runs openaiChats in the test's namespace against serve at url:
// the prompts at once, then serve's /metrics.
func (c *cliEnv) openaiChat(ctx context.Context, t *testing.T, python, url string, maxTokens int, prompts ...string) ([]serveChat, string) {
	t.Helper()
	js, _ := json.Marshal(prompts)
	chat := c.ns.Command(ctx, python, "-c", openaiChats, url, string(js), strconv.Itoa(maxTokens))
	chat.Env = c.env
	var chatErr bytes.Buffer
	chat.Stderr = &chatErr
	out, err := chat.Output()
	if err != nil {
		t.Fatalf("openai client: %v\n%s", err, chatErr.String())
	}
	var got struct {
		Answers []serveChat `json:"answers"`
		Metrics string      `json:"metrics"`
	}
	if err := json.Unmarshal(out, &got); err != nil || len(got.Answers) != len(prompts) {
		t.Fatalf("openai client printed %q: %v", out, err)
	}
	return got.Answers, got.Metrics
}

// holderMetric reads serve's edgellm_cached_prompt_tokens_by_holder_total
// series from its /metrics, by holder.
func (c *cliEnv) holderMetric(ctx context.Context, t *testing.T, python, url string) map[string]float64 {
	t.Helper()
	const script = `
import json, re, sys, urllib.request
text = urllib.request.urlopen(sys.argv[1] + "/metrics", timeout=30).read().decode()
series = re.compile(r'^edgellm_cached_prompt_tokens_by_holder_total\{holder="([^"]*)"\} (\S+)$', re.M)
print(json.dumps({h: float(v) for h, v in series.findall(text)}))
`
	cmd := c.ns.Command(ctx, python, "-c", script, url)
	cmd.Env = c.env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scrape /metrics: %v\n%s", err, stderr.String())
	}
	got := map[string]float64{}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("scrape printed %q: %v", out, err)
	}
	return got
}

// servePrompts are the concurrent requests of testServeThroughSwarm, of
// mixed lengths.
var servePrompts = []string{
	distPrompt,
	"Explain how a rainbow forms.",
	"Write a poem about autumn leaves falling in a quiet park at dusk.",
	"List three uses of copper and say why.",
	"Describe the city of Paris in a few sentences.",
	"What should I pack for a week of hiking in the mountains?",
}

// serveRecord is the part of <data-dir>/run/serve.json the test reads.
type serveRecord struct {
	PID int    `json:"pid"`
	URL string `json:"url"`
}

// testServeThroughSwarm: `edgellm serve --stages 2` in the swarm of
// TestDistributedInfer answers six concurrent chat completions through the
// official openai client with the split model, each token for token as
// transformers generate gives for its prompt alone; they run at once on the
// warm cluster (each worker joined once for serve's warm-up and all of them)
// and decode as one batch through the Ray pipeline (serve's
// edgellm_decode_batch_size says so); with Kubo, its swarm route is KV-aware
// (testServeKVRouting); `edgellm infer` on serve's data directory gets
// the same answer through serve without starting a backend; SIGTERM closes
// the cluster (each worker leaves it) and leaves nothing running.
func testServeThroughSwarm(t *testing.T, c *cliEnv, python, dataDir string, workers []*workerProc, swarmArgs []string) {
	const maxTokens = 24
	refs := referenceAnswers(t, servePrompts, maxTokens)
	want := refs[0].Tokens
	joins := func() []int {
		var n []int
		for _, w := range workers {
			n = append(n, strings.Count(w.stderr.String(), "joined cluster"))
		}
		return n
	}
	before := joins()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	args := append([]string{"--data-dir", dataDir, "serve", "--listen", "127.0.0.1:0", "--p2p-listen", "/ip4/127.0.0.1/tcp/0",
		"--ray-address", "127.0.0.1", "--stages", "2"}, swarmArgs...)
	cmd := c.command(ctx, args...)
	cmd.Env = c.env
	var stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { // a failed test must not leave serve running
		if cmd.ProcessState == nil {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(2 * time.Minute):
				_ = cmd.Process.Kill()
			}
		}
	})
	rec := waitServeRecord(t, dataDir, exited, &stderr)

	answers, metrics := c.openaiChat(ctx, t, python, rec.URL, maxTokens, servePrompts...)
	for i, a := range answers {
		if a.Text != refs[i].Text || a.CompletionTokens != len(refs[i].Tokens) || a.Fingerprint == "" || a.CachedTokens == nil {
			t.Errorf("answer %d: %+v\nwant (transformers generate) %q, %d tokens, usage.prompt_tokens_details.cached_tokens",
				i, a, refs[i].Text, len(refs[i].Tokens))
		}
	}
	largest, count := batchSizes(t, metrics, "pipeline")
	t.Logf("decode batch sizes through the swarm: %d generations, the largest batch <= %v", count, largest)
	if count < len(servePrompts) || largest <= 1 {
		t.Errorf("edgellm_decode_batch_size{route=pipeline}: %d generations, largest <= %v; want %d, batched (> 1)",
			count, largest, len(servePrompts))
	}
	after := joins()
	for i := range workers {
		if after[i] != before[i]+1 {
			t.Errorf("worker %d joined %d clusters for serve's warm-up and the requests; want exactly one (the warm cluster reused)",
				i, after[i]-before[i])
		}
	}
	if c.kubo() {
		testServeKVRouting(ctx, t, c, python, rec.URL, workers)
	}

	// infer on serve's data directory goes through serve: same tokens, and
	// no backend of its own (its log would say it started one).
	backendLog := filepath.Join(dataDir, "logs", "backend.log")
	startsBefore := strings.Count(readFile(t, backendLog), "serving on")
	res := c.inferThroughServe(t, dataDir, maxTokens)
	if !slices.Equal(res.TokenIDs, want) || res.WeightsCID == "" {
		t.Errorf("infer through serve: tokens %v, weights CID %q; want %v", res.TokenIDs, res.WeightsCID, want)
	}
	if n := strings.Count(readFile(t, backendLog), "serving on"); n != startsBefore {
		t.Errorf("infer through serve started a backend (%d starts in %s, %d before)", n, backendLog, startsBefore)
	}
	if got := joins(); !slices.Equal(got, after) {
		t.Errorf("infer through serve formed another cluster: joins %v, want %v", got, after)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("serve after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(3 * time.Minute):
		t.Fatalf("serve did not stop after SIGTERM:\n%s", stderr.String())
	}
	for i, w := range workers {
		deadline := time.Now().Add(30 * time.Second)
		for strings.Count(w.stderr.String(), "left cluster") < after[i] && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if n := strings.Count(w.stderr.String(), "left cluster"); n < after[i] {
			t.Errorf("worker %d left %d clusters after serve stopped; want %d", i, n, after[i])
		}
	}
	if _, err := os.Stat(filepath.Join(dataDir, "run", "serve.json")); !os.IsNotExist(err) {
		t.Errorf("serve left its record behind: %v", err)
	}
	noProcessesOf(t, []string{dataDir})
}

// testServeKVRouting: serve's swarm route looks the prompt up in the swarm's
// KV cache as infer does (requester.LookupPrefix): a second request sharing
// a long prefix with the first reports the prompt tokens its stages took
// from the cache in usage.prompt_tokens_details.cached_tokens, answers as
// transformers generate, and serve's metric counts them by the workers
// holding the blocks.
func testServeKVRouting(ctx context.Context, t *testing.T, c *cliEnv, python, url string, workers []*workerProc) {
	const maxTokens = 6
	prompt := pdPrompt + " Tell it to a child."
	want := referenceText(t, prompt, referenceTokens(t, prompt, maxTokens))
	// One after the other: the second finds the first's blocks.
	first, _ := c.openaiChat(ctx, t, python, url, maxTokens, prompt)
	second, _ := c.openaiChat(ctx, t, python, url, maxTokens, prompt)
	answers := append(first, second...)
	for i, a := range answers {
		if a.Text != want {
			t.Errorf("long-prompt answer %d %q, want (transformers generate) %q", i, a.Text, want)
		}
	}
	if second := answers[1].CachedTokens; second == nil || *second < 200 {
		t.Errorf("the second request's cached_tokens %v; want the shared prefix's (>= 200)", second)
	}
	ids := map[string]bool{}
	for _, w := range workers {
		id, _ := w.state(t)
		ids[id] = true
	}
	holders := c.holderMetric(ctx, t, python, url)
	t.Logf("serve: cached tokens %v, %v; by holder %v", *answers[0].CachedTokens, *answers[1].CachedTokens, holders)
	counted := 0.0
	for h, v := range holders {
		if !ids[h] {
			t.Errorf("holder label %q is none of the workers %v", h, ids)
		}
		counted += v
	}
	if counted < 200 {
		t.Errorf("edgellm_cached_prompt_tokens_by_holder_total %v; want the workers' cached tokens counted", holders)
	}
}

// inferThroughServe runs `infer --json` on serve's data directory.
func (c *cliEnv) inferThroughServe(t *testing.T, dataDir string, maxTokens int) distResult {
	t.Helper()
	out, stderr, code := c.run("--data-dir", dataDir, "infer", "--json", "--max-tokens", strconv.Itoa(maxTokens), distPrompt)
	if code != 0 {
		t.Fatalf("infer through serve exited %d: %s", code, stderr)
	}
	var res distResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("infer --json: %v\n%s", err, out)
	}
	return res
}

// waitServeRecord waits for serve's record (written once it is ready).
func waitServeRecord(t *testing.T, dataDir string, exited chan error, stderr *syncBuffer) serveRecord {
	t.Helper()
	path := filepath.Join(dataDir, "run", "serve.json")
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			t.Fatalf("serve exited before it was ready: %v\n%s", err, stderr.String())
		default:
		}
		if data, err := os.ReadFile(path); err == nil {
			var rec serveRecord
			if json.Unmarshal(data, &rec) == nil && rec.URL != "" {
				return rec
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("serve not ready after 5 minutes:\n%s", stderr.String())
	return serveRecord{}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// batchSizes reads serve's edgellm_decode_batch_size histogram for route
// from its /metrics text: how many generations it counts, and the upper
// bound of the smallest bucket holding all of them (the largest batch).
func batchSizes(t *testing.T, metrics, route string) (largest float64, count int) {
	t.Helper()
	label := `route="` + route + `"`
	buckets := map[float64]int{}
	for line := range strings.Lines(metrics) {
		name, value, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok || !strings.Contains(name, label) {
			continue
		}
		switch {
		case strings.HasPrefix(name, "edgellm_decode_batch_size_count"):
			count, _ = strconv.Atoi(value)
		case strings.HasPrefix(name, "edgellm_decode_batch_size_bucket"):
			_, le, _ := strings.Cut(name, `le="`)
			le, _, _ = strings.Cut(le, `"`)
			bound, err := strconv.ParseFloat(le, 64) // "+Inf" parses
			if err != nil {
				t.Fatalf("bucket %q: %v", line, err)
			}
			buckets[bound], _ = strconv.Atoi(value)
		}
	}
	largest = math.Inf(1)
	for bound, n := range buckets {
		if n >= count && bound < largest {
			largest = bound
		}
	}
	return largest, count
}
