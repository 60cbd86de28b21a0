package openai

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// chatWith is a valid chat request with extra top-level fields (raw JSON).
func chatWith(fields string) string {
	if fields == "" {
		return chatBody
	}
	return strings.TrimSuffix(chatBody, "}") + "," + fields + "}"
}

const userMsg = `{"role":"user","content":"hi"}`

func TestChatRejectsBadInput(t *testing.T) {
	m := `"model":"smollm2-135m"`
	tests := []struct {
		name, body  string
		status      int
		param, code string
		msgContains string
	}{
		{"malformed JSON", `{"model":`, 400, "", "", "could not parse the JSON body"},
		{"trailing data", chatBody + ` {}`, 400, "", "", "could not parse the JSON body"},
		{"not an object", `[1,2]`, 400, "", "invalid_type", "must be a JSON object"},
		{"empty body", ``, 400, "", "", "could not parse"},
		{"missing model", `{"messages":[` + userMsg + `]}`, 400, "model", "missing_required_parameter", "Missing required parameter: 'model'"},
		{"model differs by case only", `{"Model":"smollm2-135m","messages":[` + userMsg + `]}`, 400, "model", "missing_required_parameter", ""},
		{"model not a string", `{"model":5,"messages":[` + userMsg + `]}`, 400, "model", "invalid_type", "expected a string, but got an integer"},
		{"empty model", `{"model":"","messages":[` + userMsg + `]}`, 400, "model", "empty_string", ""},
		{"missing messages", `{` + m + `}`, 400, "messages", "missing_required_parameter", ""},
		{"messages not an array", `{` + m + `,"messages":"hi"}`, 400, "messages", "invalid_type", "expected an array, but got a string"},
		{"empty messages", `{` + m + `,"messages":[]}`, 400, "messages", "empty_array", "empty array"},
		{"unknown role", `{` + m + `,"messages":[{"role":"wizard","content":"hi"}]}`, 400, "messages[0].role", "invalid_value",
			"Supported values are: 'system', 'developer', 'user' and 'assistant'"},
		{"tool role", `{` + m + `,"messages":[` + userMsg + `,{"role":"tool","content":"x"}]}`, 400, "messages[1].role", "invalid_value", "'tool'"},
		{"missing role", `{` + m + `,"messages":[{"content":"hi"}]}`, 400, "messages[0].role", "missing_required_parameter", ""},
		{"missing content", `{` + m + `,"messages":[{"role":"user"}]}`, 400, "messages[0].content", "missing_required_parameter", ""},
		{"null content", `{` + m + `,"messages":[{"role":"user","content":null}]}`, 400, "messages[0].content", "invalid_type",
			"expected one of a string or an array, but got null"},
		{"content a number", `{` + m + `,"messages":[{"role":"user","content":3}]}`, 400, "messages[0].content", "invalid_type", ""},
		{"image part", `{` + m + `,"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}}]}]}`,
			400, "messages[0].content[1].type", "invalid_value", "'image_url'"},
		{"part without text", `{` + m + `,"messages":[{"role":"user","content":[{"type":"text"}]}]}`, 400, "messages[0].content[0].text", "missing_required_parameter", ""},
		{"empty parts", `{` + m + `,"messages":[{"role":"user","content":[]}]}`, 400, "messages[0].content", "empty_array", ""},
		{"whitespace only", `{` + m + `,"messages":[{"role":"system","content":" "},{"role":"user","content":"\n\t"}]}`, 400, "messages", "invalid_value", "whitespace"},
		{"max_tokens 0", chatWith(`"max_tokens":0`), 400, "max_tokens", "integer_below_min_value", "Expected a value >= 1, but got 0 instead"},
		{"max_tokens negative", chatWith(`"max_tokens":-5`), 400, "max_tokens", "integer_below_min_value", ""},
		{"max_tokens a decimal", chatWith(`"max_tokens":1.5`), 400, "max_tokens", "invalid_type", "expected an integer, but got a decimal"},
		{"max_tokens a string", chatWith(`"max_tokens":"5"`), 400, "max_tokens", "invalid_type", ""},
		{"max_tokens over int32", chatWith(`"max_tokens":2147483648`), 400, "max_tokens", "integer_above_max_value", ""},
		{"max_tokens beyond the context", chatWith(`"max_tokens":2048`), 400, "max_tokens", "integer_above_max_value", "context window of 2048"},
		{"max_completion_tokens 0", chatWith(`"max_completion_tokens":0`), 400, "max_completion_tokens", "integer_below_min_value", ""},
		{"max_completion_tokens beyond the context", chatWith(`"max_tokens":5,"max_completion_tokens":5000`), 400, "max_completion_tokens", "integer_above_max_value", ""},
		{"temperature above 2", chatWith(`"temperature":2.5`), 400, "temperature", "decimal_above_max_value",
			"Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 2.5 instead."},
		{"temperature negative", chatWith(`"temperature":-0.1`), 400, "temperature", "decimal_below_min_value", ""},
		{"temperature a string", chatWith(`"temperature":"hot"`), 400, "temperature", "invalid_type", "expected a decimal, but got a string"},
		{"top_p 0", chatWith(`"top_p":0`), 400, "top_p", "decimal_below_min_value", "Expected a value > 0"},
		{"top_p above 1", chatWith(`"top_p":1.01`), 400, "top_p", "decimal_above_max_value", ""},
		{"top_k negative", chatWith(`"top_k":-1`), 400, "top_k", "integer_below_min_value", ""},
		{"seed a decimal", chatWith(`"seed":1.5`), 400, "seed", "invalid_type", ""},
		{"seed beyond int64", chatWith(`"seed":9223372036854775808`), 400, "seed", "invalid_type", ""},
		{"n 2", chatWith(`"n":2`), 400, "n", "integer_above_max_value", "Expected a value <= 1, but got 2 instead"},
		{"n 0", chatWith(`"n":0`), 400, "n", "integer_below_min_value", ""},
		{"stop 5 strings", chatWith(`"stop":["a","b","c","d","e"]`), 400, "stop", "array_above_max_length",
			"Expected an array with maximum length 4, but got an array with length 5 instead."},
		{"stop a number", chatWith(`"stop":7`), 400, "stop", "invalid_type", "expected one of a string or an array"},
		{"stop empty string", chatWith(`"stop":""`), 400, "stop", "empty_string", ""},
		{"stop list with a number", chatWith(`"stop":["a",1]`), 400, "stop[1]", "invalid_type", ""},
		{"stop list with an empty string", chatWith(`"stop":["a",""]`), 400, "stop[1]", "empty_string", ""},
		{"stream a string", chatWith(`"stream":"yes"`), 400, "stream", "invalid_type", "expected a boolean"},
		{"stream_options a list", chatWith(`"stream":true,"stream_options":[]`), 400, "stream_options", "invalid_type", ""},
		{"include_usage a number", chatWith(`"stream":true,"stream_options":{"include_usage":1}`), 400, "stream_options.include_usage", "invalid_type", ""},
		{"user a number", chatWith(`"user":1`), 400, "user", "invalid_type", ""},
		{"unknown model", `{"model":"gpt-9","messages":[` + userMsg + `]}`, 404, "model", "model_not_found", "'gpt-9' does not exist"},
	}
	eng := newFakeEngine()
	s := newTestServer(t, eng, Options{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := post(t, s, "/v1/chat/completions", tc.body)
			if resp.status != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.status, tc.status, resp.body)
			}
			e := resp.apiErr(t)
			if e.Type != typeInvalidRequest {
				t.Errorf("type %q, want invalid_request_error", e.Type)
			}
			checkNullable(t, "param", e.Param, tc.param)
			checkNullable(t, "code", e.Code, tc.code)
			if !strings.Contains(e.Message, tc.msgContains) {
				t.Errorf("message %q does not contain %q", e.Message, tc.msgContains)
			}
		})
	}
	if n := len(eng.requests); n != 0 {
		t.Errorf("bad input reached the engine %d times", n)
	}
}

