package localnode

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/internal/config"
	"github.com/edgellm/edgellm/internal/ipfs"
)

// TestStartIPFS: which IPFS node the backend gets for each ipfs: setting,
// and the one-line reason when it gets none. (A real Kubo start is
// internal/ipfs's test; a real backend's is the CLI's end-to-end tests.)
func TestStartIPFS(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-ipfs")
	tests := []struct {
		name    string
		ipfs    config.IPFS
		wantAPI string // "" = no IPFS node
		wantErr string // "" = no warning
	}{
		{"disabled", config.IPFS{Enabled: false, Binary: missing}, "", ""},
		{"external API", config.IPFS{Enabled: true, API: "http://127.0.0.1:5001"}, "http://127.0.0.1:5001", ""},
		{"no binary", config.IPFS{Enabled: true}, "", "no Kubo binary: set ipfs.binary or " + config.EnvIPFSBin},
		{"binary missing", config.IPFS{Enabled: true, Binary: missing}, "", "; log "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.DataDir, cfg.IPFS = t.TempDir(), tt.ipfs
			n := &Node{}
			err := n.startIPFS(t.Context(), cfg, &settings{})
			defer n.closeIPFS()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("startIPFS: %v; want an error with %q", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("reason %q is not one line", err)
			}
			got := ""
			if n.IPFS() != nil {
				got = n.IPFS().URL()
			}
			if got != tt.wantAPI {
				t.Errorf("IPFS API %q, want %q", got, tt.wantAPI)
			}
		})
	}
}

// TestStartFailure: a start error's reason is its cause and the last line
// Kubo wrote; other errors are their own text.
func TestStartFailure(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"with output", &ipfs.StartError{Err: fmt.Errorf("%w: exited: exit status 1", ipfs.ErrStartFailed),
			Tail: []string{"Initializing daemon...", "Error: lock held"}}, "exited: exit status 1: Error: lock held"},
		{"no output", &ipfs.StartError{Err: fmt.Errorf("%w: timed out", ipfs.ErrStartFailed)}, "timed out"},
		{"other", fmt.Errorf("%w: bad port", ipfs.ErrInvalidOption), "ipfs: invalid option: bad port"},
	}
	for _, tt := range tests {
		if got := startFailure(tt.err); got != tt.want {
			t.Errorf("%s: startFailure = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestOpenDialled: with node.backend_address the node starts nothing and
// uses an external IPFS node only when ipfs.api names one.
func TestOpenDialled(t *testing.T) {
	tests := []struct {
		name    string
		ipfs    config.IPFS
		wantAPI string
	}{
		{"no IPFS", config.IPFS{Enabled: false, API: "http://127.0.0.1:5001"}, ""},
		{"external IPFS", config.IPFS{Enabled: true, API: "http://127.0.0.1:5001"}, "http://127.0.0.1:5001"},
		{"no external IPFS", config.IPFS{Enabled: true, Binary: "/bin/false"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.DataDir = filepath.Join(t.TempDir(), "never-created")
			cfg.Node.BackendAddress = "unix:" + filepath.Join(t.TempDir(), "backend.sock")
			cfg.IPFS = tt.ipfs
			var warnings []string
			n, err := Open(t.Context(), cfg, WithWarnings(func(l string) { warnings = append(warnings, l) }))
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			got := ""
			if n.IPFS() != nil {
				got = n.IPFS().URL()
			}
			if got != tt.wantAPI || len(warnings) > 0 {
				t.Errorf("IPFS API %q, warnings %q; want %q, none", got, warnings, tt.wantAPI)
			}
			if _, err := os.Stat(cfg.DataDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a dialled node created its data directory: %v", err)
			}
		})
	}
}

// TestOpenLog: a log is appended to, and one past the size limit is
// rotated to .1 first.
func TestOpenLog(t *testing.T) {
	tests := []struct {
		name             string
		before           int
		wantLog, wantOld int64 // sizes after writing one byte; -1: no .1
	}{
		{"small", 10, 11, -1},
		{"past the limit", maxLog + 1, 1, maxLog + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "logs", "backend.log")
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, make([]byte, tt.before), 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := openLog(path)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString("x")
			f.Close()
			if fi, err := os.Stat(path); err != nil || fi.Size() != tt.wantLog {
				t.Errorf("log: %v, %v; want %d bytes", fi, err, tt.wantLog)
			}
			old, err := os.Stat(path + ".1")
			if tt.wantOld < 0 && err == nil || tt.wantOld >= 0 && (err != nil || old.Size() != tt.wantOld) {
				t.Errorf("rotated log: %v, %v; want %d bytes", old, err, tt.wantOld)
			}
		})
	}
}

// TestLogRotatesWhileRunning: a log that grows past the limit while its
// child runs rotates at the write that would cross it, not only when the
// next command starts.
func TestLogRotatesWhileRunning(t *testing.T) {
	path := filepath.Join(t.TempDir(), "logs", "ipfs.log")
	l, err := openLog(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	line := bytes.Repeat([]byte("x"), 1<<20-1)
	line = append(line, '\n')
	for range maxLog / len(line) {
		if _, err := l.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(path + ".1"); err == nil {
		t.Fatal("rotated before reaching the limit")
	}
	if _, err := l.Write([]byte("one more line\n")); err != nil {
		t.Fatal(err)
	}
	old, err := os.Stat(path + ".1")
	if err != nil || old.Size() != maxLog {
		t.Fatalf("rotated log: %v, %v; want %d bytes", old, err, maxLog)
	}
	if data, err := os.ReadFile(path); err != nil || string(data) != "one more line\n" {
		t.Fatalf("log after rotation: %q, %v", data, err)
	}
}
