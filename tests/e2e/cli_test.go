package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/edgellm/edgellm/internal/testutil"
)

const capitalQuestion = "What is the capital of France?"

func TestInfer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	t.Run("json answer names Paris", func(t *testing.T) {
		t.Parallel()
		r := e.run(t, "", nil, "infer", "--json", "--max-tokens", "32", capitalQuestion)
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		var out struct {
			Text             string  `json:"text"`
			Model            string  `json:"model"`
			WeightsCID       string  `json:"weights_cid"`
			PromptTokens     int     `json:"prompt_tokens"`
			CompletionTokens int     `json:"completion_tokens"`
			FinishReason     string  `json:"finish_reason"`
			TTFTMs           float64 `json:"ttft_ms"`
			TokensPerS       float64 `json:"tokens_per_s"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
			t.Fatalf("stdout is not one JSON object: %v\n%s", err, r.stdout)
		}
		if !strings.Contains(out.Text, "Paris") || out.Model != "smollm2-135m" || out.WeightsCID == "" ||
			out.PromptTokens == 0 || out.CompletionTokens == 0 || out.FinishReason == "" {
			t.Errorf("unexpected result: %+v", out)
		}
	})

	t.Run("streamed text names Paris", func(t *testing.T) {
		t.Parallel()
		r := e.run(t, capitalQuestion+"\n", nil, "infer", "--max-tokens", "32", "-")
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		if !strings.Contains(r.stdout, "Paris") || !strings.HasSuffix(r.stdout, "\n") {
			t.Errorf("stdout = %q, want an answer naming Paris ending in a newline", r.stdout)
		}
		if r.stderr != "" {
			t.Errorf("stderr = %q, want nothing when not a terminal", r.stderr)
		}
	})
}

// TestInferRejectsBadInput runs each bad input through the binary against
// one shared backend (the backend's own start is covered elsewhere), and one
// through a backend of its own.
func TestInferRejectsBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	shared := e.sharedBackend(t)
	longPrompt := strings.Repeat("word ", 40000)
	tests := []struct {
		name  string
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"unknown model", "", []string{"--model", "no-such-model", "hi"}, 3, "not found"},
		{"empty prompt", "", []string{""}, 2, "empty prompt"},
		{"blank prompt on stdin", "  \n", []string{"-"}, 2, "empty prompt"},
		{"max tokens 0", "", []string{"--max-tokens", "0", "hi"}, 2, "max_tokens"},
		{"max tokens -5", "", []string{"--max-tokens", "-5", "hi"}, 2, "max_tokens"},
		{"max tokens beyond context", "", []string{"--max-tokens", "100000", "hi"}, 2, "max_tokens"},
		{"temperature 3", "", []string{"--temperature", "3", "hi"}, 2, "temperature"},
		{"top-p 0", "", []string{"--top-p", "0", "hi"}, 2, "top_p"},
		{"top-p 1.5", "", []string{"--top-p", "1.5", "hi"}, 2, "top_p"},
		{"prompt beyond context", longPrompt, []string{"-"}, 2, "invalid argument"},
		{"unparsable max tokens", "", []string{"--max-tokens", "many", "hi"}, 2, "usage"},
		{"unknown flag", "", []string{"--bogus", "hi"}, 2, "unknown flag"},
		{"no prompt", "", nil, 2, "usage"},
		{"raw with system", "", []string{"--raw", "--system", "x", "hi"}, 2, "--raw"},
		{"local with a malformed join", "", []string{"--local", "--join", "edgellm1:garbage", "hi"}, 2, "--join"},
	}
	t.Run("shared backend", func(t *testing.T) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				r := e.run(t, tt.stdin, shared, append([]string{"infer"}, tt.args...)...)
				wantOneLineError(t, r, tt.code, tt.want)
			})
		}
	})
	t.Run("own backend", func(t *testing.T) {
		r := e.run(t, "", nil, "infer", "--max-tokens", "0", "hi")
		wantOneLineError(t, r, 2, "invalid argument: max_tokens")
	})
}

func TestInferBackendUnavailable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.run(t, "", []string{"EDGELLM_PYTHON=/bin/false"}, "infer", "hi")
	wantOneLineError(t, r, 4, "backend unavailable")
}

func TestInferInterrupt(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cmd := e.command(t, "", nil, "infer", "--max-tokens", "2000", "Write a very long story about a dragon.")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The first streamed byte means the generation runs; then press Ctrl-C.
	if _, err := bufio.NewReader(stdout).ReadByte(); err != nil {
		t.Fatalf("no output before the interrupt: %v; stderr: %s", err, stderr.String())
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = bufio.NewReader(stdout).WriteTo(discard{}) }()
	err = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Errorf("exit code = %d (%v), want 130; stderr: %q", code, err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "edgellm: interrupted") {
		t.Errorf("stderr = %q, want it to say interrupted", stderr.String())
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestBackendDiesWithNode kills the node with SIGKILL mid-generation, so it
// cannot stop its backend; the backend must exit by itself (Pdeathsig, and
// its --parent-pid watch).
func TestBackendDiesWithNode(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cmd := e.command(t, "", nil, "infer", "--max-tokens", "2000", "Write a very long story about a dragon.")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(stdout).ReadByte(); err != nil {
		t.Fatalf("no output: %v", err)
	}
	var backends []int
	for _, pid := range testutil.ProcessesMentioning(e.dataDir) {
		if pid != cmd.Process.Pid {
			backends = append(backends, pid)
		}
	}
	if len(backends) == 0 {
		t.Fatal("found no backend process")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait() // killed: the error is expected
	for _, pid := range backends {
		testutil.WaitExit(t, pid, time.Minute)
	}
}
