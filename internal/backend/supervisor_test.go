package backend

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgellm/edgellm/internal/testutil"
)

// fakePython writes an executable script that stands in for the backend's
// interpreter.
func fakePython(t *testing.T, script string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "python")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestStartFailureShowsStderrTail(t *testing.T) {
	tests := []struct {
		name     string
		script   string
		opts     []Option
		wantTail string
		wantErr  string
	}{
		{
			name:     "exits at once",
			script:   "echo 'line one' >&2\necho 'ImportError: No module named torch' >&2\nexit 3\n",
			wantTail: "ImportError: No module named torch",
			wantErr:  "exit status 3",
		},
		{
			name:     "never serves",
			script:   "echo 'waiting forever' >&2\nexec sleep 600\n",
			opts:     []Option{WithStartTimeout(500 * time.Millisecond)},
			wantTail: "waiting forever",
			wantErr:  "not serving",
		},
		{
			name:    "not executable",
			script:  "",
			opts:    []Option{WithPython("/nonexistent/python")},
			wantErr: "no such file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.NoLeakedChildren(t)
			opts := append([]Option{WithPython(fakePython(t, tt.script)), WithDataDir(t.TempDir())}, tt.opts...)
			s, err := Start(t.Context(), opts...)
			if err == nil {
				s.Close()
				t.Fatal("Start succeeded, want an error")
			}
			var se *StartError
			if !errors.Is(err, ErrStartFailed) || !errors.As(err, &se) {
				t.Fatalf("err = %v, want a *StartError wrapping ErrStartFailed", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %q, want it to contain %q", err, tt.wantErr)
			}
			if tt.wantTail != "" && (len(se.Tail) == 0 || se.Tail[len(se.Tail)-1] != tt.wantTail ||
				!strings.Contains(err.Error(), tt.wantTail)) {
				t.Errorf("tail = %q, want it to end with %q, shown in the error", se.Tail, tt.wantTail)
			}
		})
	}
}

func TestStartRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts []Option
	}{
		{"no python", []Option{WithDataDir(t.TempDir())}},
		{"no data dir", []Option{WithPython("python3")}},
		{"zero start timeout", []Option{WithPython("python3"), WithDataDir(t.TempDir()), WithStartTimeout(0)}},
		{"negative restarts", []Option{WithPython("python3"), WithDataDir(t.TempDir()), WithMaxRestartsPerMinute(-1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Start(t.Context(), tt.opts...); !errors.Is(err, ErrInvalidOption) {
				t.Fatalf("err = %v, want ErrInvalidOption", err)
			}
		})
	}
}

func TestTakeRestart(t *testing.T) {
	s := &Supervisor{cfg: &settings{maxRestarts: 2}}
	t0 := time.Unix(1000, 0)
	steps := []struct {
		at   time.Duration
		want bool
	}{
		{0, true}, {time.Second, true}, {2 * time.Second, false}, // budget spent
		{61 * time.Second, true}, // the first one left the window
		{62 * time.Second, true}, {63 * time.Second, false},
	}
	for i, st := range steps {
		if got := s.takeRestart(t0.Add(st.at)); got != st.want {
			t.Errorf("step %d at +%v: takeRestart = %v, want %v", i, st.at, got, st.want)
		}
	}
}
