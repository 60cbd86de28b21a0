package batch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/edgellm/edgellm/internal/apiclient"
)

// Sink is where output lines go: the output file, appended to and synced
// after each line.
type Sink interface {
	Write(p []byte) (int, error)
	Sync() error
}

// Options configure Run.
type Options struct {
	Client      *apiclient.Client
	Concurrency int // requests in flight at most (at least 1)
	// OnLine is called (from one goroutine) after each line is written.
	OnLine func(o Output)
	// MaxRetries bounds the retries of a request serve answered 429 (queue
	// full); 0 means the default.
	MaxRetries int
}

// Summary is what one Run did.
type Summary struct {
	Succeeded, Failed int // lines written this run
	// NotRun counts requests that got no line: interrupted, or serve
	// unreachable. A rerun runs them.
	NotRun int
}

// ErrUnreachable: serve could not be reached; the batch stopped starting
// requests.
var ErrUnreachable = errors.New("serve unreachable")

const defaultRetries = 8

// Run sends reqs to serve, at most opts.Concurrency at a time, and writes one
// line to sink for each that completed (lines that cannot run first). When
// ctx ends it starts no more requests and aborts the running ones (they get
// no line) and returns ctx's error. When serve cannot be reached it stops
// the same way and returns ErrUnreachable. A failed write is returned too.
func Run(ctx context.Context, reqs []Request, sink Sink, opts Options) (Summary, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if opts.Concurrency < 1 {
		opts.Concurrency = 1
	}
	if opts.MaxRetries == 0 {
		opts.MaxRetries = defaultRetries
	}
	var sum Summary
	var writeErr error
	write := func(o Output) {
		if writeErr != nil {
			return
		}
		line, err := json.Marshal(o)
		if err == nil {
			_, err = sink.Write(append(line, '\n'))
		}
		if err == nil {
			err = sink.Sync()
		}
		if err != nil {
			writeErr = fmt.Errorf("write the output file: %w", err)
			cancel(writeErr)
			return
		}
		if o.OK() {
			sum.Succeeded++
		} else {
			sum.Failed++
		}
		if opts.OnLine != nil {
			opts.OnLine(o)
		}
	}
	var runnable []Request
	for _, r := range reqs {
		if r.Err != nil {
			write(Output{ID: newID(), CustomID: r.CustomID, Error: r.Err})
		} else {
			runnable = append(runnable, r)
		}
	}

	results := make(chan *Output)
	jobs := make(chan Request)
	var wg sync.WaitGroup
	for range min(opts.Concurrency, len(runnable)) {
		wg.Go(func() {
			for r := range jobs {
				o, err := send(ctx, opts, r)
				if err != nil {
					if ctx.Err() == nil {
						cancel(fmt.Errorf("%w: %w", ErrUnreachable, err))
					}
					o = nil
				}
				results <- o
			}
		})
	}
	go func() {
		defer close(jobs)
		for _, r := range runnable {
			select {
			case jobs <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { wg.Wait(); close(results) }()
	got := 0
	for o := range results {
		got++
		if o == nil {
			sum.NotRun++
			continue
		}
		write(*o)
	}
	sum.NotRun += len(runnable) - got
	if writeErr != nil {
		return sum, writeErr
	}
	if err := context.Cause(ctx); err != nil && (sum.NotRun > 0 || errors.Is(err, ErrUnreachable)) {
		return sum, err
	}
	return sum, nil
}

// send runs one request, retrying while serve's queue is full (429). A
// transport error (or ctx ending) is returned; any HTTP answer is a line.
func send(ctx context.Context, opts Options, r Request) (*Output, error) {
	for attempt := 0; ; attempt++ {
		resp, err := opts.Client.Do(ctx, http.MethodPost, r.URL, r.Body)
		if err != nil {
			return nil, err
		}
		if resp.Status == http.StatusTooManyRequests && attempt < opts.MaxRetries {
			wait := max(resp.RetryAfter, 500*time.Millisecond)
			select {
			case <-time.After(wait):
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		body := json.RawMessage(resp.Body)
		if !json.Valid(body) {
			b, _ := json.Marshal(string(resp.Body)) // keep a non-JSON answer as a string
			body = b
		}
		return &Output{ID: newID(), CustomID: r.CustomID,
			Response: &Response{StatusCode: resp.Status, RequestID: resp.RequestID, Body: body}}, nil
	}
}
