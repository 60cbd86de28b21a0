package backend

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSocketPath(t *testing.T) {
	name := "edgellm-12345-deadbeef.sock"
	long := "/" + strings.Repeat("d", 120)
	private := fmt.Sprintf("edgellm-%d/", os.Geteuid())
	tests := []struct {
		name    string
		dataDir string
		tmpDir  string
		want    string
		wantErr bool
	}{
		{"short data dir", "/home/u/.local/share/edgellm", "/tmp", "/home/u/.local/share/edgellm/run/" + name, false},
		{"long data dir falls back to tmp", long, "/var/tmp", "/var/tmp/" + private + name, false},
		{"long tmp falls back to /tmp", long, long, "/tmp/" + private + name, false},
		{"exactly at the limit", "/" + strings.Repeat("a", maxSocketPath-len("/run/")-len(name)-1), "/tmp",
			"/" + strings.Repeat("a", maxSocketPath-len("/run/")-len(name)-1) + "/run/" + name, false},
		{"one over the limit", "/" + strings.Repeat("a", maxSocketPath-len("/run/")-len(name)), "/tmp", "/tmp/" + private + name, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := socketPath(tt.dataDir, tt.tmpDir, name)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("socketPath = %q, want %q", got, tt.want)
			}
			if len(got) > maxSocketPath {
				t.Errorf("len = %d > %d", len(got), maxSocketPath)
			}
		})
	}
	if _, err := socketPath(long, long, strings.Repeat("n", 110)); err == nil {
		t.Error("impossible name: want an error")
	}
}

func TestSocketOf(t *testing.T) {
	for in, want := range map[string]string{
		"unix:/a/b.sock":   "/a/b.sock",
		"unix:///a/b.sock": "/a/b.sock",
		"127.0.0.1:5000":   "",
	} {
		if got := socketOf(in); got != want {
			t.Errorf("socketOf(%q) = %q, want %q", in, got, want)
		}
	}
	if got := filepath.Base(socketName()); !strings.HasPrefix(got, "edgellm-") || len(got) > 40 {
		t.Errorf("socketName() = %q", got)
	}
}

// TestOwnSocketFallbackIsPrivate: with a data directory too long for a
// socket path, the socket goes into <tmp>/edgellm-<uid>, made 0700 (also
// when it existed wider), and one owned by another user is refused.
func TestOwnSocketFallbackIsPrivate(t *testing.T) {
	long := filepath.Join(t.TempDir(), strings.Repeat("d", 110))
	tmp := t.TempDir()
	if err := os.Chmod(tmp, 0o1777); err != nil { // like /tmp
		t.Fatal(err)
	}
	cfg := &settings{dataDir: long, tmpDir: tmp}
	dir := filepath.Join(tmp, fmt.Sprintf("edgellm-%d", os.Geteuid()))
	for _, before := range []os.FileMode{0, 0o777} { // missing, then planted wide open
		if before != 0 {
			if err := os.Chmod(dir, before); err != nil {
				t.Fatal(err)
			}
		}
		path, err := ownSocket(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Dir(path) != dir {
			t.Fatalf("socket %s, want it in %s", path, dir)
		}
		if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Fatalf("socket directory (was %#o): %v, %v; want a 0700 directory", before, fi.Mode(), err)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to make the directory another user's")
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := ownSocket(cfg); err == nil {
		t.Error("socket directory owned by another user: want an error")
	}
}
