package batch

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/edgellm/edgellm/internal/apiclient"
)

// memSink is an output file in memory.
type memSink struct{ bytes.Buffer }

func (*memSink) Sync() error { return nil }

// TestRunRetriesAFullQueue: a 429 (serve's queue full) is retried after its
// Retry-After, up to MaxRetries; past them the 429 is the line. The server is
// a test double answering 429 a set number of times (a full queue is a
// fault the end-to-end test cannot time reliably).
func TestRunRetriesAFullQueue(t *testing.T) {
	tests := []struct {
		name       string
		full       int32 // 429s before a 200
		maxRetries int
		wantStatus int
		wantCalls  int32
	}{
		{"answered after two 429s", 2, 3, http.StatusOK, 3},
		{"retries spent: the 429 is the line", 2, 1, http.StatusTooManyRequests, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Authorization") != "Bearer k" {
					http.Error(w, "no key", http.StatusUnauthorized)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				if calls.Add(1) <= tt.full {
					w.Header().Set("Retry-After", "0")
					w.WriteHeader(http.StatusTooManyRequests)
					_, _ = w.Write([]byte(`{"error":{"message":"queue full","type":"requests","param":null,"code":"rate_limit_exceeded"}}`))
					return
				}
				_, _ = w.Write([]byte(`{"id":"chatcmpl-1","object":"chat.completion"}`))
			}))
			defer srv.Close()
			var sink memSink
			reqs := []Request{{Line: 1, CustomID: "a", URL: "/v1/chat/completions", Body: json.RawMessage(`{"model":"m"}`)}}
			sum, err := Run(context.Background(), reqs, &sink,
				Options{Client: apiclient.New(srv.URL, "k"), Concurrency: 1, MaxRetries: tt.maxRetries})
			if err != nil {
				t.Fatal(err)
			}
			var out Output
			if err := json.Unmarshal(sink.Bytes(), &out); err != nil {
				t.Fatalf("output %q: %v", sink.String(), err)
			}
			if out.CustomID != "a" || out.Response == nil || out.Response.StatusCode != tt.wantStatus {
				t.Errorf("line %+v, want status %d", out, tt.wantStatus)
			}
			if got := calls.Load(); got != tt.wantCalls {
				t.Errorf("%d calls, want %d", got, tt.wantCalls)
			}
			if ok := tt.wantStatus == http.StatusOK; (sum.Succeeded == 1) != ok || (sum.Failed == 1) == ok {
				t.Errorf("summary %+v", sum)
			}
		})
	}
}
