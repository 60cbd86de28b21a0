package openai

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestBodyOverLimit(t *testing.T) {
	s := newTestServer(t, newFakeEngine(), Options{MaxBodyBytes: 1024})
	big := `{"model":"smollm2-135m","messages":[{"role":"user","content":"` + strings.Repeat("x", 2000) + `"}]}`
	resp := post(t, s, "/v1/chat/completions", big)
	if resp.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413: %s", resp.status, resp.body)
	}
	if e := resp.apiErr(t); e.Type != typeInvalidRequest || !strings.Contains(e.Message, "1024 bytes") {
		t.Errorf("error %+v", e)
	}
	if resp := post(t, s, "/v1/chat/completions", chatBody); resp.status != http.StatusOK {
		t.Errorf("a body under the limit: %d", resp.status)
	}
}

// TestQueueFull: one generation runs, MaxQueue wait, the next gets 429 with
// Retry-After; once the running one ends the node serves again.
func TestQueueFull(t *testing.T) {
	eng := newFakeEngine()
	b := newBlocking()
	eng.gen = b.gen
	s := newTestServer(t, eng, Options{MaxQueue: 2, RetryAfter: 2500 * time.Millisecond})
	ts := startHTTP(t, s)

	results := make(chan int, 3)
	send := func() {
		resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(chatBody))
		if err != nil {
			t.Error(err)
			results <- 0
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		results <- resp.StatusCode
	}
	go send()
	waitFor(t, b.started, "the first generation")
	go send()
	go send()
	eventually(t, "two requests wait", func() bool { return s.queues.depth(testModel.ID) == 2 })

	resp := post(t, s, "/v1/chat/completions", chatBody)
	if resp.status != http.StatusTooManyRequests || resp.header.Get("Retry-After") != "3" {
		t.Fatalf("status %d, Retry-After %q: want 429 and 3 (2.5s rounded up): %s",
			resp.status, resp.header.Get("Retry-After"), resp.body)
	}
	if e := resp.apiErr(t); e.Code == nil || *e.Code != "rate_limit_exceeded" {
		t.Errorf("error %+v", e)
	}

	// The waiting ones run in turn, each after the one before ends.
	for i := range 3 {
		if i > 0 {
			waitFor(t, b.started, "the next queued generation")
		}
		b.release <- struct{}{}
		if code := <-results; code != http.StatusOK {
			t.Errorf("request %d: %d", i, code)
		}
	}
	eng.gen = reply("ok")
	if resp := post(t, s, "/v1/chat/completions", chatBody); resp.status != http.StatusOK {
		t.Errorf("after the queue drained: %d %s", resp.status, resp.body)
	}
}

// TestNoQueue: a negative MaxQueue lets nothing wait.
func TestNoQueue(t *testing.T) {
	eng := newFakeEngine()
	b := newBlocking()
	eng.gen = b.gen
	s := newTestServer(t, eng, Options{MaxQueue: -1})
	done := make(chan struct{})
	go func() {
		defer close(done)
		post(t, s, "/v1/chat/completions", chatBody)
	}()
	waitFor(t, b.started, "the first generation")
	if resp := post(t, s, "/v1/chat/completions", chatBody); resp.status != http.StatusTooManyRequests {
		t.Errorf("status %d, want 429", resp.status)
	}
	close(b.release)
	<-done
}

// TestQueuedClientLeaves: a waiting request whose client goes away leaves
// the queue, and the engine never sees it.
func TestQueuedClientLeaves(t *testing.T) {
	eng := newFakeEngine()
	b := newBlocking()
	eng.gen = b.gen
	s := newTestServer(t, eng, Options{MaxQueue: 1})
	ts := startHTTP(t, s)

	first := make(chan struct{})
	go func() {
		defer close(first)
		resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(chatBody))
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	waitFor(t, b.started, "the first generation")

	ctx, cancel := context.WithCancel(context.Background())
	left := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/v1/chat/completions", strings.NewReader(chatBody))
		_, err := http.DefaultClient.Do(req)
		left <- err
	}()
	eventually(t, "the second request waits", func() bool { return s.queues.depth(testModel.ID) == 1 })
	cancel()
	<-left
	eventually(t, "the queue is empty", func() bool { return s.queues.depth(testModel.ID) == 0 })

	// Its place is free: another request can wait (MaxQueue is 1).
	third := make(chan int, 1)
	go func() { third <- post(t, s, "/v1/chat/completions", chatBody).status }()
	eventually(t, "the third request waits", func() bool { return s.queues.depth(testModel.ID) == 1 })
	b.release <- struct{}{}
	<-first
	waitFor(t, b.started, "the third generation")
	b.release <- struct{}{}
	if code := <-third; code != http.StatusOK {
		t.Errorf("third request: %d", code)
	}
	if n := len(eng.requests); n != 2 {
		t.Errorf("the engine ran %d generations, want 2 (the one that left never ran)", n)
	}
}

// TestMaxCompletionTokens: the operator's cap refuses a larger request with a
// 400 naming the field, limits a request that names none, and the served
// document carries it as the bound, with the served models as the only ids.
func TestMaxCompletionTokens(t *testing.T) {
	eng := newFakeEngine()
	s := newTestServer(t, eng, Options{MaxCompletionTokens: 8, ModelIDs: []string{testModel.ID}})
	over := `{"model":"smollm2-135m","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":9}`
	resp := post(t, s, "/v1/chat/completions", over)
	if e := resp.apiErr(t); resp.status != http.StatusBadRequest || e.Param == nil || *e.Param != "max_completion_tokens" {
		t.Fatalf("over the cap: %d %s", resp.status, resp.body)
	}
	both := `{"model":"smollm2-135m","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":2,"max_tokens":9}`
	resp = post(t, s, "/v1/chat/completions", both)
	if e := resp.apiErr(t); resp.status != http.StatusBadRequest || e.Param == nil || *e.Param != "max_tokens" {
		t.Fatalf("max_tokens over the cap beside a valid max_completion_tokens: %d %s", resp.status, resp.body)
	}
	for body, want := range map[string]int32{
		chatBody: 8,
		`{"model":"smollm2-135m","prompt":"hi","max_tokens":3}`: 3,
	} {
		path := "/v1/chat/completions"
		if strings.Contains(body, `"prompt"`) {
			path = "/v1/completions"
		}
		if resp := post(t, s, path, body); resp.status != http.StatusOK {
			t.Fatalf("%s: %d %s", body, resp.status, resp.body)
		}
		if got := eng.lastRequest(t).GetSampling().GetMaxTokens(); got != want {
			t.Errorf("%s: max_tokens %d sent to the engine, want %d", body, got, want)
		}
	}
	doc := serve(t, s, http.MethodGet, "/openapi.json", "").json(t)
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	if got := schemas["MaxTokens"].(map[string]any)["maximum"]; got != float64(8) {
		t.Errorf("MaxTokens maximum %v, want 8", got)
	}
	if got := schemas["ModelID"].(map[string]any)["enum"]; len(got.([]any)) != 1 || got.([]any)[0] != testModel.ID {
		t.Errorf("ModelID enum %v, want [%s]", got, testModel.ID)
	}
}
