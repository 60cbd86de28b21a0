package cli

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgellm/edgellm/internal/atomicfile"
	"github.com/edgellm/edgellm/p2p"
)

// Session files (issue 4: sessions that keep a cluster between requests).
//
// Decisions:
//   - A session is a detached daemon (`edgellm session serve`, hidden) that
//     holds one cluster. Everything about it lives in <data-dir>/sessions/
//     (mode 0700): <id>.json (its record, written atomically once the
//     cluster is up and the socket listens: it is the "ready" signal),
//     <id>.sock (the gRPC Inference service, mode 0600) and <id>.log (the
//     daemon's stdout and stderr). The sessions directory, not a lock file,
//     is the registry: a record whose pid is not that session's daemon is
//     stale and is removed by whoever finds it.
//   - Session ids have the p2p session id's format: 16 random bytes in
//     lower-case hex (32 characters), so an id is never a path. A --session
//     argument with a path separator or control characters is invalid (exit
//     2); any other string that is not such an id cannot name a session and
//     is not found (exit 3), without touching the file system.
//   - "Is pid that session's daemon?" is answered by /proc/<pid>/cmdline
//     holding "session", "serve" and the id, so a recycled pid is never
//     signalled.

const sessionsDir = "sessions"

// sessionInfo is <id>.json, and one entry of `session list --json`.
type sessionInfo struct {
	ID          string      `json:"session_id"`
	PID         int         `json:"pid"`
	Socket      string      `json:"socket"`
	Model       string      `json:"model"`
	WeightsCID  string      `json:"weights_cid,omitempty"`
	Stages      []stageJSON `json:"stages"`
	Created     time.Time   `json:"created"`
	IdleTimeout string      `json:"idle_timeout"`
	Log         string      `json:"log"`
}

// newSessionID returns a fresh session id.
func newSessionID() string { return p2p.NewSessionID().String() }

// isSessionID reports whether s has the session id format.
func isSessionID(s string) bool {
	if len(s) != 2*p2p.SessionIDLen || strings.ToLower(s) != s {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// checkSessionArg sorts a session id given on the command line: a
// malformed one (path separators, control characters, too long) is an
// invalid argument; one without the id format names no session.
func checkSessionArg(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty session id", ErrInvalidArgument)
	case len(s) > 256 || strings.ContainsAny(s, `/\`) || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("%w: malformed session id %q (ids are 32 hex characters)", ErrInvalidArgument, truncateID(s))
	case !isSessionID(s):
		return fmt.Errorf("%w: no session %q (ids are 32 hex characters; see edgellm session list)", ErrNotFound, s)
	}
	return nil
}

func truncateID(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// sessionPaths names one session's files.
type sessionPaths struct{ dir, id string }

func newSessionPaths(dataDir, id string) sessionPaths {
	return sessionPaths{dir: filepath.Join(dataDir, sessionsDir), id: id}
}

func (p sessionPaths) info() string { return filepath.Join(p.dir, p.id+".json") }
func (p sessionPaths) log() string  { return filepath.Join(p.dir, p.id+".log") }

// socket is <dir>/<id>.sock, or <tmp>/edgellm-<uid>/session-<id>.sock when
// that is too long for a unix socket path (sun_path is 108 bytes); the
// daemon makes that directory private (privdir.Ensure), as the backend's
// fallback, so the shared /tmp never holds the socket itself. The record
// names the one in use.
func (p sessionPaths) socket() string {
	const maxSocketPath = 107
	if s := filepath.Join(p.dir, p.id+".sock"); len(s) <= maxSocketPath {
		return s
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("edgellm-%d", os.Geteuid()), "session-"+p.id+".sock")
}

// mkdir creates the sessions directory, private to the user.
func (p sessionPaths) mkdir() error {
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return fmt.Errorf("sessions directory: %w", err)
	}
	return os.Chmod(p.dir, 0o700)
}

// writeInfo writes the record atomically, so a reader never sees half of
// it.
func (p sessionPaths) writeInfo(info *sessionInfo) error {
	data, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(p.info(), append(data, '\n'), 0o600)
}

// readInfo reads the record; fs.ErrNotExist when there is none.
func (p sessionPaths) readInfo() (*sessionInfo, error) {
	data, err := os.ReadFile(p.info())
	if err != nil {
		return nil, err
	}
	var info sessionInfo
	if err := json.Unmarshal(data, &info); err != nil {
		return nil, fmt.Errorf("session record %s: %w", p.info(), err)
	}
	if info.ID != p.id || info.PID <= 0 {
		return nil, fmt.Errorf("session record %s does not describe session %s", p.info(), p.id)
	}
	return &info, nil
}

// removeFiles removes the record, the socket (at socket, if known) and,
// with log set, the log.
func (p sessionPaths) removeFiles(socket string, log bool) {
	_ = os.Remove(p.info())
	if socket == "" {
		socket = p.socket()
	}
	_ = os.Remove(socket)
	if log {
		_ = os.Remove(p.log())
	}
}

// isSessionDaemon reports whether pid is alive and is the daemon of
// session id (not a recycled pid, not a zombie).
func isSessionDaemon(pid int, id string) bool {
	if pid <= 0 || syscall.Kill(pid, 0) == syscall.ESRCH {
		return false
	}
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return false
	}
	args := bytes.Split(bytes.TrimRight(data, "\x00"), []byte{0})
	has := func(s string) bool {
		return slices.ContainsFunc(args, func(a []byte) bool { return string(a) == s })
	}
	return has("session") && has("serve") && has(id)
}

// liveSession returns the record of a running session. A record whose
// daemon is gone is removed and reported as not found.
func liveSession(dataDir, id string) (*sessionInfo, error) {
	if err := checkSessionArg(id); err != nil {
		return nil, err
	}
	p := newSessionPaths(dataDir, id)
	info, err := p.readInfo()
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: no session %s in %s (see edgellm session list)", ErrNotFound, id, p.dir)
	}
	if err != nil {
		return nil, err
	}
	if !isSessionDaemon(info.PID, id) {
		p.removeFiles(info.Socket, false)
		return nil, fmt.Errorf("%w: session %s has ended (its daemon, pid %d, is gone; log %s)", ErrNotFound, id, info.PID, p.log())
	}
	return info, nil
}

// listSessions returns every live session, oldest first, and removes the
// records of dead ones.
func listSessions(dataDir string) ([]*sessionInfo, error) {
	dir := filepath.Join(dataDir, sessionsDir)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*sessionInfo
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !isSessionID(id) {
			continue
		}
		info, err := liveSession(dataDir, id)
		if err != nil {
			continue // stale (removed) or unreadable
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b *sessionInfo) int { return a.Created.Compare(b.Created) })
	return out, nil
}
