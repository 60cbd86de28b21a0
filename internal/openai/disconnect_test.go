package openai

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

// TestDisconnectMidStream: a client that goes away mid-stream cancels the
// context the engine got, at once; the model's slot is free again and no
// goroutine is left behind.
func TestDisconnectMidStream(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	testDisconnect(t, true)
}

// TestDisconnectWhileGenerating: the same for a request that does not
// stream (the client gives up waiting for the whole answer).
func TestDisconnectWhileGenerating(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	testDisconnect(t, false)
}

func testDisconnect(t *testing.T, stream bool) {

	eng := newFakeEngine()
	b := newBlocking()
	eng.gen = b.gen
	s := newTestServer(t, eng, Options{MaxQueue: -1}) // a held slot would show as a 429
	ts := startHTTP(t, s)
	defer http.DefaultClient.CloseIdleConnections()

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/v1/chat/completions",
		strings.NewReader(chatWith(fmt.Sprintf(`"stream":%v`, stream))))
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return // the non-streamed request, cancelled while waiting
		}
		defer resp.Body.Close()
		// Read the role and the first token, then hang up.
		rd := bufio.NewReader(resp.Body)
		for range 4 { // two events, each a data line and a blank line
			if _, err := rd.ReadString('\n'); err != nil {
				t.Error(err)
			}
		}
		waitFor(t, b.started, "the generation")
		cancel()
	}()
	if !stream {
		waitFor(t, b.started, "the generation")
		cancel()
	}
	<-done
	waitFor(t, b.cancelled, "the engine's context to be cancelled")

	running := s.metrics.running.WithLabelValues(testModel.ID)
	eventually(t, "the slot is released", func() bool { return testutil.ToFloat64(running) == 0 })
	eng.gen = reply("again")
	if got := post(t, s, "/v1/chat/completions", chatBody); got.status != http.StatusOK {
		t.Fatalf("next request: %d %s", got.status, got.body)
	}
	ts.Close()
}
