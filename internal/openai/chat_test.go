package openai

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

func TestChatCompletion(t *testing.T) {
	eng := newFakeEngine()
	s := newTestServer(t, eng, Options{})
	resp := post(t, s, "/v1/chat/completions", chatBody)
	if resp.status != http.StatusOK {
		t.Fatalf("status %d: %s", resp.status, resp.body)
	}
	var got chatCompletion
	decodeInto(t, resp.body, &got)
	if !strings.HasPrefix(got.ID, "chatcmpl-") || got.ID != eng.lastRequest(t).RequestId {
		t.Errorf("id %q must start with chatcmpl- and be the backend request id %q", got.ID, eng.lastRequest(t).RequestId)
	}
	if got.Object != "chat.completion" || got.Model != testModel.ID || got.SystemFingerprint != testModel.WeightsCID ||
		got.Created == 0 {
		t.Errorf("header = %+v", got.header)
	}
	want := chatChoice{Message: assistantMessage{Role: "assistant", Content: "Paris is the capital."}, FinishReason: "stop"}
	if len(got.Choices) != 1 || got.Choices[0] != want {
		t.Errorf("choices = %+v, want [%+v]", got.Choices, want)
	}
	wantUsage := usage{PromptTokens: 7, CompletionTokens: 3, TotalTokens: 10, PromptTokensDetails: promptDetail{CachedTokens: 3}}
	if got.Usage != wantUsage {
		t.Errorf("usage = %+v, want %+v", got.Usage, wantUsage)
	}
}

func TestChatRequestToBackend(t *testing.T) {
	eng := newFakeEngine()
	s := newTestServer(t, eng, Options{})
	body := `{"model":"smollm2-135m","messages":[
		{"role":"developer","content":"Be brief."},
		{"role":"user","content":[{"type":"text","text":"Capital of"},{"type":"text","text":"France?"}]},
		{"role":"assistant","content":"Paris."},
		{"role":"user","content":"Sure?"}],
		"max_tokens":50,"max_completion_tokens":20,"temperature":0.7,"top_p":0.9,"top_k":40,"seed":-1,
		"stop":["\n\n","END"],"user":"u1"}`
	if resp := post(t, s, "/v1/chat/completions", body); resp.status != http.StatusOK {
		t.Fatalf("status %d: %s", resp.status, resp.body)
	}
	got := eng.lastRequest(t)
	want := &pb.GenerateRequest{
		RequestId: got.RequestId,
		Model:     testModel.ID,
		Input: &pb.GenerateRequest_Messages{Messages: &pb.ChatMessages{Messages: []*pb.ChatMessage{
			{Role: "system", Content: "Be brief."},
			{Role: "user", Content: "Capital of\nFrance?"},
			{Role: "assistant", Content: "Paris."},
			{Role: "user", Content: "Sure?"},
		}}},
		Sampling: &pb.SamplingParams{
			MaxTokens:   proto.Int32(20), // max_completion_tokens wins
			Temperature: proto.Float32(0.7),
			TopP:        proto.Float32(0.9),
			TopK:        proto.Int32(40),
			Seed:        proto.Uint64(1<<64 - 1), // -1, bit for bit
			Stop:        []string{"\n\n", "END"},
		},
	}
	if !proto.Equal(got, want) {
		t.Errorf("backend request\n got %v\nwant %v", got, want)
	}
}

func TestChatDefaultsLeaveSamplingUnset(t *testing.T) {
	eng := newFakeEngine()
	s := newTestServer(t, eng, Options{})
	post(t, s, "/v1/chat/completions", chatWith(`"stop":"x","max_tokens":9`))
	sp := eng.lastRequest(t).GetSampling()
	if sp.Temperature != nil || sp.TopP != nil || sp.TopK != nil || sp.Seed != nil {
		t.Errorf("unset fields must stay unset for the backend's defaults: %v", sp)
	}
	if sp.GetMaxTokens() != 9 || !slices.Equal(sp.GetStop(), []string{"x"}) {
		t.Errorf("max_tokens/stop = %v", sp)
	}
}

func TestFinishReasons(t *testing.T) {
	for reason, want := range map[pb.FinishReason]string{
		pb.FinishReason_FINISH_REASON_STOP:        "stop",
		pb.FinishReason_FINISH_REASON_STOP_STRING: "stop",
		pb.FinishReason_FINISH_REASON_LENGTH:      "length",
		pb.FinishReason_FINISH_REASON_UNSPECIFIED: "stop",
	} {
		t.Run(reason.String(), func(t *testing.T) {
			eng := newFakeEngine()
			eng.gen = replyWith(reason, "a", "b")
			s := newTestServer(t, eng, Options{})
			var got chatCompletion
			decodeInto(t, post(t, s, "/v1/chat/completions", chatBody).body, &got)
			if got.Choices[0].FinishReason != want {
				t.Errorf("finish_reason %q, want %q", got.Choices[0].FinishReason, want)
			}
		})
	}
}

