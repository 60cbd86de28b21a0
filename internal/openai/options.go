package openai

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Defaults for the zero values of Options.
const (
	DefaultMaxBodyBytes      = 4 << 20 // 4 MiB: long prompts fit, a flood does not
	DefaultMaxConcurrent     = 1       // serve sets the backend's max_batch
	DefaultMaxQueue          = 32
	DefaultRetryAfter        = time.Second
	DefaultWriteTimeout      = 30 * time.Second
	DefaultReadyTimeout      = 5 * time.Second
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 60 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
)

// ErrInvalidOption reports an Options field New cannot use.
var ErrInvalidOption = errors.New("openai: invalid option")

// Options configure a Server. The zero value of every field means its
// default.
type Options struct {
	// APIKey, when set, is required as "Authorization: Bearer <key>" on
	// every /v1/ route (401 otherwise). /health, /ready, /metrics and
	// /openapi.json never need it.
	APIKey string

	// MaxBodyBytes caps a request body (413 beyond). Default 4 MiB.
	MaxBodyBytes int64

	// MaxConcurrent is how many generations of one model run at once;
	// more wait in the model's FIFO queue. Default 1.
	MaxConcurrent int
	// MaxQueue is how many requests per model may wait (the --max-queue
	// flag); one more gets 429 with Retry-After. Default 32; negative means
	// none wait: a request that cannot run at once gets 429.
	MaxQueue int
	// RetryAfter is what a 429 tells the client to wait. Default 1s.
	RetryAfter time.Duration

	// MaxCompletionTokens, when set, is the most tokens one request may ask
	// for (the operator's cap: larger is a 400) and the limit of a request
	// that names none, when it is below the backend's default of 256. The
	// served document's bound says so. Default 0: only the context window
	// limits.
	MaxCompletionTokens int
	// ModelIDs, when set, are the model ids the served document lists as
	// the only values of "model" (a client or a fuzzer learns what the node
	// serves from the document); an id outside them is still a 404.
	ModelIDs []string

	// WriteTimeout bounds each write of an answer: one streamed event, or a
	// whole JSON body. It is per write, not per response (unlike
	// http.Server.WriteTimeout, which would cut long streams): a client
	// that stops reading loses its stream and its generation slot after
	// this long. Default 30s.
	WriteTimeout time.Duration
	// ReadyTimeout bounds Engine.Ready for one /ready call. Default 5s.
	ReadyTimeout time.Duration

	// Timeouts of the http.Server that NewHTTPServer builds.
	//
	// ReadHeaderTimeout cuts a client that is slow to send its request
	// headers (default 10s); ReadTimeout bounds reading a whole request,
	// body included (default 60s; 4 MiB at well under 1 Mbit/s);
	// IdleTimeout closes a keep-alive connection idle this long (default
	// 120s).
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	IdleTimeout       time.Duration

	// Metrics receives the API's series; serve creates it to set the
	// node-wide ones too. Default: a new Metrics.
	Metrics *Metrics
	// Logger gets 5xx errors (with their causes) and debug events.
	// Default: slog.Default().
	Logger *slog.Logger
}

// withDefaults fills zero values and checks the rest.
func (o Options) withDefaults() (Options, error) {
	for name, v := range map[string]int64{
		"MaxBodyBytes": o.MaxBodyBytes, "MaxConcurrent": int64(o.MaxConcurrent),
		"RetryAfter": int64(o.RetryAfter), "WriteTimeout": int64(o.WriteTimeout),
		"ReadyTimeout": int64(o.ReadyTimeout), "ReadHeaderTimeout": int64(o.ReadHeaderTimeout),
		"ReadTimeout": int64(o.ReadTimeout), "IdleTimeout": int64(o.IdleTimeout),
		"MaxCompletionTokens": int64(o.MaxCompletionTokens),
	} {
		if v < 0 {
			return o, fmt.Errorf("%w: %s is negative", ErrInvalidOption, name)
		}
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.MaxConcurrent == 0 {
		o.MaxConcurrent = DefaultMaxConcurrent
	}
	switch {
	case o.MaxQueue == 0:
		o.MaxQueue = DefaultMaxQueue
	case o.MaxQueue < 0:
		o.MaxQueue = 0
	}
	def(&o.RetryAfter, DefaultRetryAfter)
	def(&o.WriteTimeout, DefaultWriteTimeout)
	def(&o.ReadyTimeout, DefaultReadyTimeout)
	def(&o.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&o.ReadTimeout, DefaultReadTimeout)
	def(&o.IdleTimeout, DefaultIdleTimeout)
	if o.Metrics == nil {
		o.Metrics = NewMetrics()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}
