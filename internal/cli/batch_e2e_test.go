package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBatchAndBench: one real `edgellm serve` (its own data directory,
// --listen 127.0.0.1:0) shared by `edgellm batch` and `edgellm bench`, as a
// user runs them.
func TestBatchAndBench(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	c := newCLIEnv(t)
	dataDir := t.TempDir()
	rec := startServe(t, c, dataDir)
	t.Run("batch", func(t *testing.T) { testBatch(t, c, dataDir) })
	t.Run("bench", func(t *testing.T) { testBench(t, c, dataDir, rec.URL) })
	t.Run("none running", func(t *testing.T) {
		empty := t.TempDir()
		for _, args := range [][]string{{"batch", writeTemp(t, "in.jsonl", "\n")}, {"bench"}} {
			_, stderr, code := c.run(append([]string{"--data-dir", empty}, args...)...)
			if code != 4 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "no serve runs") {
				t.Errorf("%v with no serve: exit %d, stderr %q; want 4 and one line", args, code, stderr)
			}
		}
	})
}

// startServe starts `edgellm serve` on dataDir and waits for its record; the
// test's cleanup stops it with SIGTERM.
func startServe(t *testing.T, c *cliEnv, dataDir string) serveRecord {
	t.Helper()
	cmd := c.command(context.Background(), "--data-dir", dataDir, "serve", "--listen", "127.0.0.1:0")
	cmd.Env = c.env
	var stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(2 * time.Minute):
			_ = cmd.Process.Kill()
			<-exited
		}
		noProcessesOf(t, []string{dataDir})
	})
	return waitServeRecord(t, dataDir, exited, &stderr)
}

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const batchMaxTokens = 4

// batchLine is one output line, as the test reads it.
type batchLine struct {
	ID       string `json:"id"`
	CustomID string `json:"custom_id"`
	Response *struct {
		StatusCode int    `json:"status_code"`
		RequestID  string `json:"request_id"`
		Body       struct {
			Choices []struct {
				Text    string `json:"text"`
				Message struct {
					Content string `json:"content"`
				} `json:"message"`
			} `json:"choices"`
			Usage struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		} `json:"body"`
	} `json:"response"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (l batchLine) answer() string {
	if len(l.Response.Body.Choices) == 0 {
		return ""
	}
	ch := l.Response.Body.Choices[0]
	return ch.Text + ch.Message.Content
}

// batchInput is the 20-line input: 10 requests that succeed (chat and
// completion, one without a model for --model to fill) and 10 that fail,
// each in its own way.
func batchInput() (input string, chats, completions map[string]string) {
	chats = map[string]string{
		"chat-1": "What is the capital of France?",
		"chat-2": "Why do cats purr?",
		"chat-3": "Name a large planet.",
		"chat-4": "Say hello in Spanish.",
		"chat-5": "What color is the sky?",
		"chat-6": "Count to three.",
	}
	completions = map[string]string{
		"text-1": "The three primary colors are",
		"text-2": "Once upon a time",
		"text-3": "The quick brown fox",
		"text-4": "Water boils at",
	}
	var b strings.Builder
	line := func(s string) { b.WriteString(s + "\n") }
	for i := 1; i <= 6; i++ {
		id := fmt.Sprintf("chat-%d", i)
		model := `"model": "smollm2-135m", `
		if i == 2 {
			model = "" // --model fills it
		}
		msg, _ := json.Marshal(chats[id])
		line(fmt.Sprintf(`{"custom_id": %q, "method": "POST", "url": "/v1/chat/completions", "body": {%s"messages": [{"role": "user", "content": %s}], "max_tokens": %d}}`,
			id, model, msg, batchMaxTokens))
	}
	for i := 1; i <= 4; i++ {
		id := fmt.Sprintf("text-%d", i)
		line(fmt.Sprintf(`{"custom_id": %q, "method": "POST", "url": "/v1/completions", "body": {"model": "smollm2-135m", "prompt": %q, "max_tokens": %d}}`,
			id, completions[id], batchMaxTokens))
	}
	line(`this line is not JSON`)                                                                                            // 11: stderr
	line(`{"method": "POST", "url": "/v1/completions", "body": {"prompt": "x"}}`)                                            // 12: stderr
	line(`{"custom_id": "chat-1", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": []}}`)               // 13: duplicate
	line(`{"custom_id": "bad-url", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}}`)                      // 14
	line(`{"custom_id": "bad-body", "method": "POST", "url": "/v1/completions", "body": "not an object"}`)                   // 15
	line(`{"custom_id": "bad-stream", "method": "POST", "url": "/v1/completions", "body": {"prompt": "x", "stream": true}}`) // 16
	line(`{"custom_id": "bad-method", "method": "GET", "url": "/v1/completions", "body": {"prompt": "x"}}`)                  // 17
	line(`{"custom_id": "no-body", "method": "POST", "url": "/v1/chat/completions"}`)                                        // 18
	line(`{"custom_id": "serve-400", "method": "POST", "url": "/v1/chat/completions", "body": {"max_tokens": 4}}`)           // 19: serve rejects
	line(`{"custom_id": "serve-404", "method": "POST", "url": "/v1/completions", "body": {"model": "no-such-model", "prompt": "x", "max_tokens": 4}}`)
	return b.String(), chats, completions
}

// readBatchOutput reads an output file: every line whole JSON, and
// custom_id -> its line (a duplicate's error line under "dup:<id>").
func readBatchOutput(t *testing.T, path string) (map[string]batchLine, int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		t.Errorf("%s ends in a cut-off line", path)
	}
	out := map[string]batchLine{}
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		n++
		var l batchLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil || !strings.HasPrefix(l.ID, "batch_req_") {
			t.Fatalf("output line %d is not an output line: %v\n%s", n, err, sc.Text())
		}
		key := l.CustomID
		if l.Error != nil && l.Error.Code == "duplicate_custom_id" {
			key = "dup:" + key
		}
		if _, twice := out[key]; twice {
			t.Errorf("custom_id %s has two output lines", key)
		}
		out[key] = l
	}
	return out, n
}

