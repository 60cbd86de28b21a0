package openai

import (
	"context"
	"net/http"
)

// health serves GET /health: the process answers HTTP, nothing more.
func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, http.StatusOK, statusBody{Status: "ok"})
}

// ready serves GET /ready: 200 once the engine is ready, 503 with the
// reason otherwise (also when Ready takes longer than ReadyTimeout).
func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.ReadyTimeout)
	defer cancel()
	if err := s.engine.Ready(ctx); err != nil {
		s.writeJSON(w, http.StatusServiceUnavailable, statusBody{Status: "unavailable", Reason: err.Error()})
		return
	}
	s.writeJSON(w, http.StatusOK, statusBody{Status: "ready"})
}