func TestChatStream(t *testing.T) {
	for _, includeUsage := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "include_usage"}[includeUsage], func(t *testing.T) {
			eng := newFakeEngine()
			// An empty response (a multi-byte character pending) sends no event.
			eng.gen = reply("Paris", "", " is", " the capital.")
			s := newTestServer(t, eng, Options{})
			fields := `"stream":true`
			if includeUsage {
				fields += `,"stream_options":{"include_usage":true}`
			}
			resp := post(t, s, "/v1/chat/completions", chatWith(fields))
			if resp.status != http.StatusOK || !strings.HasPrefix(resp.header.Get("Content-Type"), "text/event-stream") {
				t.Fatalf("status %d, Content-Type %q: %s", resp.status, resp.header.Get("Content-Type"), resp.body)
			}
			events := parseSSE(t, resp.body)
			if events[len(events)-1] != "[DONE]" {
				t.Fatalf("last event %q, want [DONE]", events[len(events)-1])
			}
			chunks := decodeEvents[chatChunk](t, events)
			checkChatChunks(t, chunks, includeUsage, eng.lastRequest(t).RequestId)
		})
	}
}

// checkChatChunks checks a chat stream's chunks: role first, the text
// deltas in order, then finish_reason, then usage when asked for.
func checkChatChunks(t *testing.T, chunks []chatChunk, includeUsage bool, id string) {
	t.Helper()
	for _, c := range chunks {
		if c.ID != id || c.Object != "chat.completion.chunk" || c.Model != testModel.ID ||
			c.SystemFingerprint != testModel.WeightsCID || c.Created != chunks[0].Created {
			t.Fatalf("chunk header %+v", c.header)
		}
	}
	var texts []string
	for _, c := range chunks {
		if len(c.Choices) == 1 && c.Choices[0].Delta.Content != nil {
			texts = append(texts, *c.Choices[0].Delta.Content)
		}
	}
	if want := []string{"", "Paris", " is", " the capital."}; !slices.Equal(texts, want) {
		t.Errorf("content deltas %q, want %q", texts, want)
	}
	if first := chunks[0].Choices[0]; first.Delta.Role != "assistant" || first.FinishReason != nil {
		t.Errorf("first chunk %+v must carry the role only", first)
	}
	n := len(chunks)
	last := chunks[n-1]
	if includeUsage {
		want := usage{PromptTokens: 7, CompletionTokens: 4, TotalTokens: 11, PromptTokensDetails: promptDetail{CachedTokens: 3}}
		if len(last.Choices) != 0 || last.Usage == nil || *last.Usage != want {
			t.Errorf("usage chunk = %+v, want empty choices and usage %+v", last, want)
		}
		last = chunks[n-2]
	} else if last.Usage != nil {
		t.Errorf("usage sent without include_usage: %+v", last)
	}
	if fr := last.Choices[0].FinishReason; fr == nil || *fr != "stop" || last.Choices[0].Delta != (delta{}) {
		t.Errorf("finish chunk %+v, want an empty delta with finish_reason stop", last.Choices[0])
	}
	for _, c := range chunks[:n-1] {
		if c.Usage != nil {
			t.Errorf("usage before the last chunk: %+v", c)
		}
	}
}

func TestCompletion(t *testing.T) {
	eng := newFakeEngine()
	eng.gen = replyWith(pb.FinishReason_FINISH_REASON_LENGTH, "Once", " upon")
	s := newTestServer(t, eng, Options{})
	resp := post(t, s, "/v1/completions", `{"model":"smollm2-135m","prompt":"Tell me a story.","max_tokens":2,"temperature":0}`)
	if resp.status != http.StatusOK {
		t.Fatalf("status %d: %s", resp.status, resp.body)
	}
	var got textCompletion
	decodeInto(t, resp.body, &got)
	if !strings.HasPrefix(got.ID, "cmpl-") || got.Object != "text_completion" || got.SystemFingerprint != testModel.WeightsCID {
		t.Errorf("header = %+v", got.header)
	}
	if len(got.Choices) != 1 || got.Choices[0].Text != "Once upon" || *got.Choices[0].FinishReason != "length" {
		t.Errorf("choices = %+v", got.Choices)
	}
	if got.Usage == nil || got.Usage.TotalTokens != 9 {
		t.Errorf("usage = %+v", got.Usage)
	}
	req := eng.lastRequest(t)
	if req.GetRawPrompt() != "Tell me a story." || req.GetSampling().GetTemperature() != 0 || req.GetSampling().Temperature == nil {
		t.Errorf("backend request %v: want the raw prompt and temperature 0 (greedy)", req)
	}
}

