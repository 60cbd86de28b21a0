package openai

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// unavailableErr is what an engine returns when no peer can serve: a gRPC
// status, wrapped as the engine would.
func unavailableErr(msg string) error {
	return fmt.Errorf("generate: %w", status.Error(codes.Unavailable, msg))
}

func TestEngineErrorsMapToStatus(t *testing.T) {
	tests := []struct {
		name        string
		err         error
		status      int
		typ, code   string
		msgContains string
	}{
		{"invalid argument", status.Error(codes.InvalidArgument, "prompt is 3000 tokens; the context window of 2048 tokens leaves no room"),
			400, typeInvalidRequest, "", "prompt is 3000 tokens"},
		{"wrapped invalid argument", fmt.Errorf("pipeline: %w", status.Error(codes.InvalidArgument, "max_tokens must be between 1 and 9")),
			400, typeInvalidRequest, "", "max_tokens must be between 1 and 9"},
		{"not found", status.Error(codes.NotFound, "model smollm2-135m is not loaded"), 404, typeInvalidRequest, "model_not_found", "not loaded"},
		{"resource exhausted", status.Error(codes.ResourceExhausted, "busy"), 429, typeRateLimit, "rate_limit_exceeded", "busy"},
		{"unavailable", unavailableErr("no peer serves smollm2-135m"), 503, typeServer, "", "no peer serves"},
		{"no capacity", fmt.Errorf("plan: every peer is busy: %w", ErrNoCapacity), 503, typeServer, "", "every peer is busy"},
		{"cancelled by someone else", status.Error(codes.Canceled, "aborted"), 500, typeServer, "", "reference chatcmpl-"},
		{"internal", status.Error(codes.Internal, "CUDA out of memory"), 500, typeServer, "", "reference chatcmpl-"},
		{"plain error", errors.New("boom"), 500, typeServer, "", "reference chatcmpl-"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			eng := newFakeEngine()
			eng.gen = func(context.Context, *pb.GenerateRequest, func(*pb.GenerateResponse) error) (string, error) {
				return RouteLocal, tc.err
			}
			s := newTestServer(t, eng, Options{})
			for _, stream := range []bool{false, true} {
				resp := post(t, s, "/v1/chat/completions", chatWith(fmt.Sprintf(`"stream":%v`, stream)))
				if resp.status != tc.status {
					t.Fatalf("stream=%v: status %d, want %d: %s", stream, resp.status, tc.status, resp.body)
				}
				e := resp.apiErr(t)
				if e.Type != tc.typ || !strings.Contains(e.Message, tc.msgContains) {
					t.Errorf("stream=%v: error %+v, want type %s and a message containing %q", stream, e, tc.typ, tc.msgContains)
				}
				checkNullable(t, "code", e.Code, tc.code)
				if tc.status == 500 && strings.Contains(e.Message, "boom") || strings.Contains(e.Message, "CUDA") {
					t.Errorf("a 500 must not leak its cause: %q", e.Message)
				}
				if tc.status == 429 && resp.header.Get("Retry-After") != "1" {
					t.Errorf("429 without Retry-After: %v", resp.header)
				}
			}
		})
	}
}

func TestModelsErrorMapsToStatus(t *testing.T) {
	eng := newFakeEngine()
	eng.modelsErr = unavailableErr("backend is restarting")
	s := newTestServer(t, eng, Options{})
	for _, r := range []struct{ method, path, body string }{
		{http.MethodPost, "/v1/chat/completions", chatBody},
		{http.MethodGet, "/v1/models", ""},
		{http.MethodGet, "/v1/models/smollm2-135m", ""},
	} {
		resp := serve(t, s, r.method, r.path, r.body)
		if resp.status != http.StatusServiceUnavailable || !strings.Contains(resp.apiErr(t).Message, "restarting") {
			t.Errorf("%s %s: %d %s, want 503", r.method, r.path, resp.status, resp.body)
		}
	}
}

func TestUnknownRoutesAnswerJSON(t *testing.T) {
	s := newTestServer(t, newFakeEngine(), Options{})
	resp := serve(t, s, http.MethodPost, "/v1/embeddings", `{}`)
	if resp.status != http.StatusNotFound || resp.apiErr(t).Message != "Invalid URL (POST /v1/embeddings)" {
		t.Errorf("unknown path: %d %s", resp.status, resp.body)
	}
	resp = serve(t, s, http.MethodGet, "/v1/chat/completions", "")
	if resp.status != http.StatusMethodNotAllowed || resp.header.Get("Allow") != "POST" ||
		resp.apiErr(t).Type != typeInvalidRequest {
		t.Errorf("wrong method: %d %v %s", resp.status, resp.header, resp.body)
	}
	for _, path := range []string{"/v1/models", "/v1/models/x", "/health"} {
		resp = serve(t, s, http.MethodHead, path, "")
		if resp.status != http.StatusMethodNotAllowed || resp.header.Get("Allow") != "GET" {
			t.Errorf("HEAD %s: %d %v, want 405 with Allow: GET", path, resp.status, resp.header)
		}
	}
	if resp = serve(t, s, http.MethodHead, "/nowhere", ""); resp.status != http.StatusNotFound {
		t.Errorf("HEAD /nowhere: %d, want 404", resp.status)
	}
	// Unclean paths are not redirected: a model id of ".." is a 404.
	for _, path := range []string{"/v1/models/..", "/v1/models/.", "/v1//models", "/v1/models/a/../b"} {
		if resp = serve(t, s, http.MethodGet, path, ""); resp.status != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, resp.status)
		}
	}
	if resp = serve(t, s, http.MethodGet, "/v1/models/", ""); resp.status != http.StatusNotFound ||
		resp.apiErr(t).Code == nil {
		t.Errorf("GET /v1/models/: %d %s, want 404 model_not_found", resp.status, resp.body)
	}
	resp = serve(t, s, http.MethodDelete, "/v1/models/x", "")
	if resp.status != http.StatusMethodNotAllowed || !strings.Contains(resp.header.Get("Allow"), "GET") {
		t.Errorf("wrong method on a model: %d %v %s", resp.status, resp.header, resp.body)
	}
}
