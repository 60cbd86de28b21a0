package localnode

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// maxLog is the size at which the backend and IPFS logs are rotated to .1.
const maxLog = 10 << 20

// rotatingLog is a log file that rotates to <path>.1 whenever a write would
// take it past maxLog, while the child writing it runs.
//
// Decision (hardening, crash safety): the log was rotated only when a
// command started, so a worker that ran for weeks grew its logs without
// bound. Being an io.Writer and not an *os.File, it makes exec copy the
// child's output through a pipe, so the node sees every write and can
// rotate between them (one goroutine per child; lines are never split by a
// rotation, as a write is one pipe read).
type rotatingLog struct {
	mu   sync.Mutex
	path string
	f    *os.File
	size int64
}

// openLog opens a log for appending, rotating it first when large.
func openLog(path string) (*rotatingLog, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("log directory: %w", err)
	}
	l := &rotatingLog{path: path}
	if fi, err := os.Stat(path); err == nil && fi.Size() > maxLog {
		_ = os.Rename(path, path+".1") // best effort: appending works either way
	}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *rotatingLog) open() error {
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("log %s: %w", l.path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("log %s: %w", l.path, err)
	}
	l.f, l.size = f, fi.Size()
	return nil
}

// Write appends p, rotating first when p would take the log past maxLog.
func (l *rotatingLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return 0, os.ErrClosed
	}
	if l.size > 0 && l.size+int64(len(p)) > maxLog {
		l.f.Close()
		_ = os.Rename(l.path, l.path+".1") // best effort, as at start
		if err := l.open(); err != nil {
			l.f = nil
			return 0, err
		}
	}
	n, err := l.f.Write(p)
	l.size += int64(n)
	return n, err
}

// WriteString is Write of a string.
func (l *rotatingLog) WriteString(s string) (int, error) { return l.Write([]byte(s)) }

// Close closes the file; later writes fail with os.ErrClosed.
func (l *rotatingLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
