package cli_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/edgellm/edgellm/internal/testutil"
)

// The correctness oracle of this package's tests: single-process
// transformers generate (greedy) on smollm2-135m, the prompt chat-templated
// as the backend's engine templates it. One Python process answers every
// test (torch's import and the model's load took ~5 s of each process that
// answered one prompt), and each answer is kept for the tests that ask
// again. Started on first use, stopped by TestMain; when the test binary
// dies, its stdin closes and it ends.

// refAnswer is transformers generate's answer to one prompt: its token ids
// and the text the backend streams for them (end-of-sequence left out).
type refAnswer struct {
	Tokens []uint32 `json:"tokens"`
	Text   string   `json:"text"`
}

// refScript reads one JSON request per line: {"prompt", "max_tokens"} is
// answered with a refAnswer, {"prompt", "ids"} with the text the backend's
// incremental detokenizer streams for exactly those ids. Each answer is one
// line starting with refMark (anything else on stdout is not an answer).
const refScript = `
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from edgellm.engine.torch.text import Detokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
eos = model.generation_config.eos_token_id
eos = set(eos if isinstance(eos, list) else [eos])

def prompt_ids(prompt):
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    return tok(text, add_special_tokens=False)["input_ids"]

def text_of(ids, tokens):
    detok = Detokenizer(tok, ids)
    return "".join(detok.add(i) for i in tokens) + detok.flush()

for line in sys.stdin:
    req = json.loads(line)
    ids = prompt_ids(req["prompt"])
    if "ids" in req:
        answer = {"text": text_of(ids, req["ids"])}
    else:
        x = torch.tensor([ids])
        with torch.inference_mode():
            gen = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=req["max_tokens"])
        tokens = gen[0, x.shape[1]:].tolist()
        answer = {"tokens": tokens, "text": text_of(ids, [i for i in tokens if i not in eos])}
    print("REF " + json.dumps(answer), flush=True)
`

const refMark = "REF "

// refRequest is one line to refScript.
type refRequest struct {
	Prompt    string   `json:"prompt"`
	MaxTokens int      `json:"max_tokens,omitempty"`
	IDs       []uint32 `json:"ids,omitempty"`
}

// refGenerator is the one Python process behind the oracle.
type refGenerator struct {
	mu     sync.Mutex
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr *syncBuffer
	broken error
	memo   map[string]refAnswer
}

var reference refGenerator

func TestMain(m *testing.M) {
	code := m.Run()
	reference.stop()
	if edgellmBinary.dir != "" {
		os.RemoveAll(edgellmBinary.dir)
	}
	os.Exit(code)
}

// start runs the Python process; mu is held.
func (g *refGenerator) start(t *testing.T) error {
	g.stderr = &syncBuffer{}
	cmd := exec.Command(testutil.Python(t), "-c", refScript, filepath.Join(testutil.ModelsDir(t), "smollm2-135m"))
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = g.stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	// A fixture of the whole package: the tests' leak checks leave it be.
	testutil.SharedChild(cmd.Process.Pid)
	g.cmd, g.in, g.out = cmd, in, bufio.NewReader(out)
	g.memo = map[string]refAnswer{}
	return nil
}

// ask sends one request and reads its answer, memoised by the request.
func (g *refGenerator) ask(t *testing.T, req refRequest) refAnswer {
	t.Helper()
	line, _ := json.Marshal(req)
	g.mu.Lock()
	defer g.mu.Unlock()
	if ans, ok := g.memo[string(line)]; ok {
		return ans
	}
	if g.broken == nil && g.cmd == nil {
		g.broken = g.start(t)
	}
	if g.broken == nil {
		g.broken = g.roundTrip(line)
	}
	if g.broken != nil {
		t.Fatalf("reference generate: %v\n%s", g.broken, lastLines(g.stderr.String(), 20))
	}
	return g.memo[string(line)]
}

// roundTrip writes line and stores the answer in memo; mu is held.
func (g *refGenerator) roundTrip(line []byte) error {
	if _, err := g.in.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	for {
		out, err := g.out.ReadString('\n')
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if payload, ok := strings.CutPrefix(out, refMark); ok {
			var ans refAnswer
			if err := json.Unmarshal([]byte(payload), &ans); err != nil {
				return fmt.Errorf("answer %q: %w", payload, err)
			}
			g.memo[string(line)] = ans
			return nil
		}
	}
}

// stop closes the process's stdin and waits for it to end.
func (g *refGenerator) stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cmd != nil {
		g.in.Close()
		g.cmd.Wait()
		g.cmd = nil
	}
}

// referenceAnswer is the oracle's answer to prompt in maxTokens tokens.
func referenceAnswer(t *testing.T, prompt string, maxTokens int) refAnswer {
	t.Helper()
	ans := reference.ask(t, refRequest{Prompt: prompt, MaxTokens: maxTokens})
	if len(ans.Tokens) == 0 {
		t.Fatalf("reference generate gave no tokens for %q", prompt)
	}
	return ans
}

// referenceTokens is the oracle's token ids for prompt.
func referenceTokens(t *testing.T, prompt string, maxTokens int) []uint32 {
	t.Helper()
	return referenceAnswer(t, prompt, maxTokens).Tokens
}

// referenceText is the text the backend streams for ids after the
// chat-templated prompt (end-of-sequence included when ids hold it).
func referenceText(t *testing.T, prompt string, ids []uint32) string {
	t.Helper()
	text := reference.ask(t, refRequest{Prompt: prompt, IDs: ids}).Text
	if text == "" {
		t.Fatalf("reference text for %v is empty", ids)
	}
	return text
}

// referenceAnswers is referenceAnswer for each prompt.
func referenceAnswers(t *testing.T, prompts []string, maxTokens int) []refAnswer {
	t.Helper()
	var out []refAnswer
	for _, p := range prompts {
		out = append(out, referenceAnswer(t, p, maxTokens))
	}
	return out
}
