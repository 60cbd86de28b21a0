package batch

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// Output is one output line.
type Output struct {
	ID       string    `json:"id"`
	CustomID string    `json:"custom_id"`
	Response *Response `json:"response"`
	Error    *Error    `json:"error"`
}

// Response is serve's answer to a line.
type Response struct {
	StatusCode int             `json:"status_code"`
	RequestID  string          `json:"request_id"`
	Body       json.RawMessage `json:"body"`
}

// Error is why a line got no answer from serve.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// OK reports whether the line succeeded: serve answered it with a 2xx.
func (o *Output) OK() bool {
	return o.Error == nil && o.Response != nil && o.Response.StatusCode >= 200 && o.Response.StatusCode < 300
}

// newID is an output line's id, "batch_req_" and 24 hex digits.
func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "batch_req_" + hex.EncodeToString(b[:])
}

// Done is what an existing output file already holds.
type Done struct {
	// Lines maps a custom_id to its output line (duplicates' error lines
	// excluded).
	Lines map[string]Output
	// Duplicates counts the duplicate_custom_id error lines per custom_id.
	Duplicates map[string]int
}

// LoadOutput reads the output lines already in f (open for reading and
// writing). A last line without its newline was cut short by a crash: it is
// truncated away, so the file holds only whole lines. A whole line that is
// not an output line is an error (the file is not this batch's output).
func LoadOutput(f *os.File) (*Done, error) {
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read the output file: %w", err)
	}
	if end := bytes.LastIndexByte(data, '\n') + 1; end < len(data) {
		if err := f.Truncate(int64(end)); err != nil {
			return nil, fmt.Errorf("truncate the output file's cut-off last line: %w", err)
		}
		data = data[:end]
	}
	return ParseOutput(data)
}

// ParseOutput parses output lines.
func ParseOutput(data []byte) (*Done, error) {
	d := &Done{Lines: map[string]Output{}, Duplicates: map[string]int{}}
	for n, line := range bytes.Split(data, []byte{'\n'}) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var o Output
		if err := json.Unmarshal(line, &o); err != nil || o.CustomID == "" || (o.Response == nil) == (o.Error == nil) {
			return nil, fmt.Errorf("output line %d is not a batch output line (another file?)", n+1)
		}
		if o.Error != nil && o.Error.Code == CodeDuplicate {
			d.Duplicates[o.CustomID]++
			continue
		}
		d.Lines[o.CustomID] = o
	}
	return d, nil
}

// Pending is the requests of reqs that have no output line in d yet: each
// custom_id without one, and each duplicate beyond those already reported.
func Pending(reqs []Request, d *Done) []Request {
	var out []Request
	dups := map[string]int{}
	for _, r := range reqs {
		if r.Err != nil && r.Err.Code == CodeDuplicate {
			dups[r.CustomID]++
			if dups[r.CustomID] > d.Duplicates[r.CustomID] {
				out = append(out, r)
			}
			continue
		}
		if _, done := d.Lines[r.CustomID]; !done {
			out = append(out, r)
		}
	}
	return out
}
