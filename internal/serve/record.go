package serve

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/edgellm/edgellm/internal/atomicfile"
)

// The record of a running serve: <data-dir>/run/serve.json.
//
// Decisions:
//   - serve writes it atomically once its HTTP listener and its socket are up,
//     and removes it first thing when it stops, so a reader either finds a
//     serve that answers or none. It is how `edgellm infer` knows to send its
//     request to the running node instead of starting a backend of its own,
//     and how scripts and tests learn the port of `--listen 127.0.0.1:0`.
//   - The socket serves the backend's own Inference gRPC service (Generate,
//     Abort) routed exactly as an HTTP request is, so infer streams through
//     serve with the same client, output and exit codes as through a backend.
//   - "Is pid a serve?" is answered by /proc/<pid>/cmdline holding the
//     argument "serve", so a recycled pid is not trusted; a stale record is
//     removed by whoever finds it.

// RecordFile is the record's name in the data directory's run/ folder.
const RecordFile = "serve.json"

// SocketFile is the gRPC Inference socket's name in run/.
const SocketFile = "serve.sock"

// Record describes a running serve.
type Record struct {
	PID     int           `json:"pid"`
	URL     string        `json:"url"`
	Socket  string        `json:"socket"`
	Models  []RecordModel `json:"models"`
	Started time.Time     `json:"started"`
}

// RecordModel is one model the serve answers for.
type RecordModel struct {
	ID         string `json:"id"`
	WeightsCID string `json:"weights_cid"`
}

// RunDir is the folder of a data directory that holds the record and socket.
func RunDir(dataDir string) string { return filepath.Join(dataDir, "run") }

// WriteRecord writes r atomically into dataDir's run/ folder (mode 0600).
func WriteRecord(dataDir string, r *Record) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(RunDir(dataDir), RecordFile), append(data, '\n'), 0o600)
}

// RemoveRecord removes the record (first, when serve stops).
func RemoveRecord(dataDir string) {
	_ = os.Remove(filepath.Join(RunDir(dataDir), RecordFile))
}

// ErrNotRunning: no serve runs on the data directory.
var ErrNotRunning = errors.New("no serve runs on this data directory")

// Running returns the record of the serve running on dataDir, or
// ErrNotRunning. A record whose process is gone (or is not a serve) is
// stale: it is removed.
func Running(dataDir string) (*Record, error) {
	path := filepath.Join(RunDir(dataDir), RecordFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotRunning
	}
	if err != nil {
		return nil, fmt.Errorf("serve record: %w", err)
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil || r.PID <= 0 || r.Socket == "" {
		return nil, fmt.Errorf("serve record %s is not valid; remove it if no serve runs", path)
	}
	if !isServe(r.PID) {
		_ = os.Remove(path)
		return nil, ErrNotRunning
	}
	return &r, nil
}

// isServe reports whether pid is alive and its command line is an edgellm
// serve (not a recycled pid).
func isServe(pid int) bool {
	if syscall.Kill(pid, 0) == syscall.ESRCH {
		return false
	}
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return false
	}
	args := bytes.Split(bytes.TrimRight(data, "\x00"), []byte{0})
	return slices.ContainsFunc(args, func(a []byte) bool { return string(a) == "serve" })
}