func checkNullable(t *testing.T, field string, got *string, want string) {
	t.Helper()
	switch {
	case want == "" && got != nil:
		t.Errorf("%s = %q, want null", field, *got)
	case want != "" && got == nil:
		t.Errorf("%s = null, want %q", field, want)
	case want != "" && *got != want:
		t.Errorf("%s = %q, want %q", field, *got, want)
	}
}

func TestCompletionsRejectsBadInput(t *testing.T) {
	tests := []struct {
		name, body  string
		param, code string
	}{
		{"missing prompt", `{"model":"smollm2-135m"}`, "prompt", "missing_required_parameter"},
		{"prompt a list", `{"model":"smollm2-135m","prompt":["a"]}`, "prompt", "invalid_type"},
		{"empty prompt", `{"model":"smollm2-135m","prompt":""}`, "prompt", "invalid_value"},
		{"whitespace prompt", `{"model":"smollm2-135m","prompt":"  \n"}`, "prompt", "invalid_value"},
		{"max_tokens 0", `{"model":"smollm2-135m","prompt":"a","max_tokens":0}`, "max_tokens", "integer_below_min_value"},
		{"temperature 3", `{"model":"smollm2-135m","prompt":"a","temperature":3}`, "temperature", "decimal_above_max_value"},
		{"n 3", `{"model":"smollm2-135m","prompt":"a","n":3}`, "n", "integer_above_max_value"},
	}
	s := newTestServer(t, newFakeEngine(), Options{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := post(t, s, "/v1/completions", tc.body)
			if resp.status != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", resp.status, resp.body)
			}
			e := resp.apiErr(t)
			checkNullable(t, "param", e.Param, tc.param)
			checkNullable(t, "code", e.Code, tc.code)
		})
	}
}

