package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
)

// decodeBody reads a JSON request body into dst: the body is limited to
// limit bytes (413 beyond), parsed (400 when malformed), checked against
// schema from the OpenAPI document (400 naming the field, worded like
// OpenAI's errors), and only then decoded into the Go type.
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, schema *openapi3.Schema, dst any) *apiError {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return &apiError{Status: http.StatusRequestEntityTooLarge, Type: typeInvalidRequest,
				Code:    "request_too_large",
				Message: fmt.Sprintf("The request body is larger than this node's limit of %d bytes.", mbe.Limit)}
		}
		return invalidRequest("", "", "Could not read the request body: %v.", err)
	}
	tree, aerr := parseJSON(body)
	if aerr != nil {
		return aerr
	}
	if dropCaseVariants(tree, schema) {
		// encoding/json matches keys case-insensitively; the schema does
		// not. Re-encoding without the variants makes Go see what the
		// schema saw.
		if body, err = json.Marshal(tree); err != nil {
			return invalidRequest("", "", "Could not re-encode the request body: %v.", err)
		}
	}
	if err := schema.VisitJSON(tree, openapi3.VisitAsRequest()); err != nil {
		return schemaError(err, tree)
	}
	if err := json.Unmarshal(body, dst); err != nil {
		return decodeError(err)
	}
	return nil
}

// parseJSON parses exactly one JSON value, keeping numbers exact.
func parseJSON(body []byte) (any, *apiError) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var tree any
	err := dec.Decode(&tree)
	if err == nil {
		if _, extra := dec.Token(); extra != io.EOF {
			err = errors.New("unexpected data after the JSON value")
		}
	}
	if err != nil {
		return nil, invalidRequest("", "", "We could not parse the JSON body of your request: %v. "+
			"The API expects a JSON object (Content-Type: application/json).", err)
	}
	return tree, nil
}

// decodeError turns a failure of the Go decoding, after the schema accepted
// the value, into a 400: an integer the Go type cannot hold (e.g. a seed
// beyond int64, or 1.0 for an integer).
func decodeError(err error) *apiError {
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok && te.Field != "" {
		// Field names the Go path, which includes the embedded struct.
		param := strings.TrimPrefix(te.Field, "samplingFields.")
		return invalidRequest(param, "invalid_type", "Invalid type for '%s': expected a value that fits %s, "+
			"but got %s instead.", param, te.Type.String(), te.Value)
	}
	return invalidRequest("", "", "Invalid request body: %v.", err)
}

// dropCaseVariants deletes, in every object of v that schema describes, the
// keys that differ from one of its properties only by case ("Model" next to
// or instead of "model"); OpenAI ignores them as unknown fields. It reports
// whether it deleted any.
func dropCaseVariants(v any, schema *openapi3.Schema) bool {
	if schema == nil {
		return false
	}
	dropped := false
	for _, branch := range append(append(openapi3.SchemaRefs{}, schema.OneOf...), schema.AnyOf...) {
		dropped = dropCaseVariants(v, branch.Value) || dropped
	}
	switch v := v.(type) {
	case map[string]any:
		for key, val := range v {
			prop, known := schema.Properties[key]
			if known {
				dropped = dropCaseVariants(val, prop.Value) || dropped
			} else if caseVariant(key, schema.Properties) {
				delete(v, key)
				dropped = true
			}
		}
	case []any:
		if schema.Items != nil {
			for _, item := range v {
				dropped = dropCaseVariants(item, schema.Items.Value) || dropped
			}
		}
	}
	return dropped
}

func caseVariant(key string, props openapi3.Schemas) bool {
	for name := range props {
		if strings.EqualFold(key, name) {
			return true
		}
	}
	return false
}