func testBatch(t *testing.T, c *cliEnv, dataDir string) {
	input, chats, completions := batchInput()
	in := writeTemp(t, "requests.jsonl", input)
	outDir := t.TempDir()
	first := filepath.Join(outDir, "first.jsonl")
	args := func(out string, extra ...string) []string {
		return append([]string{"--data-dir", dataDir, "batch", in, "-o", out, "--model", "smollm2-135m"}, extra...)
	}

	start := time.Now()
	_, stderr, code := c.run(args(first, "--concurrency", "3")...)
	t.Logf("batch of 20 lines (10 requests) at concurrency 3: %v", time.Since(start).Round(time.Millisecond))
	if code != 1 {
		t.Fatalf("batch with failing lines exited %d, want 1:\n%s", code, stderr)
	}
	for _, want := range []string{"line 11: not a JSON object", `line 12: no "custom_id"`, "10 of 20 lines failed"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	got, n := readBatchOutput(t, first)
	if n != 18 {
		t.Errorf("%d output lines, want 18 (20 lines, 2 without a custom_id)", n)
	}
	for id, code := range map[string]string{"dup:chat-1": "duplicate_custom_id", "bad-url": "invalid_url", "bad-body": "invalid_body",
		"bad-stream": "invalid_body", "bad-method": "invalid_method", "no-body": "invalid_body"} {
		if l, ok := got[id]; !ok || l.Error == nil || l.Error.Code != code || l.Response != nil {
			t.Errorf("%s: line %+v, want error %s", id, l, code)
		}
	}
	for id, status := range map[string]int{"serve-400": 400, "serve-404": 404} {
		if l, ok := got[id]; !ok || l.Response == nil || l.Response.StatusCode != status || l.Error != nil {
			t.Errorf("%s: line %+v, want a response with status %d", id, l, status)
		}
	}

	// Greedy answers equal single `edgellm infer` calls through the same serve.
	check := func(prompts map[string]string, raw bool) {
		for id, prompt := range prompts {
			l, ok := got[id]
			if !ok || l.Response == nil || l.Response.StatusCode != 200 || l.Response.RequestID == "" {
				t.Errorf("%s: line %+v, want a 200 response", id, l)
				continue
			}
			a := []string{"--data-dir", dataDir, "infer", "--json", "--max-tokens", strconv.Itoa(batchMaxTokens)}
			if raw {
				a = append(a, "--raw")
			}
			out, stderr, code := c.run(append(a, prompt)...)
			var res distResult
			if code != 0 || json.Unmarshal([]byte(out), &res) != nil {
				t.Fatalf("infer %q exited %d: %s", prompt, code, stderr)
			}
			if l.answer() != res.Text || res.Text == "" {
				t.Errorf("%s: batch answered %q, infer %q", id, l.answer(), res.Text)
			}
		}
	}
	check(chats, false)
	check(completions, true)

	// A second run, interrupted once some requests completed, then rerun:
	// every custom_id once, with the first run's answers.
	second := filepath.Join(outDir, "second.jsonl")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := c.command(ctx, args(second, "--concurrency", "1")...)
	cmd.Env = c.env
	var errBuf syncBuffer
	cmd.Stderr = &errBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// 6 error lines come first; wait for 3 answers from serve beyond them.
	deadline := time.Now().Add(4 * time.Minute)
	for countLines(second) < 9 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("interrupted batch: %v, want exit 130\n%s", err, errBuf.String())
	}
	partial, m := readBatchOutput(t, second)
	if m >= 18 || m < 9 {
		t.Errorf("interrupted run wrote %d lines; want at least 9 and fewer than 18", m)
	}
	if !strings.Contains(errBuf.String(), "rerun the same command") {
		t.Errorf("interrupted batch's stderr: %s", errBuf.String())
	}
	_, stderr, code = c.run(args(second, "--concurrency", "2")...)
	if code != 1 || !strings.Contains(stderr, fmt.Sprintf("already holds %d of 18", m)) {
		t.Errorf("rerun exited %d (want 1):\n%s", code, stderr)
	}
	resumed, n := readBatchOutput(t, second)
	if n != 18 || len(resumed) != 18 {
		t.Fatalf("after the rerun: %d lines, %d custom_ids; want 18 each", n, len(resumed))
	}
	for id, l := range partial {
		if resumed[id].ID != l.ID {
			t.Errorf("%s: the rerun rewrote its line", id)
		}
	}
	for id, l := range got {
		r := resumed[id]
		if (l.Response == nil) != (r.Response == nil) || (l.Response != nil && (l.Response.StatusCode != r.Response.StatusCode || l.answer() != r.answer())) {
			t.Errorf("%s: first run %+v, interrupted and resumed %+v", id, l, r)
		}
	}

	// An output file in a missing directory: one line, exit 2.
	_, stderr, code = c.run(args(filepath.Join(outDir, "missing", "out.jsonl"))...)
	if code != 2 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("output in a missing directory: exit %d, stderr %q; want 2 and one line", code, stderr)
	}
}

