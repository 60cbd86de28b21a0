package openai

import (
	"math"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// backendDefaultMaxTokens is what the backend generates at most when a
// request names no limit (clamped to the context window).
const backendDefaultMaxTokens = 256

// roles maps the API's message roles to the backend's; OpenAI's newer
// "developer" role is the system prompt under another name.
var roles = map[string]string{
	"system":    "system",
	"developer": "system",
	"user":      "user",
	"assistant": "assistant",
}

// chatInput converts validated messages for the backend. (The schema has
// already refused a conversation with no text, as the backend would.)
func chatInput(msgs []chatMessage) *pb.GenerateRequest_Messages {
	out := make([]*pb.ChatMessage, len(msgs))
	for i, m := range msgs {
		out[i] = &pb.ChatMessage{Role: roles[m.Role], Content: string(m.Content)}
	}
	return &pb.GenerateRequest_Messages{Messages: &pb.ChatMessages{Messages: out}}
}

// sampling converts the validated sampling fields. maxTokens is the
// effective limit (max_completion_tokens over max_tokens for chat) and
// maxParam the field it came from, for the error when it cannot fit the
// model's context window.
func sampling(f *samplingFields, maxTokens *int32, maxParam string, m Model, capTokens int) (*pb.SamplingParams, *apiError) {
	if aerr := overCap(maxTokens, maxParam, capTokens); aerr != nil {
		return nil, aerr
	}
	if capTokens > 0 && capTokens < backendDefaultMaxTokens && maxTokens == nil {
		limit := int32(capTokens)
		maxTokens = &limit
	}
	if maxTokens != nil && m.ContextLength > 0 && int(*maxTokens) >= m.ContextLength {
		return nil, invalidRequest(maxParam, "integer_above_max_value",
			"Invalid '%s': %d leaves no room for the prompt: model '%s' has a context window of %d tokens "+
				"(prompt plus completion).", maxParam, *maxTokens, m.ID, m.ContextLength)
	}
	p := &pb.SamplingParams{MaxTokens: maxTokens, TopK: f.TopK, Stop: f.Stop}
	if f.Temperature != nil {
		t := float32(*f.Temperature)
		p.Temperature = &t
	}
	if f.TopP != nil {
		p.TopP = positiveFloat32(*f.TopP)
	}
	if f.Seed != nil {
		// The backend's seed is unsigned; OpenAI's is signed. Reinterpreting
		// the bits keeps every seed distinct and reproducible.
		s := uint64(*f.Seed)
		p.Seed = &s
	}
	return p, nil
}

// overCap refuses a token limit above the node's cap (0: none); the served
// document states the cap as the bound of every such field.
func overCap(v *int32, param string, capTokens int) *apiError {
	if capTokens > 0 && v != nil && int(*v) > capTokens {
		return invalidRequest(param, "integer_above_max_value",
			"Invalid '%s': %d is above this node's limit of %d tokens per request.", param, *v, capTokens)
	}
	return nil
}

// positiveFloat32 narrows a positive float64 without letting it round to 0,
// which the backend would refuse for top_p although the request was valid.
func positiveFloat32(v float64) *float32 {
	f := float32(v)
	if f == 0 && v > 0 {
		f = math.SmallestNonzeroFloat32
	}
	return &f
}

// maxTokensParam picks a chat request's completion limit: OpenAI's newer
// max_completion_tokens wins over max_tokens.
func maxTokensParam(r *chatRequest) (*int32, string) {
	if r.MaxCompletionTokens != nil {
		return r.MaxCompletionTokens, "max_completion_tokens"
	}
	return r.MaxTokens, "max_tokens"
}
