// Package privdir makes and checks directories that only their owner may
// change: the data directory (identity key, swarm secret, sockets) and the
// directories that hold unix sockets.
//
// Decisions (hardening):
//   - A directory another user owns, or that group or others may write, is
//     refused, not repaired: whoever could write it could swap the identity
//     key, the swarm secret or a socket under us. The error names the fix.
//   - A directory this process creates is 0700. Ensure also tightens a
//     directory of ours that is wider (a socket directory must be private:
//     a socket's own mode is not honoured everywhere, its directory's is).
//   - Checks use Lstat on the directory itself: a symlink where a private
//     directory should be (e.g. planted in /tmp) is refused.
package privdir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// ErrUnsafe marks a directory that is not private to this user.
var ErrUnsafe = errors.New("unsafe directory")

// Check returns an ErrUnsafe error unless dir is a directory owned by this
// user and not writable by group or others (0755 passes: reading is fine).
func Check(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	return checkInfo(dir, fi, 0o022)
}

// Ensure creates dir (and missing parents) with mode 0700, then checks that
// it is a real directory owned by this user, and sets it to 0700 when it is
// wider.
func Ensure(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("%w: %s is a symlink, not a directory", ErrUnsafe, dir)
	}
	if err := checkInfo(dir, fi, 0); err != nil {
		return err
	}
	if fi.Mode().Perm() != 0o700 {
		return os.Chmod(dir, 0o700)
	}
	return nil
}

// checkInfo checks fi is a directory owned by this user with none of the
// forbidden permission bits.
func checkInfo(dir string, fi fs.FileInfo, forbidden fs.FileMode) error {
	if !fi.IsDir() {
		return fmt.Errorf("%w: %s is not a directory", ErrUnsafe, dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%w: %s is owned by uid %d, not this user (uid %d)", ErrUnsafe, dir, st.Uid, os.Geteuid())
	}
	if perm := fi.Mode().Perm(); perm&forbidden != 0 {
		return fmt.Errorf("%w: %s is writable by group or others (mode %#o; chmod go-w it)", ErrUnsafe, dir, perm)
	}
	return nil
}