// TestAcceptsValidInput: values at the bounds, nulls for optional fields,
// both content shapes, unknown fields (ignored as OpenAI does).
func TestAcceptsValidInput(t *testing.T) {
	bodies := []string{
		chatWith(`"temperature":2,"top_p":1,"n":1,"max_tokens":1,"seed":-9223372036854775808,"top_k":0`),
		chatWith(`"temperature":0,"top_p":1e-300,"seed":9223372036854775807,"max_completion_tokens":2047`),
		chatWith(`"stop":["a","b","c","d"],"user":"u-1","logprobs":false,"tools":[],"response_format":{"type":"text"}`),
		chatWith(`"stop":"\n","stream":false,"stream_options":{"include_usage":true}`),
		chatWith(`"temperature":null,"top_p":null,"max_tokens":null,"seed":null,"stop":null,"n":null,"stream":null,"stream_options":null,"user":null`),
		`{"model":"smollm2-135m","messages":[{"role":"developer","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}],"name":"bob"}]}`,
	}
	s := newTestServer(t, newFakeEngine(), Options{})
	for i, body := range bodies {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			if resp := post(t, s, "/v1/chat/completions", body); resp.status != http.StatusOK {
				t.Fatalf("status %d: %s", resp.status, resp.body)
			}
		})
	}
}

// pythonWhitespace is every character Python's str.isspace accepts: what the
// backend strips before refusing an empty prompt.
var pythonWhitespace = []rune{0x9, 0xa, 0xb, 0xc, 0xd, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680,
	0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a,
	0x2028, 0x2029, 0x202f, 0x205f, 0x3000}

// TestWhitespaceAsTheBackendCountsIt: text made only of the backend's
// whitespace is refused by the schema; text with any other character is
// accepted (so the backend never refuses what the schema let through).
func TestWhitespaceAsTheBackendCountsIt(t *testing.T) {
	s := newTestServer(t, newFakeEngine(), Options{})
	quote := func(r string) string { b, _ := json.Marshal(r); return string(b) }
	for _, r := range pythonWhitespace {
		text := quote(strings.Repeat(string(r), 2))
		if resp := post(t, s, "/v1/completions", `{"model":"smollm2-135m","prompt":`+text+`}`); resp.status != 400 {
			t.Errorf("prompt of U+%04X: %d, want 400", r, resp.status)
		}
		msgs := `[{"role":"system","content":` + text + `},{"role":"user","content":[{"type":"text","text":` + text + `}]}]`
		if resp := post(t, s, "/v1/chat/completions", `{"model":"smollm2-135m","messages":`+msgs+`}`); resp.status != 400 {
			t.Errorf("messages of U+%04X: %d, want 400", r, resp.status)
		}
	}
	for _, r := range []rune{0x8, 0xe, 0x1b, 0x21, 0x84, 0x86, 0x9f, 0xa1, 0x1681, 0x200b, 0x2030, 0x3001, 0xfeff, 'x'} {
		text := quote(" " + string(r) + " ")
		if resp := post(t, s, "/v1/completions", `{"model":"smollm2-135m","prompt":`+text+`}`); resp.status != 200 {
			t.Errorf("prompt with U+%04X: %d, want 200: %s", r, resp.status, resp.body)
		}
		msgs := `[{"role":"system","content":""},{"role":"user","content":[{"type":"text","text":" "},{"type":"text","text":` + text + `}]}]`
		if resp := post(t, s, "/v1/chat/completions", `{"model":"smollm2-135m","messages":`+msgs+`}`); resp.status != 200 {
			t.Errorf("messages with U+%04X: %d, want 200: %s", r, resp.status, resp.body)
		}
	}
}
