package ipfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// startLockFile sits in the repository beside Kubo's own repo.lock. Kubo
// takes repo.lock only once the daemon runs, too late to keep two starts
// apart.
const startLockFile = "edgellm-start.lock"

// startLockPoll is how often a waiting start tries the lock again.
const startLockPoll = 50 * time.Millisecond

// lockStart serialises starts on one repository across processes. Two
// edgellm commands started at once on a fresh data directory would otherwise
// both run `ipfs init` (the later one fails: "configuration file already
// exists") and both spawn a daemon (the later one fails on repo.lock). The
// lock is held from the check for a running daemon until a started daemon's
// API answers, so the later command finds it and attaches. It is an flock,
// so a start killed while holding it releases it.
func lockStart(ctx context.Context, repoDir string) (unlock func(), err error) {
	if err := os.MkdirAll(repoDir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(repoDir, startLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing the file drops the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		timer := time.NewTimer(startLockPoll)
		select {
		case <-ctx.Done():
			timer.Stop()
			f.Close()
			return nil, fmt.Errorf("another start holds %s: %w", path, context.Cause(ctx))
		case <-timer.C:
		}
	}
}
