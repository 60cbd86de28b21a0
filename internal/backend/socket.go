package backend

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// maxSocketPath is the longest unix socket path Linux accepts: sun_path is
// 108 bytes including the terminating NUL (macOS allows 103).
const maxSocketPath = 107

// socketPath picks the backend's unix socket: <dataDir>/run/<name>, or
// <tmpDir>/edgellm-<uid>/<name> when that would be too long for sun_path.
// The name is unique to this process and supervisor, so nodes sharing a
// data directory never collide.
//
// Decision (hardening): the fallback is a directory of this user's, made
// 0700 by ownSocket (privdir.Ensure refuses one another user planted in the
// shared /tmp), not /tmp itself: the backend has no authentication, so the
// socket's directory, not only its mode, keeps other users out.
func socketPath(dataDir, tmpDir, name string) (string, error) {
	if p := filepath.Join(dataDir, "run", name); len(p) <= maxSocketPath {
		return p, nil
	}
	private := fmt.Sprintf("edgellm-%d", os.Geteuid())
	if p := filepath.Join(tmpDir, private, name); len(p) <= maxSocketPath {
		return p, nil
	}
	if p := filepath.Join("/tmp", private, name); len(p) <= maxSocketPath {
		return p, nil
	}
	return "", fmt.Errorf("%w: no directory gives a unix socket path under %d bytes", ErrInvalidOption, maxSocketPath)
}

// socketName returns a short name unique to this process: edgellm-<pid>-<rand>.sock.
func socketName() string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return fmt.Sprintf("edgellm-%d-%s.sock", os.Getpid(), hex.EncodeToString(b[:]))
}

// unixAddr turns a socket path into the address both gRPC sides accept.
func unixAddr(path string) string { return "unix:" + path }

// socketOf returns the socket path of a unix: address, "" for TCP addresses.
func socketOf(addr string) string {
	path, ok := strings.CutPrefix(addr, "unix:")
	if !ok {
		return ""
	}
	return strings.TrimPrefix(path, "//") // unix:///abs → /abs
}
