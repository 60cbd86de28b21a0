// Package linetail keeps the last lines a child process wrote: the stderr
// tail the backend and IPFS supervisors show when a start fails. OneLine
// folds such multi-line text into the one line a message has room for.
package linetail

import (
	"bytes"
	"io"
	"strings"
	"sync"
)

// maxLineBytes caps one stored line so that a process writing megabytes
// without a newline cannot grow the buffer without bound.
const maxLineBytes = 4096

var _ io.Writer = (*Ring)(nil)

// Ring is an io.Writer that keeps the last n complete lines written to it
// (plus the unfinished last one). It is safe for concurrent use.
type Ring struct {
	// SkipBlank drops blank lines (Kubo prints them around its warnings), so
	// they take no room. Set it before the first Write.
	SkipBlank bool

	mu      sync.Mutex
	lines   []string // ring storage, len ≤ n
	next    int      // index the next line goes to once full
	n       int
	partial []byte
}

// New keeps the last n lines (at least one).
func New(n int) *Ring {
	if n < 1 {
		n = 1
	}
	return &Ring{n: n, lines: make([]string, 0, n)}
}

// Write stores p, splitting it into lines. It never fails.
func (r *Ring) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rest := p
	for len(rest) > 0 {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			r.appendPartial(rest)
			break
		}
		r.appendPartial(rest[:i])
		r.push(string(bytes.TrimRight(r.partial, "\r")))
		r.partial = r.partial[:0]
		rest = rest[i+1:]
	}
	return len(p), nil
}

func (r *Ring) appendPartial(b []byte) {
	if room := maxLineBytes - len(r.partial); room < len(b) {
		b = b[:max(room, 0)]
	}
	r.partial = append(r.partial, b...)
}

func (r *Ring) push(line string) {
	if r.SkipBlank && len(bytes.TrimSpace([]byte(line))) == 0 {
		return
	}
	if len(r.lines) < r.n {
		r.lines = append(r.lines, line)
		return
	}
	r.lines[r.next] = line
	r.next = (r.next + 1) % r.n
}

// Lines returns the kept lines, oldest first, including an unfinished last
// line; at most n.
func (r *Ring) Lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.lines)+1)
	out = append(out, r.lines[r.next:]...)
	out = append(out, r.lines[:r.next]...)
	if len(r.partial) > 0 {
		out = append(out, string(r.partial))
	}
	if len(out) > r.n {
		out = out[len(out)-r.n:]
	}
	return out
}

// OneLine joins the non-empty lines of s, each trimmed, with "; ".
func OneLine(s string) string {
	lines := strings.Split(s, "\n")
	kept := lines[:0]
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" {
			kept = append(kept, l)
		}
	}
	return strings.Join(kept, "; ")
}
