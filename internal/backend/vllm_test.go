package backend

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgellm/edgellm/internal/testutil"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// engineCore finds the pid of vLLM's engine core among the backend's
// children (vLLM names the process VLLM::EngineCore); 0 when none.
func engineCore(t *testing.T, backendPid int) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err1 := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		cmd, err2 := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err1 != nil || err2 != nil {
			continue
		}
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(backendPid) && strings.HasPrefix(string(cmd), "VLLM::EngineCore") {
			return pid
		}
	}
	return 0
}

// TestVLLMEngineCoreDies: a backend on the vllm engine answers; when vLLM's
// engine core process dies, the request in flight fails with a clear error,
// the backend exits, the supervisor restarts it and the next request works.
func TestVLLMEngineCoreDies(t *testing.T) {
	testutil.NeedVLLM(t)
	testutil.NoLeakedChildren(t)
	var restarts atomic.Int32
	s := startReal(t, WithEngine("vllm"), WithOnRestart(func() { restarts.Add(1) }),
		WithStartTimeout(10*time.Minute))

	text, err := generateText(t.Context(), s, greedy("What is the capital of France?", 32))
	if err != nil || text != "The capital of France is Paris." {
		t.Fatalf("answer = %q, %v; want the torch engine's answer", text, err)
	}
	pid := s.Pid()
	core := engineCore(t, pid)
	if core == 0 {
		t.Fatalf("no VLLM::EngineCore child of backend pid %d", pid)
	}
	killed := false
	err = s.Generate(t.Context(), greedy("Write a long story about a dragon and a knight.", 400),
		func(*pb.GenerateResponse) error {
			if !killed {
				killed = true
				if err := syscall.Kill(core, syscall.SIGKILL); err != nil {
					t.Errorf("kill %d: %v", core, err)
				}
			}
			return nil
		})
	// The engine's own error, or (when the backend was quicker to exit) the
	// supervisor's: either way the caller learns the backend went down.
	engineDied := status.Code(err) == codes.Internal && strings.Contains(err.Error(), "engine core died")
	if !engineDied && !errors.Is(err, ErrExited) {
		t.Fatalf("in-flight generation: err = %v, want the engine core's death", err)
	}
	// The backend stops itself (server/fatal.py); a request sent before it is
	// gone gets the same clear error, one sent after waits for the restart.
	deadline := time.Now().Add(2 * time.Minute)
	for testutil.Alive(pid) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	text, err = generateText(t.Context(), s, greedy("What is the capital of France?", 32))
	if errors.Is(err, ErrExited) { // raced the supervisor noticing the exit; the next one cannot
		text, err = generateText(t.Context(), s, greedy("What is the capital of France?", 32))
	}
	if err != nil || text != "The capital of France is Paris." {
		t.Fatalf("after the restart: answer = %q, %v", text, err)
	}
	if s.Pid() == pid || restarts.Load() != 1 {
		t.Errorf("pid %d -> %d, %d restarts; want a new backend, one restart", pid, s.Pid(), restarts.Load())
	}
}
