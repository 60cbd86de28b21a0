package serve

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/edgellm/edgellm/internal/backend"
	"github.com/edgellm/edgellm/internal/openai"
)

// idleBackend is a backend.Backend whose methods no test here reaches (Ready
// asks none of them).
type idleBackend struct{ backend.Backend }

func TestReady(t *testing.T) {
	var running atomic.Bool
	s, err := New(Options{Backend: idleBackend{}, Models: []string{"m"}, BackendRunning: running.Load})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Ready(ctx); err == nil {
		t.Fatal("ready before the warm-up")
	}
	s.setWarm([]openai.Model{{ID: "m"}}, nil)
	if err := s.Ready(ctx); err == nil {
		t.Error("ready while the backend is not running (restarting)")
	}
	running.Store(true)
	if err := s.Ready(ctx); err != nil {
		t.Errorf("not ready with the models warm and the backend up: %v", err)
	}
	s.setWarm(nil, errors.New("load failed"))
	if err := s.Ready(ctx); err == nil || err.Error() != "load failed" {
		t.Errorf("Ready = %v, want the warm-up's error", err)
	}
}

func TestNewRefusesNoModels(t *testing.T) {
	if _, err := New(Options{Backend: idleBackend{}}); err == nil {
		t.Error("New without models succeeded")
	}
}
