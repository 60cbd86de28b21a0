package openai

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"time"
)

// writeJSON answers v with status. The write has the same per-write
// deadline as a streamed event.
func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		s.log.Error("openai: encode response", "err", err)
		status, b = http.StatusInternalServerError, []byte(`{"error":{"message":"could not encode the response","type":"server_error","param":null,"code":null}}`)
	}
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// writeError answers an OpenAI error object; a 5xx is logged with its cause.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, e *apiError) {
	s.logError(w, r, e)
	for k, vs := range e.Header {
		w.Header()[k] = vs
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", retryAfterSeconds(e.RetryAfter))
	}
	s.writeJSON(w, e.Status, e.body())
}

func (s *Server) logError(w http.ResponseWriter, r *http.Request, e *apiError) {
	if e.Status < http.StatusInternalServerError {
		return
	}
	level := slog.LevelWarn
	if e.Status == http.StatusInternalServerError {
		level = slog.LevelError
	}
	s.log.Log(r.Context(), level, "openai: request failed", "method", r.Method, "path", r.URL.Path,
		"id", w.Header().Get("X-Request-Id"), "status", e.Status, "message", e.Message, "cause", e.cause)
}
