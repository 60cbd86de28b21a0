package ipfs

import (
	"bytes"
	"sync"
)

// maxLineBytes caps one stored line of the daemon's output.
const maxLineBytes = 2048

// lineTail is an io.Writer that keeps the last n lines written to it (plus
// an unfinished last one), for start errors. Safe for concurrent use.
type lineTail struct {
	mu      sync.Mutex
	n       int
	lines   []string
	partial []byte
}

func newLineTail(n int) *lineTail { return &lineTail{n: max(n, 1)} }

// Write stores p, split into lines. It never fails.
func (t *lineTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rest := p
	for len(rest) > 0 {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			t.partial = append(t.partial, rest[:min(len(rest), maxLineBytes-len(t.partial))]...)
			break
		}
		line := append(t.partial, rest[:i]...)
		t.partial = nil
		t.push(string(line[:min(len(line), maxLineBytes)]))
		rest = rest[i+1:]
	}
	return len(p), nil
}

func (t *lineTail) push(line string) {
	if len(bytes.TrimSpace([]byte(line))) == 0 {
		return // Kubo prints blank lines around its warnings
	}
	if len(t.lines) == t.n {
		copy(t.lines, t.lines[1:])
		t.lines = t.lines[:t.n-1]
	}
	t.lines = append(t.lines, line)
}

// Lines returns the stored lines, oldest first.
func (t *lineTail) Lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := append([]string(nil), t.lines...)
	if len(t.partial) > 0 {
		out = append(out, string(t.partial))
	}
	return out
}
