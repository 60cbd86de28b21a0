package openai

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"
)

// listen serves s through NewHTTPServer on a real 127.0.0.1 listener.
func listen(t *testing.T, s *Server) (*http.Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := s.NewHTTPServer(ln.Addr().String())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv, "http://" + ln.Addr().String()
}

func TestNewHTTPServerTimeouts(t *testing.T) {
	s := newTestServer(t, newFakeEngine(), Options{ReadHeaderTimeout: time.Second, IdleTimeout: time.Minute})
	srv := s.NewHTTPServer(":8080")
	if srv.Addr != ":8080" || srv.Handler != s || srv.ReadHeaderTimeout != time.Second ||
		srv.ReadTimeout != DefaultReadTimeout || srv.IdleTimeout != time.Minute || srv.WriteTimeout != 0 {
		t.Errorf("server %+v", srv)
	}
}

// TestSlowHeadersAreCut: a client that sends part of its headers and then
// nothing is disconnected after ReadHeaderTimeout.
func TestSlowHeadersAreCut(t *testing.T) {
	s := newTestServer(t, newFakeEngine(), Options{ReadHeaderTimeout: 200 * time.Millisecond})
	_, base := listen(t, s)
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := io.WriteString(conn, "GET /health HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(conn) // returns when the server closes the connection
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("the server did not close the connection: %v (after %v)", err, elapsed)
	}
	if elapsed < 150*time.Millisecond || elapsed > 3*time.Second {
		t.Errorf("connection closed after %v, want about 200ms", elapsed)
	}
	if strings.Contains(string(rest), "200 OK") {
		t.Errorf("an incomplete request was answered: %q", rest)
	}
}

// TestLongStreamOutlivesReadTimeout: ReadTimeout bounds reading the request,
// not the answer: a stream longer than it completes, and a request body
// sent on time is read.
func TestLongStreamOutlivesReadTimeout(t *testing.T) {
	eng := newFakeEngine()
	b := newBlocking()
	eng.gen = b.gen
	s := newTestServer(t, eng, Options{ReadTimeout: 100 * time.Millisecond})
	_, base := listen(t, s)
	go func() {
		waitFor(t, b.started, "the generation")
		time.Sleep(300 * time.Millisecond)
		b.release <- struct{}{}
	}()
	resp, err := http.Post(base+"/v1/chat/completions", "application/json", strings.NewReader(chatWith(`"stream":true`)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body := string(readAll(t, resp.Body))
	if !strings.HasSuffix(body, "data: [DONE]\n\n") {
		t.Errorf("stream cut short: %q", body)
	}
}

// TestShutdownLetsRequestsFinish: Shutdown waits for a stream in flight,
// and refuses new connections meanwhile.
func TestShutdownLetsRequestsFinish(t *testing.T) {
	eng := newFakeEngine()
	b := newBlocking()
	eng.gen = b.gen
	s := newTestServer(t, eng, Options{})
	srv, base := listen(t, s)
	got := make(chan string, 1)
	go func() {
		resp, err := http.Post(base+"/v1/chat/completions", "application/json", strings.NewReader(chatBody))
		if err != nil {
			got <- err.Error()
			return
		}
		defer resp.Body.Close()
		got <- resp.Status
	}()
	waitFor(t, b.started, "the generation")
	done := make(chan error, 1)
	go func() { done <- Shutdown(context.Background(), srv) }()
	eventually(t, "the listener is closed", func() bool {
		c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	b.release <- struct{}{}
	if status := <-got; status != "200 OK" {
		t.Errorf("request in flight: %s", status)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestShutdownCutsAfterGrace: what is still running when the grace period
// ends is cut, and the engine's context is cancelled.
func TestShutdownCutsAfterGrace(t *testing.T) {
	eng := newFakeEngine()
	b := newBlocking()
	eng.gen = b.gen
	s := newTestServer(t, eng, Options{})
	srv, base := listen(t, s)
	go func() {
		resp, err := http.Post(base+"/v1/chat/completions", "application/json", strings.NewReader(chatWith(`"stream":true`)))
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	waitFor(t, b.started, "the generation")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := Shutdown(ctx, srv); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want the grace period's deadline", err)
	}
	waitFor(t, b.cancelled, "the engine's context to be cancelled")
}

// TestWriteDeadlineDoesNotLeak: the per-write deadline of one answer does
// not outlive it on a keep-alive connection: a later request on the same
// connection, past that deadline, is answered.
func TestWriteDeadlineDoesNotLeak(t *testing.T) {
	s := newTestServer(t, newFakeEngine(), Options{WriteTimeout: 100 * time.Millisecond})
	_, base := listen(t, s)
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	get := func(path string) (code int, reused bool) {
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace),
			http.MethodGet, base+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		_ = readAll(t, resp.Body)
		return resp.StatusCode, reused
	}
	if code, _ := get("/v1/models"); code != http.StatusOK { // sets a write deadline
		t.Fatalf("first request: %d", code)
	}
	time.Sleep(300 * time.Millisecond)
	for _, path := range []string{"/metrics", "/openapi.json"} {
		// (net/http clears a connection's write deadline after each request.)
		if code, reused := get(path); code != http.StatusOK || !reused {
			t.Errorf("%s after the deadline: %d, connection reused %v (want 200 on the same connection)", path, code, reused)
		}
	}
}
