package localnode

import (
	"fmt"
	"os"
	"path/filepath"
)

// maxLog is the size at which the backend and IPFS logs are rotated to .1.
const maxLog = 10 << 20

// openLog opens a log for appending, rotating it when large.
func openLog(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("log directory: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Size() > maxLog {
		_ = os.Rename(path, path+".1") // best effort: appending works either way
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("log %s: %w", path, err)
	}
	return f, nil
}
