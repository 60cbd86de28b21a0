// Package batch runs a file of requests in the OpenAI Batch API's JSONL
// format against a running serve and appends one output line per request.
//
// Decisions:
//   - Input and output follow OpenAI's Batch API: a line is {"custom_id",
//     "method", "url", "body"}; an output line is {"id", "custom_id",
//     "response": {"status_code", "request_id", "body"}, "error"}. Output
//     lines are in completion order, as OpenAI's are; custom_id joins them.
//   - A line that cannot run still gets a line: an error line for its
//     custom_id (duplicate custom_id, unknown url, invalid body). A line with
//     no custom_id (not JSON, no "custom_id") cannot be named in the output,
//     so it is a Problem the command reports on stderr with its line number.
//     An HTTP error from serve (400, 404) is a response line with that
//     status, as OpenAI writes it; either way the line counts as failed.
//   - The output file is the resume state: a line is appended (and fsynced)
//     only when its request completed, so a rerun with the same output runs
//     exactly the custom_ids without a line. A duplicate custom_id's error
//     line is told apart by its code and counted per id, so it neither marks
//     the first occurrence done nor repeats on a rerun.
package batch

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// URLs a line may name.
const (
	ChatURL       = "/v1/chat/completions"
	CompletionURL = "/v1/completions"
)

// Error codes of error lines written without asking serve.
const (
	CodeDuplicate     = "duplicate_custom_id"
	CodeInvalidURL    = "invalid_url"
	CodeInvalidMethod = "invalid_method"
	CodeInvalidBody   = "invalid_body"
	CodeRequestFailed = "request_failed"
)

// Request is one input line.
type Request struct {
	Line     int // 1-based
	CustomID string
	URL      string
	Body     json.RawMessage // with --model filled in
	// Err is set when the line cannot run; its output is an error line.
	Err *Error
}

// Problem is a line that cannot be named in the output (no custom_id).
type Problem struct {
	Line    int
	Message string
}

func (p Problem) String() string { return fmt.Sprintf("line %d: %s", p.Line, p.Message) }

// inputLine is the wire form of an input line.
type inputLine struct {
	CustomID *json.RawMessage `json:"custom_id"`
	Method   string           `json:"method"`
	URL      string           `json:"url"`
	Body     json.RawMessage  `json:"body"`
}

// maxLine is the longest input line read (a request body with a long prompt).
const maxLine = 64 << 20

// ParseInput reads JSONL requests. model fills a body's "model" when it names
// none. Lines with no custom_id come back as problems; every other line as a
// Request (with Err set when it cannot run). Blank lines are skipped. Only a
// read error is an error.
func ParseInput(r io.Reader, model string) ([]Request, []Problem, error) {
	var reqs []Request
	var problems []Problem
	seen := map[string]int{} // custom_id -> line of its first occurrence
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), maxLine)
	for n := 1; sc.Scan(); n++ {
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		req, problem := parseLine(n, text, model)
		if problem != "" {
			problems = append(problems, Problem{Line: n, Message: problem})
			continue
		}
		if first, dup := seen[req.CustomID]; dup {
			req.Err = &Error{Code: CodeDuplicate,
				Message: fmt.Sprintf("line %d repeats custom_id %q of line %d; it was not run", n, req.CustomID, first)}
		} else {
			seen[req.CustomID] = n
		}
		reqs = append(reqs, req)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("read the input: %w", err)
	}
	return reqs, problems, nil
}

// parseLine parses one non-blank line; problem is set when it has no
// custom_id.
func parseLine(n int, text []byte, model string) (req Request, problem string) {
	var in inputLine
	if err := json.Unmarshal(text, &in); err != nil {
		return req, "not a JSON object: " + jsonError(err)
	}
	var id string
	if in.CustomID == nil || json.Unmarshal(*in.CustomID, &id) != nil || strings.TrimSpace(id) == "" {
		return req, `no "custom_id" (a non-empty string)`
	}
	req = Request{Line: n, CustomID: id, URL: in.URL}
	fail := func(code, format string, args ...any) (Request, string) {
		req.Err = &Error{Code: code, Message: fmt.Sprintf(format, args...)}
		return req, ""
	}
	if in.Method != "POST" {
		return fail(CodeInvalidMethod, `method %q: only "POST" is supported`, in.Method)
	}
	if in.URL != ChatURL && in.URL != CompletionURL {
		return fail(CodeInvalidURL, "url %q: use %s or %s", in.URL, ChatURL, CompletionURL)
	}
	var body map[string]json.RawMessage
	if len(in.Body) == 0 || json.Unmarshal(in.Body, &body) != nil || body == nil {
		return fail(CodeInvalidBody, `"body" must be a JSON object`)
	}
	if s, ok := body["stream"]; ok && string(s) == "true" {
		return fail(CodeInvalidBody, `"stream": true is not supported in a batch`)
	}
	var named string
	if m, ok := body["model"]; ok && json.Unmarshal(m, &named) != nil {
		return fail(CodeInvalidBody, `"model" must be a string`)
	}
	if named == "" {
		if model == "" {
			return fail(CodeInvalidBody, `the body names no "model" (name one, or pass --model)`)
		}
		body["model"], _ = json.Marshal(model)
		filled, err := json.Marshal(body)
		if err != nil {
			return fail(CodeInvalidBody, "%v", err)
		}
		in.Body = filled
	}
	req.Body = in.Body
	return req, ""
}

// jsonError shortens a JSON syntax error.
func jsonError(err error) string {
	return strings.TrimPrefix(err.Error(), "json: ")
}
