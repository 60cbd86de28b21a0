package privdir

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestEnsureAndCheck(t *testing.T) {
	base := t.TempDir()
	mk := func(name string, perm os.FileMode) string {
		p := filepath.Join(base, name)
		if err := os.Mkdir(p, perm); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, perm); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	others := mk("others", 0o755)
	if os.Geteuid() == 0 {
		if err := os.Chown(others, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(mk("target", 0o700), link); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		dir        string
		ensureOK   bool // Ensure succeeds and leaves 0700
		checkOK    bool
		needsOther bool // only meaningful when the test can chown (root)
	}{
		{"missing is created 0700", filepath.Join(base, "new", "run"), true, true, false},
		{"0700", mk("private", 0o700), true, true, false},
		{"0755 is fine to read, tightened for sockets", mk("readable", 0o755), true, true, false},
		{"group-writable", mk("groupw", 0o770), true, false, false},
		{"world-writable", mk("worldw", 0o777), true, false, false},
		{"another user's", others, false, false, true},
		{"symlink", link, false, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.needsOther && os.Geteuid() != 0 {
				t.Skip("needs root to make a directory owned by another user")
			}
			if tt.dir != link {
				if err := Check(tt.dir); (err == nil) != tt.checkOK && !os.IsNotExist(err) {
					t.Errorf("Check = %v, want ok %v", err, tt.checkOK)
				} else if err != nil && !os.IsNotExist(err) && !errors.Is(err, ErrUnsafe) {
					t.Errorf("Check = %v, want ErrUnsafe", err)
				}
			}
			err := Ensure(tt.dir)
			if (err == nil) != tt.ensureOK {
				t.Fatalf("Ensure = %v, want ok %v", err, tt.ensureOK)
			}
			if err != nil {
				if !errors.Is(err, ErrUnsafe) {
					t.Errorf("Ensure = %v, want ErrUnsafe", err)
				}
				return
			}
			if fi, err := os.Stat(tt.dir); err != nil || fi.Mode().Perm() != 0o700 {
				t.Errorf("after Ensure: %v, %v; want 0700", fi.Mode(), err)
			}
		})
	}
}
