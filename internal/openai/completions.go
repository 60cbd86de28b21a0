package openai

import (
	"net/http"
	"time"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// completions serves POST /v1/completions: a raw prompt, no chat template.
func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	created := time.Now()
	id := requestID(w, "cmpl-")
	var req completionRequest
	if aerr := decodeBody(w, r, s.opts.MaxBodyBytes, completionRequestSchema, &req); aerr != nil {
		s.writeError(w, r, aerr)
		return
	}
	model, aerr := s.lookupModel(r, req.Model, id)
	if aerr != nil {
		s.writeError(w, r, aerr)
		return
	}
	input := &pb.GenerateRequest_RawPrompt{RawPrompt: req.Prompt}
	params, aerr := sampling(&req.samplingFields, req.MaxTokens, "max_tokens", model, s.opts.MaxCompletionTokens)
	if aerr != nil {
		s.writeError(w, r, aerr)
		return
	}
	g := newGeneration(id, model, created, &req.samplingFields,
		&pb.GenerateRequest{RequestId: id, Model: model.ID, Input: input, Sampling: params})
	g.frames = textFramer{header: header{
		ID: id, Object: "text_completion", Created: created.Unix(), Model: model.ID,
		SystemFingerprint: model.WeightsCID,
	}}
	s.generate(w, r, g)
}

// textFramer builds text_completion objects, streamed or whole.
type textFramer struct {
	header header
}

func (f textFramer) first() any { return nil }

func (f textFramer) text(s string) any {
	return textCompletion{header: f.header, Choices: []textChoice{{Text: s}}}
}

func (f textFramer) finish(reason string) any {
	return textCompletion{header: f.header, Choices: []textChoice{{FinishReason: &reason}}}
}

func (f textFramer) usage(u usage) any {
	return textCompletion{header: f.header, Choices: []textChoice{}, Usage: &u}
}

func (f textFramer) whole(text, reason string, u usage) any {
	return textCompletion{header: f.header, Choices: []textChoice{{Text: text, FinishReason: &reason}}, Usage: &u}
}
