package backend

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestSocketPath(t *testing.T) {
	name := "edgellm-12345-deadbeef.sock"
	long := "/" + strings.Repeat("d", 120)
	tests := []struct {
		name    string
		dataDir string
		tmpDir  string
		want    string
		wantErr bool
	}{
		{"short data dir", "/home/u/.local/share/edgellm", "/tmp", "/home/u/.local/share/edgellm/run/" + name, false},
		{"long data dir falls back to tmp", long, "/var/tmp", "/var/tmp/" + name, false},
		{"long tmp falls back to /tmp", long, long, "/tmp/" + name, false},
		{"exactly at the limit", "/" + strings.Repeat("a", maxSocketPath-len("/run/")-len(name)-1), "/tmp",
			"/" + strings.Repeat("a", maxSocketPath-len("/run/")-len(name)-1) + "/run/" + name, false},
		{"one over the limit", "/" + strings.Repeat("a", maxSocketPath-len("/run/")-len(name)), "/tmp", "/tmp/" + name, false},
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