func countLines(path string) int {
	data, _ := os.ReadFile(path)
	return bytes.Count(data, []byte{'\n'})
}

// benchReport is the part of `bench --json` the test reads.
type benchReport struct {
	Model                 string    `json:"model"`
	Concurrency           int       `json:"concurrency"`
	RequestRate           float64   `json:"request_rate"`
	Requests              int       `json:"requests"`
	Successful            int       `json:"successful_requests"`
	Failed                int       `json:"failed_requests"`
	DurationS             float64   `json:"duration_s"`
	TotalOutputTokens     int       `json:"total_output_tokens"`
	RequestThroughput     float64   `json:"request_throughput"`
	OutputTokenThroughput float64   `json:"output_token_throughput"`
	TTFT                  benchDist `json:"ttft_ms"`
	ITL                   benchDist `json:"itl_ms"`
	E2E                   benchDist `json:"e2e_latency_ms"`
	Errors                []string  `json:"errors"`
}

type benchDist struct {
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P95  float64 `json:"p95"`
	P99  float64 `json:"p99"`
	N    int     `json:"n"`
}

func testBench(t *testing.T, c *cliEnv, dataDir, url string) {
	bench := func(args ...string) (benchReport, string, int) {
		out, stderr, code := c.run(append([]string{"--data-dir", dataDir, "bench"}, args...)...)
		var rep benchReport
		if code == 0 {
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatalf("bench --json printed %q: %v", out, err)
			}
		}
		return rep, stderr, code
	}
	plot := filepath.Join(t.TempDir(), "latency.png")
	start := time.Now()
	rep, stderr, code := bench("--json", "--requests", "6", "--concurrency", "2", "--input-len", "16", "--output-len", "6", "--plot", plot)
	t.Logf("bench: 6 requests at concurrency 2: %v", time.Since(start).Round(time.Millisecond))
	if code != 0 {
		t.Fatalf("bench exited %d: %s", code, stderr)
	}
	if rep.Requests != 6 || rep.Successful != 6 || rep.Failed != 0 || rep.Concurrency != 2 || rep.Model != "smollm2-135m" ||
		rep.TotalOutputTokens < 6 || rep.TotalOutputTokens > 36 || rep.DurationS <= 0 || rep.RequestThroughput <= 0 ||
		rep.OutputTokenThroughput <= 0 || rep.TTFT.N != 6 || rep.E2E.N != 6 || rep.TTFT.P50 <= 0 ||
		rep.TTFT.P50 > rep.TTFT.P95 || rep.TTFT.P95 > rep.TTFT.P99 || rep.E2E.P50 < rep.TTFT.P50 || rep.ITL.N == 0 {
		t.Errorf("report %+v", rep)
	}
	f, err := os.Open(plot)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := png.Decode(f); err != nil {
		t.Errorf("--plot wrote no PNG: %v", err)
	}
	f.Close()

	// At a rate, with --url, from a prompts file where serve rejects one
	// prompt: it counts as failed, the rest succeed.
	prompts := writeTemp(t, "prompts.jsonl", `{"prompt": "Hi there"}`+"\n"+
		`{"messages": [{"role": "user", "content": "Name a fruit."}], "max_tokens": 3}`+"\n"+
		`{"messages": [{"role": "wizard", "content": "x"}]}`+"\n")
	rep, stderr, code = bench("--json", "--url", url, "--rate", "20", "--seed", "3", "--requests", "3", "--prompts", prompts, "--output-len", "3")
	if code != 0 || rep.Requests != 3 || rep.Successful != 2 || rep.Failed != 1 || rep.RequestRate != 20 || len(rep.Errors) != 1 ||
		!strings.Contains(rep.Errors[0], "HTTP 400") {
		t.Errorf("bench with a rejected prompt: exit %d, report %+v\n%s", code, rep, stderr)
	}

	bad := writeTemp(t, "bad.jsonl", `{"prompt": "ok"}`+"\n"+`{"prompt": 7}`+"\n")
	for _, tc := range []struct {
		name string
		args []string
		code int
		says string
	}{
		{"concurrency 0", []string{"--concurrency", "0"}, 2, "--concurrency"},
		{"rate 0", []string{"--rate", "0"}, 2, "--rate"},
		{"negative rate", []string{"--rate", "-1"}, 2, "--rate"},
		{"both", []string{"--rate", "1", "--concurrency", "2"}, 2, "not both"},
		{"requests 0", []string{"--requests", "0"}, 2, "--requests"},
		{"unknown model", []string{"--model", "no-such-model", "--requests", "1"}, 3, "no-such-model"},
		{"bad prompts line", []string{"--prompts", bad}, 2, "line 2"},
	} {
		_, stderr, code := bench(tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.says) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%s: exit %d, stderr %q; want %d and one line with %q", tc.name, code, stderr, tc.code, tc.says)
		}
	}
}
