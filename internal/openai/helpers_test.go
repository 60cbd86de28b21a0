package openai

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// testModel is the model the test double serves.
var testModel = Model{
	ID:            "smollm2-135m",
	WeightsCID:    "bafkreitestweights",
	Architecture:  "LlamaForCausalLM",
	ContextLength: 2048,
	NumLayers:     30,
	Created:       time.Unix(1_700_000_000, 0),
	Where:         []string{"local", "12D3KooWPeer"},
}

// fakeEngine is a test double of Engine: a fixed model list, a readiness
// error, and a generate function each test scripts. It records the
// requests it got.
type fakeEngine struct {
	models    []Model
	modelsErr error
	readyErr  error
	gen       func(ctx context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) (string, error)

	mu       sync.Mutex
	requests []*pb.GenerateRequest
}

func newFakeEngine() *fakeEngine {
	return &fakeEngine{models: []Model{testModel}, gen: reply("Paris", " is", " the capital.")}
}

func (f *fakeEngine) Models(context.Context) ([]Model, error) { return f.models, f.modelsErr }

func (f *fakeEngine) Ready(context.Context) error { return f.readyErr }

func (f *fakeEngine) Generate(ctx context.Context, req *pb.GenerateRequest,
	onResp func(*pb.GenerateResponse) error) (string, error) {
	f.mu.Lock()
	f.requests = append(f.requests, req)
	f.mu.Unlock()
	return f.gen(ctx, req, onResp)
}

func (f *fakeEngine) lastRequest(t *testing.T) *pb.GenerateRequest {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) == 0 {
		t.Fatal("the engine got no request")
	}
	return f.requests[len(f.requests)-1]
}

// reply scripts a local generation of texts, one token each, finishing
// with STOP and usage (7 prompt tokens, 3 of them cached).
func reply(texts ...string) func(context.Context, *pb.GenerateRequest, func(*pb.GenerateResponse) error) (string, error) {
	return replyWith(pb.FinishReason_FINISH_REASON_STOP, texts...)
}

func replyWith(reason pb.FinishReason, texts ...string) func(context.Context, *pb.GenerateRequest, func(*pb.GenerateResponse) error) (string, error) {
	return func(ctx context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) (string, error) {
		for i, text := range texts {
			resp := &pb.GenerateResponse{RequestId: req.RequestId, Text: text, TokenIds: []uint32{uint32(100 + i)}}
			if i == len(texts)-1 {
				resp.FinishReason = reason
				resp.Usage = &pb.Usage{PromptTokens: 7, CompletionTokens: uint32(len(texts)), CachedPromptTokens: 3}
				resp.Timings = &pb.Timings{TtftMs: 12, MaxBatch: 3}
			}
			if err := onResp(resp); err != nil {
				return RouteLocal, err
			}
		}
		return RouteLocal, nil
	}
}

// blocking scripts a generation that sends one token, reports on started,
// then waits for release or for its context to end (reported on
// cancelled).
type blocking struct {
	started   chan struct{}
	release   chan struct{}
	cancelled chan struct{}
}

func newBlocking() *blocking {
	return &blocking{started: make(chan struct{}, 16), release: make(chan struct{}), cancelled: make(chan struct{}, 16)}
}

func (b *blocking) gen(ctx context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) (string, error) {
	if err := onResp(&pb.GenerateResponse{Text: "tok", TokenIds: []uint32{1}}); err != nil {
		return RoutePipeline, err
	}
	b.started <- struct{}{}
	select {
	case <-b.release:
		return RoutePipeline, onResp(&pb.GenerateResponse{Text: "!", TokenIds: []uint32{2},
			FinishReason: pb.FinishReason_FINISH_REASON_LENGTH,
			Usage:        &pb.Usage{PromptTokens: 4, CompletionTokens: 2}})
	case <-ctx.Done():
		b.cancelled <- struct{}{}
		return RoutePipeline, ctx.Err()
	}
}

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// eventually polls cond until it holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newTestServer(t *testing.T, eng Engine, opts Options) *Server {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := New(eng, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// response is an answer read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("response is not a JSON object: %v\n%s", err, r.body)
	}
	return v
}

// apiErr is the error object of an error response.
func (r response) apiErr(t *testing.T) errorObject {
	t.Helper()
	var b errorBody
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatalf("not an error object: %v\n%s", err, r.body)
	}
	return b.Error
}

