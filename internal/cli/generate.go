package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/edgellm/edgellm/internal/backend"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// inferResult is the --json output of infer.
type inferResult struct {
	Text              string  `json:"text"`
	Model             string  `json:"model"`
	WeightsCID        string  `json:"weights_cid"`
	RequestID         string  `json:"request_id"`
	PromptTokens      uint32  `json:"prompt_tokens"`
	CompletionTokens  uint32  `json:"completion_tokens"`
	FinishReason      string  `json:"finish_reason"`
	TTFTMs            float64 `json:"ttft_ms"`
	TokensPerS        float64 `json:"tokens_per_s"`
	PrefillTokensPerS float64 `json:"prefill_tokens_per_s"`
	TotalMs           float64 `json:"total_ms"`
	// CachedPromptTokens: prompt tokens whose KV came from cached blocks
	// (in a P/D run: the decode worker took them from the prefill worker's).
	CachedPromptTokens uint32 `json:"cached_prompt_tokens"`
	// CachedFrom are the peers whose KV blocks the swarm lookup found for
	// this prompt (the requester's manifest); absent when none.
	CachedFrom []string `json:"cached_from,omitempty"`
	// KVFetchMs: fetching, checking and importing KV blocks; KVStoreMs:
	// storing the prompt's blocks (in a P/D run, on the prefill worker).
	KVFetchMs float64 `json:"kv_fetch_ms"`
	KVStoreMs float64 `json:"kv_store_ms"`
	// TokenIDs are the generated token ids, in order.
	TokenIDs []uint32 `json:"token_ids"`
	// Mode is how a swarm run was planned: "pipeline" (one worker or a
	// split), "pd" (prefill/decode forced by --prefill-peer/--decode-peer)
	// or "pd_planner" (prefill/decode the planner chose for this prompt,
	// planner.ChooseMode); absent for a local run.
	Mode string `json:"mode,omitempty"`
	// Stages says which worker ran which layers; absent for a local run.
	Stages []stageJSON `json:"stages,omitempty"`
	// PhasesMs: milliseconds of forming the cluster, by phase (see
	// swarmCluster.Phases); absent for a local run. The first token's model
	// loads and prefill are in ttft_ms.
	PhasesMs map[string]float64 `json:"phases_ms,omitempty"`
}

// finishReasons names FinishReason values as in OpenAI's API, plus
// stop_string for a --stop match.
var finishReasons = map[pb.FinishReason]string{
	pb.FinishReason_FINISH_REASON_STOP:        "stop",
	pb.FinishReason_FINISH_REASON_LENGTH:      "length",
	pb.FinishReason_FINISH_REASON_STOP_STRING: "stop_string",
}

// record takes what a streamed response adds: text, and on the last one the
// finish reason, usage and timings.
func (r *inferResult) record(resp *pb.GenerateResponse, text *strings.Builder) {
	text.WriteString(resp.GetText())
	r.TokenIDs = append(r.TokenIDs, resp.GetTokenIds()...)
	if fr := resp.GetFinishReason(); fr != pb.FinishReason_FINISH_REASON_UNSPECIFIED {
		r.FinishReason = finishReasons[fr]
	}
	if u := resp.GetUsage(); u != nil {
		r.PromptTokens, r.CompletionTokens = u.GetPromptTokens(), u.GetCompletionTokens()
		r.CachedPromptTokens = u.GetCachedPromptTokens()
	}
	if t := resp.GetTimings(); t != nil {
		r.TTFTMs, r.TokensPerS = t.GetTtftMs(), t.GetDecodeTokensPerS()
		r.PrefillTokensPerS, r.TotalMs = t.GetPrefillTokensPerS(), t.GetTotalMs()
		r.KVFetchMs, r.KVStoreMs = t.GetKvFetchMs(), t.GetKvStoreMs()
	}
}

// generate streams one generation; text goes to stdout as it arrives unless
// jsonOut. On Ctrl-C it aborts the request and returns ErrInterrupted.
func (app *App) generate(ctx context.Context, b backend.Backend, req *pb.GenerateRequest, jsonOut bool) (*inferResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := app.abortOnInterrupt(cancel, b, req.GetRequestId())
	defer stop()
	res := &inferResult{Model: req.GetModel(), RequestID: req.GetRequestId(), TokenIDs: []uint32{}}
	var text strings.Builder
	err := b.Generate(ctx, req, func(resp *pb.GenerateResponse) error {
		res.record(resp, &text)
		if jsonOut || resp.GetText() == "" {
			return nil
		}
		_, err := io.WriteString(app.stdout, resp.GetText()) // unbuffered: one write per token
		return err
	})
	if !jsonOut && (err == nil || text.Len() > 0) {
		fmt.Fprintln(app.stdout)
	}
	if app.interrupt.Err() != nil {
		return nil, fmt.Errorf("%w: generation aborted", ErrInterrupted)
	}
	if err != nil {
		return nil, err
	}
	res.Text = text.String()
	return res, nil
}

// abortOnInterrupt sends Abort for the request on Ctrl-C, and cancels the
// stream if it has not ended abortGrace later. Call the returned stop once
// the generation has ended.
func (app *App) abortOnInterrupt(cancel context.CancelFunc, b backend.Backend, requestID string) (stop func()) {
	done := make(chan struct{})
	go func() {
		select {
		case <-done:
			return
		case <-app.interrupt.Done():
		}
		ctx, cancelAbort := context.WithTimeout(context.Background(), abortGrace)
		defer cancelAbort()
		if _, err := b.Abort(ctx, requestID); err != nil {
			app.log.Warn("abort failed; cancelling the stream", "err", err)
			cancel()
			return
		}
		select {
		case <-done:
		case <-ctx.Done():
			cancel()
		}
	}()
	return func() { close(done) }
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
