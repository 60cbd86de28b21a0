package openai

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// sseWriter writes server-sent events as OpenAI streams them: each event is
// one "data: <json>" line and a blank line, flushed at once, and the stream
// ends with "data: [DONE]". The framing is three lines of code, so no
// library is used for it.
type sseWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
	// writeTimeout bounds each event's write, so a client that stops
	// reading (without closing) cannot hold a generation slot for ever.
	writeTimeout time.Duration
	started      bool
}

func newSSEWriter(w http.ResponseWriter, writeTimeout time.Duration) *sseWriter {
	return &sseWriter{w: w, rc: http.NewResponseController(w), writeTimeout: writeTimeout}
}

// start commits the 200 and the event-stream headers. It is deferred to the
// first event so that an error before any token still gets its own status.
func (s *sseWriter) start() {
	if s.started {
		return
	}
	s.started = true
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // proxies such as nginx must not hold events back
	s.w.WriteHeader(http.StatusOK)
}

// send writes v as one event.
func (s *sseWriter) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	return s.write(b)
}

// done ends a successful stream.
func (s *sseWriter) done() error {
	return s.write([]byte("[DONE]"))
}

func (s *sseWriter) write(data []byte) error {
	s.start()
	if s.writeTimeout > 0 {
		// Not every ResponseWriter supports deadlines (recorders in tests);
		// the stream works without one.
		_ = s.rc.SetWriteDeadline(time.Now().Add(s.writeTimeout))
	}
	if _, err := fmt.Fprintf(s.w, "data: %s\n\n", data); err != nil {
		return fmt.Errorf("write event: %w", err)
	}
	if err := s.rc.Flush(); err != nil {
		return fmt.Errorf("flush event: %w", err)
	}
	return nil
}