// serve runs one request through h in memory and checks the answer
// against the OpenAPI document.
func serve(t *testing.T, h http.Handler, method, path, body string, header ...string) response {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	resp := response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
	checkAgainstSpec(t, method, path, resp)
	return resp
}

func post(t *testing.T, h http.Handler, path, body string, header ...string) response {
	t.Helper()
	return serve(t, h, http.MethodPost, path, body, header...)
}

// specPath is the document's path template for a request path.
func specPath(path string) string {
	if strings.HasPrefix(path, "/v1/models/") {
		return "/v1/models/{id}"
	}
	return path
}

// checkAgainstSpec fails the test when an answer of a documented operation
// is not what the OpenAPI document says: an undocumented status, an
// undocumented content type, a body that violates its schema, a missing
// required header. Streamed bodies are checked event by event.
func checkAgainstSpec(t *testing.T, method, path string, resp response) {
	t.Helper()
	item := spec.doc.Paths.Find(specPath(path))
	if item == nil || item.GetOperation(method) == nil {
		return // not an operation of the API: the 404/405 answers
	}
	ref := item.GetOperation(method).Responses.Status(resp.status)
	if ref == nil {
		t.Fatalf("%s %s answered %d, which the document does not list\n%s", method, path, resp.status, resp.body)
	}
	for name, h := range ref.Value.Headers {
		if h.Value.Required && resp.header.Get(name) == "" {
			t.Errorf("%s %s %d: required header %s missing", method, path, resp.status, name)
		}
	}
	ctype, _, err := mime.ParseMediaType(resp.header.Get("Content-Type"))
	if err != nil {
		t.Fatalf("%s %s %d: Content-Type %q: %v", method, path, resp.status, resp.header.Get("Content-Type"), err)
	}
	media := ref.Value.Content.Get(ctype)
	if media == nil {
		t.Fatalf("%s %s %d: content type %s is not documented", method, path, resp.status, ctype)
	}
	switch ctype {
	case "application/json":
		checkSchema(t, media.Schema.Value, resp.body)
	case "text/event-stream":
		checkStream(t, path, media.Schema.Value, resp.body)
	}
}

func checkSchema(t *testing.T, s *openapi3.Schema, body []byte) {
	t.Helper()
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, body)
	}
	if err := s.VisitJSON(v, openapi3.VisitAsResponse(), openapi3.MultiErrors()); err != nil {
		t.Fatalf("body violates the document's schema: %v\nbody: %s", err, body)
	}
}

// checkStream checks each event of a stream against the documented event
// schema, and its data against the chunk schema (or the error schema).
func checkStream(t *testing.T, path string, media *openapi3.Schema, body []byte) {
	t.Helper()
	chunk := spec.schema("ChatCompletionChunk")
	if path == "/v1/completions" {
		chunk = spec.schema("Completion")
	}
	for _, ev := range parseSSE(t, body) {
		event, _ := json.Marshal(map[string]string{"data": ev, "event": "message"})
		checkSchema(t, media, event)
		switch {
		case ev == "[DONE]":
		case strings.HasPrefix(ev, `{"error"`):
			checkSchema(t, spec.schema("Error"), []byte(ev))
		default:
			checkSchema(t, chunk, []byte(ev))
		}
	}
}

// parseSSE returns the data of each event, checking the framing: every
// event is one "data: " line followed by a blank line.
func parseSSE(t *testing.T, body []byte) []string {
	t.Helper()
	var events []string
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("stream line %q is not a data line\n%s", line, body)
		}
		if !sc.Scan() || sc.Text() != "" {
			t.Fatalf("event %q is not followed by a blank line\n%s", data, body)
		}
		events = append(events, data)
	}
	return events
}

// decodeEvents parses every event but [DONE] into T.
func decodeEvents[T any](t *testing.T, events []string) []T {
	t.Helper()
	var out []T
	for _, ev := range events {
		if ev == "[DONE]" {
			continue
		}
		var v T
		if err := json.Unmarshal([]byte(ev), &v); err != nil {
			t.Fatalf("event %q: %v", ev, err)
		}
		out = append(out, v)
	}
	return out
}

// startHTTP serves s on a real loopback listener.
func startHTTP(t *testing.T, s *Server) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return ts
}

func readAll(t *testing.T, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const chatBody = `{"model":"smollm2-135m","messages":[{"role":"user","content":"What is the capital of France?"}]}`

func decodeInto(t *testing.T, body []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
}
