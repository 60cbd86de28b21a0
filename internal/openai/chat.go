package openai

import (
	"net/http"
	"time"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// chatCompletions serves POST /v1/chat/completions.
func (s *Server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	created := time.Now()
	id := requestID(w, "chatcmpl-")
	var req chatRequest
	if aerr := decodeBody(w, r, s.opts.MaxBodyBytes, chatRequestSchema, &req); aerr != nil {
		s.writeError(w, r, aerr)
		return
	}
	model, aerr := s.lookupModel(r, req.Model, id)
	if aerr != nil {
		s.writeError(w, r, aerr)
		return
	}
	input := chatInput(req.Messages)
	maxTokens, maxParam := maxTokensParam(&req)
	if aerr := overCap(req.MaxTokens, "max_tokens", s.opts.MaxCompletionTokens); aerr != nil {
		s.writeError(w, r, aerr) // the field max_completion_tokens overrides is still bounded
		return
	}
	params, aerr := sampling(&req.samplingFields, maxTokens, maxParam, model, s.opts.MaxCompletionTokens)
	if aerr != nil {
		s.writeError(w, r, aerr)
		return
	}
	g := newGeneration(id, model, created, &req.samplingFields,
		&pb.GenerateRequest{RequestId: id, Model: model.ID, Input: input, Sampling: params})
	g.frames = chatFramer{header: header{
		ID: id, Object: "chat.completion.chunk", Created: created.Unix(), Model: model.ID,
		SystemFingerprint: model.WeightsCID,
	}}
	s.generate(w, r, g)
}

func newGeneration(id string, m Model, created time.Time, f *samplingFields, req *pb.GenerateRequest) *generation {
	stream := f.Stream != nil && *f.Stream
	return &generation{
		id:      id,
		model:   m,
		created: created,
		req:     req,
		stream:  stream,
		includeUsage: stream && f.StreamOptions != nil && f.StreamOptions.IncludeUsage != nil &&
			*f.StreamOptions.IncludeUsage,
	}
}

// chatFramer builds chat.completion and chat.completion.chunk objects.
type chatFramer struct {
	header header // with the chunk object name
}

func (f chatFramer) chunk(d delta, reason *string) chatChunk {
	return chatChunk{header: f.header, Choices: []chunkChoice{{Delta: d, FinishReason: reason}}}
}

// first opens the stream as OpenAI does: the role, with empty content.
func (f chatFramer) first() any {
	return f.chunk(delta{Role: "assistant", Content: new("")}, nil)
}

func (f chatFramer) text(s string) any {
	return f.chunk(delta{Content: &s}, nil)
}

func (f chatFramer) finish(reason string) any {
	return f.chunk(delta{}, &reason)
}

func (f chatFramer) usage(u usage) any {
	return chatChunk{header: f.header, Choices: []chunkChoice{}, Usage: &u}
}

func (f chatFramer) whole(text, reason string, u usage) any {
	h := f.header
	h.Object = "chat.completion"
	return chatCompletion{
		header: h,
		Choices: []chatChoice{{
			Message:      assistantMessage{Role: "assistant", Content: text},
			FinishReason: reason,
		}},
		Usage: u,
	}
}
