package openai

import (
	"errors"
	"net/http"
	"slices"
	"testing"
)

func TestListModels(t *testing.T) {
	eng := newFakeEngine()
	remote := Model{ID: "llama-3-8b", WeightsCID: "bafy2", Where: nil}
	eng.models = []Model{testModel, remote}
	s := newTestServer(t, eng, Options{})
	resp := serve(t, s, http.MethodGet, "/v1/models", "")
	if resp.status != http.StatusOK {
		t.Fatalf("status %d", resp.status)
	}
	var got modelList
	decodeInto(t, resp.body, &got)
	if got.Object != "list" || len(got.Data) != 2 {
		t.Fatalf("list %+v", got)
	}
	want := modelObject{ID: testModel.ID, Object: "model", Created: 1_700_000_000, OwnedBy: "edgellm",
		WeightsCID: testModel.WeightsCID, Where: testModel.Where, ContextLength: 2048, NumLayers: 30,
		Architecture: "LlamaForCausalLM"}
	if g := got.Data[0]; g.ID != want.ID || g.Created != want.Created || g.WeightsCID != want.WeightsCID ||
		!slices.Equal(g.Where, want.Where) || g.ContextLength != want.ContextLength || g.NumLayers != want.NumLayers ||
		g.Architecture != want.Architecture || g.Object != "model" || g.OwnedBy != "edgellm" {
		t.Errorf("model %+v, want %+v", g, want)
	}
	if g := got.Data[1]; g.Created != 0 || g.Where == nil {
		t.Errorf("a model without a creation time or peers: %+v (want created 0 and where [])", g)
	}
}

func TestRetrieveModel(t *testing.T) {
	s := newTestServer(t, newFakeEngine(), Options{})
	resp := serve(t, s, http.MethodGet, "/v1/models/smollm2-135m", "")
	var got modelObject
	decodeInto(t, resp.body, &got)
	if resp.status != http.StatusOK || got.ID != testModel.ID || got.WeightsCID != testModel.WeightsCID {
		t.Errorf("%d %+v", resp.status, got)
	}
	resp = serve(t, s, http.MethodGet, "/v1/models/gpt-4o", "")
	e := resp.apiErr(t)
	if resp.status != http.StatusNotFound || e.Code == nil || *e.Code != "model_not_found" || e.Param != nil {
		t.Errorf("unknown model: %d %+v", resp.status, e)
	}
}

func TestHealthAndReady(t *testing.T) {
	eng := newFakeEngine()
	eng.readyErr = errors.New("warming smollm2-135m")
	s := newTestServer(t, eng, Options{})
	if resp := serve(t, s, http.MethodGet, "/health", ""); resp.status != http.StatusOK || resp.json(t)["status"] != "ok" {
		t.Errorf("/health: %d %s", resp.status, resp.body)
	}
	resp := serve(t, s, http.MethodGet, "/ready", "")
	if resp.status != http.StatusServiceUnavailable || resp.json(t)["reason"] != "warming smollm2-135m" {
		t.Errorf("/ready while warming: %d %s", resp.status, resp.body)
	}
	eng.readyErr = nil
	if resp := serve(t, s, http.MethodGet, "/ready", ""); resp.status != http.StatusOK || resp.json(t)["status"] != "ready" {
		t.Errorf("/ready: %d %s", resp.status, resp.body)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	if _, err := New(newFakeEngine(), Options{MaxConcurrent: -1}); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("negative MaxConcurrent: %v", err)
	}
	if _, err := New(nil, Options{}); !errors.Is(err, ErrInvalidOption) {
		t.Error("nil engine accepted")
	}
}
