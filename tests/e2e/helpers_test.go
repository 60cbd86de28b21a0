// Package e2e runs the edgellm binary as a user would: built with go build,
// run as a subprocess with a temporary data directory, against the real
// Python backend and the shared model store.
package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/internal/backend"
	"github.com/edgellm/edgellm/internal/testutil"
)

// env is one built binary with its data directory and environment.
type env struct {
	bin     string
	dataDir string
	cfgFile string
	environ []string
}

// result is what one run of the binary left.
type result struct {
	stdout, stderr string
	code           int
}

// newEnv builds the binary into a temp directory and prepares a data
// directory whose edgellm.yaml turns off the backend's speed calibration
// (tests never measure speed), which also checks that --config reaches it.
// Its cleanup fails the test if a process still names the data directory.
func newEnv(t *testing.T) *env {
	t.Helper()
	py := testutil.Python(t)
	root := testutil.RepoRoot(t)
	bin := filepath.Join(t.TempDir(), "edgellm")
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, ".")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dataDir := t.TempDir()
	cfgFile := filepath.Join(dataDir, "edgellm.yaml")
	if err := os.WriteFile(cfgFile, []byte("backend:\n  calibrate: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if pids := testutil.ProcessesMentioning(dataDir); len(pids) > 0 {
			t.Errorf("processes %v still running with the test's data directory", pids)
		}
	})
	return &env{bin: bin, dataDir: dataDir, cfgFile: cfgFile, environ: append(append(os.Environ(),
		"EDGELLM_PYTHON="+py, "EDGELLM_MODELS_DIR="+testutil.ModelsDir(t)), testutil.IPFSEnv(t)...)}
}

// sharedBackend starts one backend for many runs of the binary and returns
// the environment entry that points them at it (node.backend_address), so
// each run skips its own backend start. Its cleanup stops the backend.
func (e *env) sharedBackend(t *testing.T) []string {
	t.Helper()
	s, err := backend.Start(t.Context(),
		backend.WithPython(testutil.Python(t)),
		backend.WithDataDir(e.dataDir),
		backend.WithConfigFile(e.cfgFile),
		backend.WithModelsDir(testutil.ModelsDir(t)),
	)
	if err != nil {
		t.Fatalf("start the shared backend: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("stop the shared backend: %v", err)
		}
	})
	return []string{"EDGELLM_BACKEND_ADDRESS=" + s.Addr()}
}

// command prepares a run of the binary with --data-dir and extra
// environment entries (later ones win).
func (e *env) command(t *testing.T, stdin string, extraEnv []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), e.bin, append([]string{"--data-dir", e.dataDir}, args...)...)
	cmd.Env = append(append([]string{}, e.environ...), extraEnv...)
	cmd.Stdin = strings.NewReader(stdin)
	return cmd
}

// run runs the binary to completion.
func (e *env) run(t *testing.T, stdin string, extraEnv []string, args ...string) result {
	t.Helper()
	cmd := e.command(t, stdin, extraEnv, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		exitErr, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("run %v: %v", args, err)
		}
		code = exitErr.ExitCode()
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// wantOneLineError checks a failed run: the exit code, nothing on stdout,
// and exactly one stderr line "edgellm: ..." containing want.
func wantOneLineError(t *testing.T, r result, code int, want string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit code = %d, want %d; stderr: %q", r.code, code, r.stderr)
	}
	line, rest, _ := strings.Cut(r.stderr, "\n")
	if !strings.HasPrefix(line, "edgellm: ") || rest != "" {
		t.Errorf("stderr = %q, want one line starting with %q", r.stderr, "edgellm: ")
	}
	if !strings.Contains(strings.ToLower(line), strings.ToLower(want)) {
		t.Errorf("stderr = %q, want it to mention %q", line, want)
	}
	if r.stdout != "" {
		t.Errorf("stdout = %q, want nothing", r.stdout)
	}
}
