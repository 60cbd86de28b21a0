package openai

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/getkin/kin-openapi/openapi3"
)

// openapiYAML is the API's OpenAPI 3 document. It is the single source of
// truth for request shapes and bounds: request bodies are validated against
// its schemas (validate.go), and /openapi.json serves it.
//
//go:embed openapi.yaml
var openapiYAML []byte

// spec is the parsed document. A document that does not load or validate is
// a programming error caught by every test, so it panics at start-up.
var spec = mustLoadSpec(openapiYAML)

// Request schemas the handlers validate against.
var (
	chatRequestSchema       = spec.schema("ChatCompletionRequest")
	completionRequestSchema = spec.schema("CompletionRequest")
)

type apiSpec struct {
	doc *openapi3.T
}

func mustLoadSpec(data []byte) apiSpec {
	doc, err := loadSpec(data)
	if err != nil {
		panic(fmt.Sprintf("openai: embedded openapi.yaml: %v", err))
	}
	return apiSpec{doc: doc}
}

// loadSpec parses and validates an OpenAPI document, resolving its $refs.
func loadSpec(data []byte) (*openapi3.T, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(data)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	return doc, nil
}

func (s apiSpec) schema(name string) *openapi3.Schema {
	ref, ok := s.doc.Components.Schemas[name]
	if !ok || ref.Value == nil {
		panic(fmt.Sprintf("openai: openapi.yaml has no schema %q", name))
	}
	return ref.Value
}

// json renders the document as served. Without an API key the top-level
// bearer requirement is left out, so the document does not claim an auth
// the node does not enforce (a schema fuzzer checks that it is enforced);
// the node's own limits (the models it serves, its cap on max_tokens) narrow
// the schemas that name them.
func (s apiSpec) json(opts Options) ([]byte, error) {
	doc := *s.doc
	if opts.APIKey == "" {
		doc.Security = nil
	}
	b, err := json.Marshal(&doc)
	if err != nil {
		return nil, fmt.Errorf("marshal openapi document: %w", err)
	}
	if len(opts.ModelIDs) == 0 && opts.MaxCompletionTokens == 0 {
		return b, nil
	}
	var tree map[string]any
	if err := json.Unmarshal(b, &tree); err != nil {
		return nil, fmt.Errorf("openapi document: %w", err)
	}
	schemas := tree["components"].(map[string]any)["schemas"].(map[string]any)
	if len(opts.ModelIDs) > 0 {
		schemas["ModelID"].(map[string]any)["enum"] = opts.ModelIDs
	}
	if opts.MaxCompletionTokens > 0 {
		schemas["MaxTokens"].(map[string]any)["maximum"] = opts.MaxCompletionTokens
	}
	return json.Marshal(tree)
}

// openapiHandler serves the document rendered once.
func openapiHandler(body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}
}
