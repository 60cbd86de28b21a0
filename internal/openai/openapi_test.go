package openai

import (
	"fmt"
	"math"
	"math/big"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// TestOpenAPIServed: /openapi.json is a valid OpenAPI 3 document; it claims
// bearer auth exactly when a key is set.
func TestOpenAPIServed(t *testing.T) {
	for _, key := range []string{"", "sk-1"} {
		s := newTestServer(t, newFakeEngine(), Options{APIKey: key})
		resp := serve(t, s, http.MethodGet, "/openapi.json", "")
		if resp.status != http.StatusOK || resp.header.Get("Content-Type") != "application/json" {
			t.Fatalf("status %d, Content-Type %q", resp.status, resp.header.Get("Content-Type"))
		}
		doc, err := loadSpec(resp.body)
		if err != nil {
			t.Fatalf("served document: %v", err)
		}
		if !strings.HasPrefix(doc.OpenAPI, "3.") {
			t.Errorf("openapi %q", doc.OpenAPI)
		}
		if auth := len(doc.Security) > 0; auth != (key != "") {
			t.Errorf("key %q: document security %v", key, doc.Security)
		}
	}
}

// TestOpenAPIDocumentsEveryRoute: the document's operations are exactly the
// server's routes.
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	s := newTestServer(t, newFakeEngine(), Options{})
	var routes, documented []string
	for _, p := range s.patterns {
		routes = append(routes, strings.Replace(p, "{id...}", "{id}", 1))
	}
	for path, item := range spec.doc.Paths.Map() {
		for method := range item.Operations() {
			documented = append(documented, method+" "+path)
		}
	}
	slices.Sort(routes)
	slices.Sort(documented)
	if !slices.Equal(routes, documented) {
		t.Errorf("routes %q\ndocumented %q", routes, documented)
	}
}

// TestOpenAPIErrorResponses: every operation of /v1 documents the error
// statuses the server can answer, with the error schema.
func TestOpenAPIErrorResponses(t *testing.T) {
	want := map[string][]int{
		"POST /v1/chat/completions": {400, 401, 404, 413, 429, 500, 503},
		"POST /v1/completions":      {400, 401, 404, 413, 429, 500, 503},
		"GET /v1/models":            {401, 500, 503},
		"GET /v1/models/{id}":       {401, 404, 500, 503},
	}
	for op, codes := range want {
		method, path, _ := strings.Cut(op, " ")
		responses := spec.doc.Paths.Find(path).GetOperation(method).Responses
		for _, code := range codes {
			ref := responses.Status(code)
			if ref == nil {
				t.Errorf("%s: %d not documented", op, code)
				continue
			}
			if s := ref.Value.Content.Get("application/json").Schema; s.Ref != "#/components/schemas/Error" {
				t.Errorf("%s %d: schema %q, want the Error schema", op, code, s.Ref)
			}
		}
	}
}

// TestSchemaBoundsAreEnforced walks every bounded field of the request
// schemas and sends a value at each bound (accepted) and one beyond it
// (400 naming the field): the document and the validation cannot drift.
func TestSchemaBoundsAreEnforced(t *testing.T) {
	eng := newFakeEngine()
	m := testModel
	m.ContextLength = 0 // only the schema bounds max_tokens here
	eng.models = []Model{m}
	s := newTestServer(t, eng, Options{})
	for _, op := range []struct {
		path, base string
		schema     *openapi3.Schema
	}{
		{"/v1/chat/completions", chatBody, chatRequestSchema},
		{"/v1/completions", `{"model":"smollm2-135m","prompt":"hi"}`, completionRequestSchema},
	} {
		checked := 0
		for name, prop := range op.schema.Properties {
			for _, c := range boundCases(prop.Value) {
				checked++
				t.Run(fmt.Sprintf("%s %s=%s", op.path, name, c.value), func(t *testing.T) {
					body := strings.TrimSuffix(op.base, "}") + `,"` + name + `":` + c.value + "}"
					resp := post(t, s, op.path, body)
					switch {
					case c.valid && resp.status != http.StatusOK:
						t.Errorf("valid by the schema, answered %d: %s", resp.status, resp.body)
					case !c.valid && resp.status != http.StatusBadRequest:
						t.Errorf("invalid by the schema, answered %d: %s", resp.status, resp.body)
					case !c.valid:
						if p := resp.apiErr(t).Param; p == nil || !strings.HasPrefix(*p, name) {
							t.Errorf("param %v, want %s", p, name)
						}
					}
				})
			}
		}
		if checked < 10 {
			t.Errorf("%s: only %d bound cases: the walk is broken", op.path, checked)
		}
	}
}

type boundCase struct {
	value string // JSON
	valid bool
}

// boundCases derives, from one property's schema, values on and beyond each
// of its bounds.
func boundCases(s *openapi3.Schema) []boundCase {
	var cases []boundCase
	for _, branch := range s.OneOf {
		cases = append(cases, boundCases(branch.Value)...)
	}
	if s.Type == nil {
		return cases
	}
	switch {
	case s.Type.Is("integer"):
		lo, hi := intBounds(s)
		if lo != nil {
			cases = append(cases, boundCase{lo.String(), true}, boundCase{new(big.Int).Sub(lo, big.NewInt(1)).String(), false})
		}
		if hi != nil {
			cases = append(cases, boundCase{hi.String(), true}, boundCase{new(big.Int).Add(hi, big.NewInt(1)).String(), false})
		}
	case s.Type.Is("number"):
		if s.Min != nil {
			at := boundCase{num(*s.Min), !s.ExclusiveMin.IsTrue()}
			cases = append(cases, at, boundCase{num(*s.Min - 0.001), false}, boundCase{num(*s.Min + 0.001), true})
		}
		if s.Max != nil {
			cases = append(cases, boundCase{num(*s.Max), true}, boundCase{num(*s.Max + 0.001), false})
		}
	case s.Type.Is("array"):
		if s.MaxItems != nil {
			item := `"x"`
			cases = append(cases, boundCase{jsonArray(item, int(*s.MaxItems)), true},
				boundCase{jsonArray(item, int(*s.MaxItems)+1), false})
		}
	}
	return cases
}

// intBounds reads an integer's bounds exactly: those of its format when it
// has one (float64 cannot hold MaxInt64), else minimum and maximum.
func intBounds(s *openapi3.Schema) (lo, hi *big.Int) {
	if s.Format == "int64" {
		return big.NewInt(math.MinInt64), big.NewInt(math.MaxInt64)
	}
	if s.Min != nil {
		lo = big.NewInt(int64(*s.Min))
	}
	if s.Max != nil {
		hi = big.NewInt(int64(*s.Max))
	}
	return lo, hi
}

func num(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func jsonArray(item string, n int) string {
	return "[" + strings.TrimSuffix(strings.Repeat(item+",", n), ",") + "]"
}

func TestEmbeddedSpecLoads(t *testing.T) {
	if _, err := loadSpec(openapiYAML); err != nil {
		t.Fatal(err)
	}
	if _, err := loadSpec([]byte("openapi: 3.0.3\ninfo: {}\n")); err == nil {
		t.Error("an invalid document loaded")
	}
}