func TestCompletionStream(t *testing.T) {
	eng := newFakeEngine()
	s := newTestServer(t, eng, Options{})
	resp := post(t, s, "/v1/completions",
		`{"model":"smollm2-135m","prompt":"The capital of France","stream":true,"stream_options":{"include_usage":true}}`)
	events := parseSSE(t, resp.body)
	if events[len(events)-1] != "[DONE]" {
		t.Fatalf("last event %q, want [DONE]", events[len(events)-1])
	}
	chunks := decodeEvents[textCompletion](t, events)
	var text strings.Builder
	for _, c := range chunks[:len(chunks)-2] {
		if c.Object != "text_completion" || len(c.Choices) != 1 || c.Choices[0].FinishReason != nil {
			t.Errorf("text chunk %+v", c)
		}
		text.WriteString(c.Choices[0].Text)
	}
	if text.String() != "Paris is the capital." {
		t.Errorf("streamed text %q", text.String())
	}
	if fin := chunks[len(chunks)-2]; *fin.Choices[0].FinishReason != "stop" {
		t.Errorf("finish chunk %+v", fin)
	}
	if u := chunks[len(chunks)-1]; len(u.Choices) != 0 || u.Usage == nil || u.Usage.CompletionTokens != 3 {
		t.Errorf("usage chunk %+v", u)
	}
}

// An engine error after the stream started is sent as an error event and
// the stream ends without [DONE].
func TestStreamErrorAfterStart(t *testing.T) {
	eng := newFakeEngine()
	eng.gen = func(ctx context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) (string, error) {
		_ = onResp(&pb.GenerateResponse{Text: "Par", TokenIds: []uint32{1}})
		return RoutePipeline, unavailableErr("worker 12D3… lost, no spare")
	}
	s := newTestServer(t, eng, Options{})
	resp := post(t, s, "/v1/chat/completions", chatWith(`"stream":true`))
	events := parseSSE(t, resp.body)
	last := events[len(events)-1]
	if !strings.HasPrefix(last, `{"error"`) || !strings.Contains(last, "no spare") || slices.Contains(events, "[DONE]") {
		t.Errorf("events %q: want an error event last and no [DONE]", events)
	}
}

// An engine that finishes without a single response still yields a well
// formed stream: the role, the finish reason, [DONE].
func TestStreamWithoutResponses(t *testing.T) {
	eng := newFakeEngine()
	eng.gen = func(context.Context, *pb.GenerateRequest, func(*pb.GenerateResponse) error) (string, error) {
		return RouteLocal, nil
	}
	s := newTestServer(t, eng, Options{})
	resp := post(t, s, "/v1/chat/completions", chatWith(`"stream":true`))
	events := parseSSE(t, resp.body)
	chunks := decodeEvents[chatChunk](t, events)
	if len(events) != 3 || events[2] != "[DONE]" || chunks[0].Choices[0].Delta.Role != "assistant" ||
		chunks[1].Choices[0].FinishReason == nil {
		t.Errorf("events %q", events)
	}
}

func TestRequestIDHeader(t *testing.T) {
	eng := newFakeEngine()
	s := newTestServer(t, eng, Options{})
	resp := post(t, s, "/v1/chat/completions", chatBody)
	if id := resp.header.Get("X-Request-Id"); id == "" || id != eng.lastRequest(t).RequestId || id != resp.json(t)["id"] {
		t.Errorf("X-Request-Id %q, backend request id %q, body id %v", id, eng.lastRequest(t).RequestId, resp.json(t)["id"])
	}
	eng.gen = func(context.Context, *pb.GenerateRequest, func(*pb.GenerateResponse) error) (string, error) {
		return RouteLocal, errors.New("boom")
	}
	resp = post(t, s, "/v1/completions", `{"model":"smollm2-135m","prompt":"x"}`)
	if id := resp.header.Get("X-Request-Id"); !strings.HasPrefix(id, "cmpl-") || !strings.Contains(resp.apiErr(t).Message, id) {
		t.Errorf("a 500 must name its request id %q: %s", id, resp.body)
	}
}
