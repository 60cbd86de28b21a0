package openai

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// generation is one validated request on its way to the engine.
type generation struct {
	id           string // chatcmpl-… / cmpl-…; also the backend's request id
	model        Model
	created      time.Time // arrival; "created" in every object, and TTFT's start
	req          *pb.GenerateRequest
	stream       bool
	includeUsage bool
	frames       framer
}

// framer builds one endpoint's response objects.
type framer interface {
	// first is the event that opens a stream (chat: the role delta); nil
	// for none.
	first() any
	// text is a streamed event carrying text.
	text(s string) any
	// finish is the streamed event carrying the finish reason.
	finish(reason string) any
	// usage is the extra last event that include_usage asks for.
	usage(u usage) any
	// whole is the answer of a request that did not stream.
	whole(text, reason string, u usage) any
}

// outcome accumulates a generation's responses.
type outcome struct {
	text   strings.Builder
	finish pb.FinishReason
	usage  *pb.Usage
	batch  uint32 // Timings.max_batch of the last response
	clock  tokenClock
}

func (o *outcome) add(resp *pb.GenerateResponse) {
	if len(resp.GetTokenIds()) > 0 || resp.GetText() != "" {
		o.clock.tick(time.Now())
	}
	o.text.WriteString(resp.GetText())
	if resp.GetFinishReason() != pb.FinishReason_FINISH_REASON_UNSPECIFIED {
		o.finish = resp.GetFinishReason()
	}
	if resp.GetUsage() != nil {
		o.usage = resp.GetUsage()
	}
	if b := resp.GetTimings().GetMaxBatch(); b > 0 {
		o.batch = b
	}
}

// finishReason maps the backend's reason to OpenAI's: a stop string is a
// "stop" there. A generation that ended without one (an engine that broke
// its contract) is reported as "stop" rather than failing a whole answer.
func (o *outcome) finishReason() string {
	if o.finish == pb.FinishReason_FINISH_REASON_LENGTH {
		return "length"
	}
	return "stop"
}

func (o *outcome) openaiUsage() usage {
	u := o.usage
	return usage{
		PromptTokens:        u.GetPromptTokens(),
		CompletionTokens:    u.GetCompletionTokens(),
		TotalTokens:         u.GetPromptTokens() + u.GetCompletionTokens(),
		PromptTokensDetails: promptDetail{CachedTokens: u.GetCachedPromptTokens()},
	}
}

// generate queues g behind its model's running generations, runs it, and
// answers: one JSON object, or a stream of events.
func (s *Server) generate(w http.ResponseWriter, r *http.Request, g *generation) {
	release, err := s.queues.acquire(r.Context(), g.model.ID)
	if errors.Is(err, errQueueFull) {
		s.writeError(w, r, queueFull(g.model.ID, s.opts.RetryAfter))
		return
	}
	if err != nil { // the client left while waiting; it reads nothing more
		w.WriteHeader(statusClientClosed)
		return
	}
	defer release()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	out := &outcome{clock: tokenClock{start: g.created}}
	if g.stream {
		s.runStreamed(ctx, cancel, w, r, g, out)
	} else {
		s.runWhole(ctx, w, r, g, out)
	}
}

// run calls the engine and records the generation's metrics.
func (s *Server) run(ctx context.Context, r *http.Request, g *generation, out *outcome,
	onResp func(*pb.GenerateResponse) error) error {
	route, err := s.engine.Generate(ctx, g.req, onResp)
	info := infoFrom(r.Context())
	if route != "" {
		info.route = route
	}
	s.metrics.observeLatency(g.model.ID, info.route, &out.clock)
	s.metrics.observeBatch(g.model.ID, info.route, out.batch)
	if out.usage != nil {
		s.metrics.observeUsage(g.model.ID, out.openaiUsage())
	}
	return err
}

func (s *Server) runWhole(ctx context.Context, w http.ResponseWriter, r *http.Request, g *generation, out *outcome) {
	err := s.run(ctx, r, g, out, func(resp *pb.GenerateResponse) error {
		out.add(resp)
		return nil
	})
	if err != nil {
		s.generationFailed(w, r, g, err)
		return
	}
	s.writeJSON(w, http.StatusOK, g.frames.whole(out.text.String(), out.finishReason(), out.openaiUsage()))
}

// runStreamed streams the generation. A failed write (the client went away
// or stopped reading) cancels ctx at once, so the engine aborts and the
// slot frees without waiting for the engine to notice the callback's error.
func (s *Server) runStreamed(ctx context.Context, cancel context.CancelFunc, w http.ResponseWriter,
	r *http.Request, g *generation, out *outcome) {
	sse := newSSEWriter(w, s.opts.WriteTimeout)
	var writeErr error
	err := s.run(ctx, r, g, out, func(resp *pb.GenerateResponse) error {
		out.add(resp)
		if writeErr = streamResponse(sse, g.frames, resp); writeErr != nil {
			cancel()
		}
		return writeErr
	})
	if err == nil {
		writeErr = finishStream(sse, g, out)
		err = writeErr
	}
	switch {
	case err == nil:
	case !sse.started:
		s.generationFailed(w, r, g, err)
	case writeErr != nil || clientGone(r):
		s.log.DebugContext(r.Context(), "stream cut: client gone or not reading", "id", g.id, "err", err)
	default:
		// The 200 is sent: the error goes in the stream, where OpenAI's
		// clients raise it, and the stream ends without [DONE].
		ae := engineError(err, g.id, s.opts.RetryAfter)
		s.logError(w, r, ae)
		_ = sse.send(ae.body())
	}
}

// streamResponse sends the events for one engine response: the opening
// event before the first, then its text if it has any (a response may
// carry none while a multi-byte character or a possible stop string is
// pending).
func streamResponse(sse *sseWriter, f framer, resp *pb.GenerateResponse) error {
	if err := openStream(sse, f); err != nil {
		return err
	}
	if resp.GetText() == "" {
		return nil
	}
	return sse.send(f.text(resp.GetText()))
}

// openStream commits the 200 and sends the opening event, once.
func openStream(sse *sseWriter, f framer) error {
	if sse.started {
		return nil
	}
	sse.start()
	if ev := f.first(); ev != nil {
		return sse.send(ev)
	}
	return nil
}

// finishStream sends the finish reason, the usage when asked, and [DONE]
// (after the opening event, should the engine have sent no response).
func finishStream(sse *sseWriter, g *generation, out *outcome) error {
	if err := openStream(sse, g.frames); err != nil {
		return err
	}
	if err := sse.send(g.frames.finish(out.finishReason())); err != nil {
		return err
	}
	if g.includeUsage {
		if err := sse.send(g.frames.usage(out.openaiUsage())); err != nil {
			return err
		}
	}
	return sse.done()
}

// generationFailed answers an engine error before any byte was sent.
func (s *Server) generationFailed(w http.ResponseWriter, r *http.Request, g *generation, err error) {
	if clientGone(r) {
		s.log.DebugContext(r.Context(), "client left", "id", g.id, "err", err)
		w.WriteHeader(statusClientClosed)
		return
	}
	s.writeError(w, r, engineError(err, g.id, s.opts.RetryAfter))
}
