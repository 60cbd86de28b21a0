package backend

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgellm/edgellm/internal/testutil"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

const testModel = "smollm2-135m"

// startReal starts a supervisor over the real Python backend; its cleanup
// closes it and checks that the backend process is gone.
func startReal(t *testing.T, opts ...Option) *Supervisor {
	t.Helper()
	dataDir := t.TempDir()
	// Speed calibration is for the planner; tests never measure speed.
	cfgFile := filepath.Join(dataDir, "edgellm.yaml")
	if err := os.WriteFile(cfgFile, []byte("backend:\n  calibrate: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []Option{
		WithPython(testutil.Python(t)),
		WithDataDir(dataDir),
		WithConfigFile(cfgFile),
		WithModelsDir(testutil.ModelsDir(t)),
		WithStderr(testWriter{t}),
	}
	s, err := Start(t.Context(), append(base, opts...)...)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		pid := s.Pid()
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if pid != 0 && testutil.Alive(pid) {
			t.Errorf("backend pid %d still alive after Close", pid)
		}
	})
	return s
}

// testWriter sends the backend's output to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("backend: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func greedy(prompt string, maxTokens int32) *pb.GenerateRequest {
	temp := float32(0)
	return &pb.GenerateRequest{
		Model:    testModel,
		Input:    &pb.GenerateRequest_Prompt{Prompt: prompt},
		Sampling: &pb.SamplingParams{MaxTokens: &maxTokens, Temperature: &temp},
	}
}

// generateText runs a generation and returns its text.
func generateText(ctx context.Context, b Backend, req *pb.GenerateRequest) (string, error) {
	var text strings.Builder
	err := b.Generate(ctx, req, func(r *pb.GenerateResponse) error {
		text.WriteString(r.GetText())
		return nil
	})
	return text.String(), err
}

// TestSupervisorRealBackend shares one backend across its subtests, which
// run in order: the last one kills the backend.
func TestSupervisorRealBackend(t *testing.T) {
	testutil.NoLeakedChildren(t)
	var restarts atomic.Int32
	s := startReal(t, WithOnRestart(func() { restarts.Add(1) }))

	t.Run("status and models", func(t *testing.T) {
		st, err := s.Status(t.Context())
		if err != nil || st.GetBackendVersion() == "" {
			t.Fatalf("Status = %v, %v; want a backend version", st, err)
		}
		models, err := s.ListModels(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if !hasModel(models, testModel) {
			t.Errorf("ListModels = %v, want %s", models, testModel)
		}
	})

	t.Run("load and greedy generate", func(t *testing.T) {
		var phases int
		info, err := s.LoadModel(t.Context(), testModel, func(*pb.LoadModelProgress) { phases++ })
		if err != nil {
			t.Fatal(err)
		}
		if info.GetWeightsCid() == "" || !info.GetLoaded() || phases == 0 {
			t.Errorf("LoadModel = %v after %d progress messages; want loaded with a CID", info, phases)
		}
		text, err := generateText(t.Context(), s, greedy("What is the capital of France?", 32))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(text, "Paris") {
			t.Errorf("answer %q does not name Paris", text)
		}
	})

	t.Run("bad requests keep their status codes", func(t *testing.T) {
		tests := []struct {
			name string
			req  *pb.GenerateRequest
			want codes.Code
		}{
			{"unknown model", &pb.GenerateRequest{Model: "no-such-model", Input: &pb.GenerateRequest_Prompt{Prompt: "hi"}}, codes.NotFound},
			{"zero max tokens", greedy("hi", 0), codes.InvalidArgument},
			{"empty prompt", greedy("", 8), codes.InvalidArgument},
		}
		for _, tt := range tests {
			_, err := generateText(t.Context(), s, tt.req)
			if status.Code(err) != tt.want {
				t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
			}
		}
	})

	t.Run("killed during generation, then restarted", func(t *testing.T) {
		killedDuringGeneration(t, s)
		if n := restarts.Load(); n != 1 {
			t.Errorf("the restart hook ran %d times, want 1", n)
		}
	})
}

func killedDuringGeneration(t *testing.T, s *Supervisor) {
	pid := s.Pid()
	killed := false
	err := s.Generate(t.Context(), greedy("Write a long story about a dragon and a knight.", 400),
		func(*pb.GenerateResponse) error {
			if !killed {
				killed = true
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					t.Errorf("kill %d: %v", pid, err)
				}
			}
			return nil
		})
	if status.Code(err) != codes.Unavailable || !errors.Is(err, ErrExited) {
		t.Fatalf("in-flight generation: err = %v, want UNAVAILABLE wrapping ErrExited", err)
	}
	if !strings.Contains(err.Error(), "backend exited during generation") {
		t.Errorf("err = %q, want it to say the backend exited during generation", err)
	}
	text, err := generateText(t.Context(), s, greedy("What is the capital of France?", 32))
	if err != nil {
		t.Fatalf("request after the restart: %v", err)
	}
	if !strings.Contains(text, "Paris") {
		t.Errorf("answer after restart %q does not name Paris", text)
	}
	if s.Pid() == pid || testutil.Alive(pid) {
		t.Errorf("pid after restart = %d, killed pid %d alive: %v", s.Pid(), pid, testutil.Alive(pid))
	}
}

// TestSupervisorGivesUp checks the restart budget: with no restarts allowed,
// a killed backend stays down and requests fail with ErrGaveUp.
func TestSupervisorGivesUp(t *testing.T) {
	testutil.NoLeakedChildren(t)
	s := startReal(t, WithMaxRestartsPerMinute(0))
	pid := s.Pid()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, err := s.Status(t.Context())
	if errors.Is(err, ErrExited) { // the call raced the death; the next one cannot
		_, err = s.Status(t.Context())
	}
	if !errors.Is(err, ErrGaveUp) {
		t.Fatalf("Status after the kill: err = %v, want ErrGaveUp", err)
	}
	if s.Pid() != 0 || testutil.Alive(pid) {
		t.Errorf("Pid() = %d, killed pid %d alive: %v", s.Pid(), pid, testutil.Alive(pid))
	}
}

func hasModel(models []*pb.ModelInfo, id string) bool {
	for _, m := range models {
		if m.GetId() == id {
			return true
		}
	}
	return false
}
