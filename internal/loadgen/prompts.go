package loadgen

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
)

// Prompt is one request's input: messages for a chat completion and, when
// set, its own max_tokens.
type Prompt struct {
	Messages  []json.RawMessage
	MaxTokens int // 0: the run's output length
}

// ParsePrompts reads a prompts file: one JSON object a line with "prompt" (a
// string, sent as the user message) or "messages" (a chat), and optionally
// "max_tokens". Blank lines are skipped; any other bad line is an error
// naming its line number.
func ParsePrompts(r io.Reader) ([]Prompt, error) {
	var out []Prompt
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 64<<20)
	for n := 1; sc.Scan(); n++ {
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		p, err := parsePrompt(text)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, p)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no prompts")
	}
	return out, nil
}

func parsePrompt(text []byte) (Prompt, error) {
	var in struct {
		Prompt    *string           `json:"prompt"`
		Messages  []json.RawMessage `json:"messages"`
		MaxTokens *int              `json:"max_tokens"`
	}
	dec := json.NewDecoder(bytes.NewReader(text))
	if err := dec.Decode(&in); err != nil {
		return Prompt{}, fmt.Errorf("not a JSON object: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	var p Prompt
	switch {
	case in.Prompt != nil && in.Messages != nil:
		return p, fmt.Errorf(`give "prompt" or "messages", not both`)
	case in.Prompt != nil:
		if strings.TrimSpace(*in.Prompt) == "" {
			return p, fmt.Errorf(`"prompt" is empty`)
		}
		m, _ := json.Marshal(map[string]string{"role": "user", "content": *in.Prompt})
		p.Messages = []json.RawMessage{m}
	case len(in.Messages) > 0:
		for i, m := range in.Messages {
			var obj map[string]json.RawMessage
			if json.Unmarshal(m, &obj) != nil || obj["role"] == nil {
				return p, fmt.Errorf(`messages[%d] is not a message object with a "role"`, i)
			}
		}
		p.Messages = in.Messages
	default:
		return p, fmt.Errorf(`no "prompt" (a string) or "messages" (a non-empty list)`)
	}
	if in.MaxTokens != nil {
		if *in.MaxTokens < 1 {
			return p, fmt.Errorf(`"max_tokens" must be at least 1`)
		}
		p.MaxTokens = *in.MaxTokens
	}
	return p, nil
}

// words are what synthetic prompts are made of: short common English words,
// each about one token for a BPE tokenizer.
var words = strings.Fields(`the of and to in is it you that he was for on are as with his they at be this
from have or by one had not but what all were when we there can an your which their said if do will each
about how up out them then she many some so these would other into has more her two like him see time could
no make than first been its who now people my made over did down only way find use may water long little
very after words called just where most know get through back much before go good new write our used me man
too any day same right look think also around another came come work three word must because does part even
place well such here take why things help put years different away again off went old number great tell men
say small every found still between name should home big give air line set own under read last never us left
end along while might next sound below saw something thought both few those always looked show large often
together asked house world going want school important until form food keep children feet land side without
boy once animals life enough took sometimes four head above kind began almost live page got earth need far
hand high year mother light parts country father let night following picture being study second eyes soon
times story boys since white days ever paper hard near sentence better best across during today others sure
means knew why try told young miles sun ways thing whole hear example heard several change answer room sea
against top turned learn point city play toward five using himself usually`)

// SyntheticPrompts are n distinct prompts of about inputLen words each (one
// word is about one token), drawn from seed: "Repeat after me:" and random
// words, as one user message.
func SyntheticPrompts(n, inputLen int, seed uint64) []Prompt {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	out := make([]Prompt, n)
	for i := range out {
		var b strings.Builder
		b.WriteString("Repeat after me:")
		for range max(inputLen-3, 1) {
			b.WriteByte(' ')
			b.WriteString(words[rng.IntN(len(words))])
		}
		m, _ := json.Marshal(map[string]string{"role": "user", "content": b.String()})
		out[i] = Prompt{Messages: []json.RawMessage{m}}
	}
	return out
}

// PoissonArrivals are the send times, from the start, of n requests arriving
// as a Poisson process of rate requests per second (exponential gaps) drawn
// from seed. The first request is sent at once.
func PoissonArrivals(n int, rate float64, seed uint64) []float64 {
	rng := rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d))
	out := make([]float64, n)
	t := 0.0
	for i := 1; i < n; i++ {
		t += rng.ExpFloat64() / rate
		out[i] = t
	}
	return out
}
