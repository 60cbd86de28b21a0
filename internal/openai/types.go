package openai

import (
	"encoding/json"
	"strings"
)

// The wire types of the API. Requests are decoded only after the OpenAPI
// schema accepted them (validate.go), so these types carry no checks of
// their own; the union fields (stop, content) only pick their shape.

// samplingFields are the generation parameters both endpoints share.
type samplingFields struct {
	Model         string         `json:"model"`
	MaxTokens     *int32         `json:"max_tokens"`
	Temperature   *float64       `json:"temperature"`
	TopP          *float64       `json:"top_p"`
	TopK          *int32         `json:"top_k"`
	Seed          *int64         `json:"seed"`
	Stop          stopList       `json:"stop"`
	N             *int           `json:"n"`
	Stream        *bool          `json:"stream"`
	StreamOptions *streamOptions `json:"stream_options"`
	User          *string        `json:"user"`
}

type streamOptions struct {
	IncludeUsage *bool `json:"include_usage"`
}

type chatRequest struct {
	samplingFields
	Messages            []chatMessage `json:"messages"`
	MaxCompletionTokens *int32        `json:"max_completion_tokens"`
}

type completionRequest struct {
	samplingFields
	Prompt string `json:"prompt"`
}

type chatMessage struct {
	Role    string         `json:"role"`
	Content messageContent `json:"content"`
}

// messageContent is a message's text: a string, or text parts joined with
// newlines (the schema refuses other part types).
type messageContent string

func (c *messageContent) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*c = messageContent(s)
		return nil
	}
	var parts []struct {
		Text string `json:"text"`
	}
	if err := json.Unmarshal(b, &parts); err != nil {
		return err
	}
	texts := make([]string, len(parts))
	for i, p := range parts {
		texts[i] = p.Text
	}
	*c = messageContent(strings.Join(texts, "\n"))
	return nil
}

// stopList is "stop": a string, a list of strings, or null.
type stopList []string

func (s *stopList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = stopList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*s = many
	return nil
}

// usage is OpenAI's usage object.
type usage struct {
	PromptTokens        uint32       `json:"prompt_tokens"`
	CompletionTokens    uint32       `json:"completion_tokens"`
	TotalTokens         uint32       `json:"total_tokens"`
	PromptTokensDetails promptDetail `json:"prompt_tokens_details"`
}

type promptDetail struct {
	CachedTokens uint32 `json:"cached_tokens"`
}

// header is what every completion object and chunk starts with.
type header struct {
	ID                string `json:"id"`
	Object            string `json:"object"`
	Created           int64  `json:"created"`
	Model             string `json:"model"`
	SystemFingerprint string `json:"system_fingerprint"`
}

// chatCompletion is a whole (non-streamed) chat answer.
type chatCompletion struct {
	header
	Choices []chatChoice `json:"choices"`
	Usage   usage        `json:"usage"`
}

type chatChoice struct {
	Index        int              `json:"index"`
	Message      assistantMessage `json:"message"`
	Logprobs     *struct{}        `json:"logprobs"`
	FinishReason string           `json:"finish_reason"`
}

type assistantMessage struct {
	Role    string  `json:"role"`
	Content string  `json:"content"`
	Refusal *string `json:"refusal"`
}

// chatChunk is one streamed event of a chat answer.
type chatChunk struct {
	header
	Choices []chunkChoice `json:"choices"`
	// Usage is only on the extra last chunk that include_usage asks for
	// (OpenAI also writes "usage": null on the others; clients read both).
	Usage *usage `json:"usage,omitempty"`
}

type chunkChoice struct {
	Index        int       `json:"index"`
	Delta        delta     `json:"delta"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

type delta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

// textCompletion is a /v1/completions answer, whole or one streamed event.
type textCompletion struct {
	header
	Choices []textChoice `json:"choices"`
	Usage   *usage       `json:"usage,omitempty"`
}

type textChoice struct {
	Index        int       `json:"index"`
	Text         string    `json:"text"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

// modelObject is OpenAI's model object plus EdgeLLM's fields.
type modelObject struct {
	ID            string   `json:"id"`
	Object        string   `json:"object"`
	Created       int64    `json:"created"`
	OwnedBy       string   `json:"owned_by"`
	WeightsCID    string   `json:"weights_cid"`
	Where         []string `json:"where"`
	ContextLength int      `json:"context_length"`
	NumLayers     int      `json:"num_layers"`
	Architecture  string   `json:"architecture"`
}

type modelList struct {
	Object string        `json:"object"`
	Data   []modelObject `json:"data"`
}

// statusBody answers /health and /ready.
type statusBody struct {
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}
