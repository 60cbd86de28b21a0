package openai

import (
	"net/http"
	"testing"
)

func TestAuth(t *testing.T) {
	s := newTestServer(t, newFakeEngine(), Options{APIKey: "sk-secret"})
	tests := []struct {
		name, header string
		status       int
		code         string
	}{
		{"missing", "", 401, ""},
		{"not bearer", "Basic c2stc2VjcmV0", 401, ""},
		{"empty token", "Bearer ", 401, ""},
		{"wrong key", "Bearer sk-wrong", 401, "invalid_api_key"},
		{"key prefix", "Bearer sk-secre", 401, "invalid_api_key"},
		{"right key", "Bearer sk-secret", 200, ""},
		{"scheme in lower case", "bearer sk-secret", 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range []struct{ method, path, body string }{
				{http.MethodPost, "/v1/chat/completions", chatBody},
				{http.MethodPost, "/v1/completions", `{"model":"smollm2-135m","prompt":"hi"}`},
				{http.MethodGet, "/v1/models", ""},
				{http.MethodGet, "/v1/models/smollm2-135m", ""},
			} {
				var hdr []string
				if tc.header != "" {
					hdr = []string{"Authorization", tc.header}
				}
				resp := serve(t, s, r.method, r.path, r.body, hdr...)
				if resp.status != tc.status {
					t.Fatalf("%s %s: status %d, want %d: %s", r.method, r.path, resp.status, tc.status, resp.body)
				}
				if tc.status == 401 {
					e := resp.apiErr(t)
					checkNullable(t, "code", e.Code, tc.code)
					if e.Type != typeInvalidRequest || resp.header.Get("WWW-Authenticate") == "" {
						t.Errorf("401 %+v %v", e, resp.header)
					}
				}
			}
		})
	}
	// Probes, metrics and the document need no key.
	for _, path := range []string{"/health", "/ready", "/metrics", "/openapi.json"} {
		if resp := serve(t, s, http.MethodGet, path, ""); resp.status != http.StatusOK {
			t.Errorf("GET %s without a key: %d", path, resp.status)
		}
	}
}

func TestNoKeyNoAuth(t *testing.T) {
	s := newTestServer(t, newFakeEngine(), Options{})
	resp := serve(t, s, http.MethodGet, "/v1/models", "", "Authorization", "Bearer anything")
	if resp.status != http.StatusOK {
		t.Errorf("without a configured key every request passes: %d", resp.status)
	}
}
