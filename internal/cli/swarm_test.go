package cli

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/internal/config"
	"github.com/edgellm/edgellm/p2p"
)

func newJoinString(t *testing.T) string {
	t.Helper()
	s, err := p2p.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	return p2p.Join{Secret: s}.String()
}

// TestSwarmFlagsResolve: each way in (--join, --join -, --join-file,
// EDGELLM_JOIN, the data directory) gives the same swarm, in the
// documented order; mistakes are usage errors whose message never holds
// the secret; EDGELLM_JOIN is dropped once read, so children do not inherit it.
func TestSwarmFlagsResolve(t *testing.T) {
	join, other, saved := newJoinString(t), newJoinString(t), newJoinString(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "join.txt")
	if err := os.WriteFile(file, []byte("  "+join+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	withSaved := t.TempDir()
	if err := os.WriteFile(filepath.Join(withSaved, joinFile), []byte(saved+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		flags   swarmFlags
		env     string
		stdin   string
		dataDir string
		want    string // join string, "" for an error
	}{
		{"--join", swarmFlags{join: join}, other, "", withSaved, join},
		{"--join - reads stdin", swarmFlags{join: "-"}, "", join + "\n", withSaved, join},
		{"--join-file", swarmFlags{joinFile: file}, other, "", withSaved, join},
		{"EDGELLM_JOIN", swarmFlags{}, join, "", withSaved, join},
		{"data directory", swarmFlags{}, "", "", withSaved, saved},
		{"both flags", swarmFlags{join: join, joinFile: file}, "", "", withSaved, ""},
		{"missing --join-file", swarmFlags{joinFile: filepath.Join(dir, "nope")}, "", "", withSaved, ""},
		{"empty --join-file", swarmFlags{joinFile: empty}, "", "", withSaved, ""},
		{"empty stdin", swarmFlags{join: "-"}, "", "", withSaved, ""},
		{"malformed EDGELLM_JOIN", swarmFlags{}, join[:len(join)-3], "", withSaved, ""},
		{"no swarm", swarmFlags{}, "", "", t.TempDir(), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(joinEnv, tt.env)
			if tt.env == "" {
				os.Unsetenv(joinEnv)
			}
			f := tt.flags
			got, err := f.resolve(&config.Config{DataDir: tt.dataDir}, strings.NewReader(tt.stdin))
			if tt.want == "" {
				if !errors.Is(err, ErrUsage) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("err = %v; want a one-line usage error", err)
				}
				if tt.env != "" && strings.Contains(err.Error(), tt.env) {
					t.Errorf("error holds the join string: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want, _ := p2p.ParseJoin(tt.want); got.Secret != want.Secret {
				t.Errorf("joined swarm %s, want %s", got.Secret.ID(), want.Secret.ID())
			}
			if tt.env != "" && os.Getenv(joinEnv) != "" && tt.name == "EDGELLM_JOIN" {
				t.Errorf("%s still set after it was read", joinEnv)
			}
		})
	}
}

// TestLocalJoinString: the running worker's join string first, else the
// saved one; neither is not found (exit 3); a damaged file is an error.
func TestLocalJoinString(t *testing.T) {
	saved, running := newJoinString(t), newJoinString(t)
	write := func(dir, name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	both, onlySaved, none, bad := t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()
	write(both, joinFile, saved+"\n")
	write(both, "worker.json", `{"peer_id":"x","join":"`+running+`"}`)
	write(onlySaved, joinFile, saved+"\n")
	write(bad, "worker.json", `{"join":"edgellm1:nope"}`)
	tests := []struct {
		name, dir, want string
		wantErr         error
	}{
		{"running worker first", both, running, nil},
		{"saved swarm", onlySaved, saved, nil},
		{"neither", none, "", ErrNotFound},
		{"damaged worker.json", bad, "", p2p.ErrInvalidJoinString},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := localJoinString(tt.dir)
			if got != tt.want || (tt.wantErr == nil) != (err == nil) || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Errorf("localJoinString = %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestDataDirRefused: a data directory group or others may write, or
// another user's, is refused with one line and exit 2 before the command
// runs; a missing one is created 0700.
func TestDataDirRefused(t *testing.T) {
	base := t.TempDir()
	dir := func(name string, perm os.FileMode, uid int) string {
		p := filepath.Join(base, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, perm); err != nil {
			t.Fatal(err)
		}
		if uid >= 0 {
			if err := os.Chown(p, uid, uid); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	tests := []struct {
		name     string
		dir      func() string
		wantCode int // of `swarm join-string`: 3 (no swarm) once the directory passed
		root     bool
	}{
		{"missing is created", func() string { return filepath.Join(base, "new", "data") }, 3, false},
		{"0755", func() string { return dir("readable", 0o755, -1) }, 3, false},
		{"group-writable", func() string { return dir("groupw", 0o770, -1) }, 2, false},
		{"world-writable", func() string { return dir("worldw", 0o777, -1) }, 2, false},
		{"another user's", func() string { return dir("others", 0o700, 65534) }, 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.root && os.Geteuid() != 0 {
				t.Skip("needs root to make a directory owned by another user")
			}
			d := tt.dir()
			var stdout, stderr strings.Builder
			code := Main(t.Context(), []string{"--data-dir", d, "swarm", "join-string"}, strings.NewReader(""), &stdout, &stderr)
			if code != tt.wantCode || strings.Count(strings.TrimSpace(stderr.String()), "\n") != 0 {
				t.Fatalf("exit %d, stderr %q; want %d and one line", code, stderr.String(), tt.wantCode)
			}
			if tt.wantCode == 2 && !strings.Contains(stderr.String(), "data directory") {
				t.Errorf("stderr %q does not name the data directory", stderr.String())
			}
			if tt.name == "missing is created" {
				if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
					t.Errorf("created data directory: %v, %v; want 0700", fi, err)
				}
			}
		})
	}
}
