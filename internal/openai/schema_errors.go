package openai

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
)

// schemaError words a schema violation as OpenAI does, e.g. "Invalid
// 'temperature': decimal above maximum value. Expected a value <= 2, but got
// 3 instead.", with param set to the field's path ("messages[0].role").
func schemaError(err error, root any) *apiError {
	se, ok := errors.AsType[*openapi3.SchemaError](err)
	if !ok {
		return invalidRequest("", "", "Invalid request body: %v.", err)
	}
	path := se.JSONPointer()
	if se.SchemaField == "oneOf" {
		if inner, innerPath := oneOfCause(se); inner != nil {
			se, path = inner, append(path, innerPath...)
		}
	}
	param := paramName(root, path)
	if se.SchemaField == "required" {
		return invalidRequest(param, "missing_required_parameter", "Missing required parameter: '%s'.", param)
	}
	if param == "" {
		return invalidRequest("", "invalid_type", "The request body must be a JSON object, but got %s instead.", typeName(se.Value))
	}
	return violation(se, param)
}

// oneOfCause finds why a value matched no branch of a oneOf: when exactly
// one branch accepts the value's JSON type (a string, or an array), that
// branch's own error is the precise one ("stop: array too long" rather
// than "stop: matches no schema"). It returns the error and its path below
// the oneOf, or nil when the type itself is wrong.
func oneOfCause(se *openapi3.SchemaError) (*openapi3.SchemaError, []string) {
	var match *openapi3.Schema
	for _, branch := range se.Schema.OneOf {
		if branch.Value != nil && typeAllowed(branch.Value, se.Value) {
			if match != nil {
				return nil, nil
			}
			match = branch.Value
		}
	}
	if match == nil {
		return nil, nil
	}
	inner, ok := errors.AsType[*openapi3.SchemaError](match.VisitJSON(se.Value, openapi3.VisitAsRequest()))
	if !ok {
		return nil, nil
	}
	path := inner.JSONPointer()
	if inner.SchemaField == "oneOf" {
		if deeper, deeperPath := oneOfCause(inner); deeper != nil {
			return deeper, append(path, deeperPath...)
		}
	}
	return inner, path
}

// violation words one failed keyword.
func violation(se *openapi3.SchemaError, param string) *apiError {
	s, got := se.Schema, se.Value
	kind := "decimal"
	if s.Type.Is("integer") {
		kind = "integer"
	}
	switch se.SchemaField {
	case "type", "nullable":
		return invalidRequest(param, "invalid_type", "Invalid type for '%s': expected %s, but got %s instead.",
			param, expectedTypes(s), typeName(got))
	case "oneOf":
		return invalidRequest(param, "invalid_type", "Invalid type for '%s': expected one of %s, but got %s instead.",
			param, branchTypes(s), typeName(got))
	case "enum":
		return invalidRequest(param, "invalid_value", "Invalid value: %s. Supported values are: %s.",
			quote(got), enumList(s.Enum))
	case "format":
		// An integer outside its format's range (int32, int64): say which
		// bound, as for minimum and maximum.
		if f, ok := toFloat(got); ok && s.Max != nil && f > *s.Max {
			se.SchemaField = "maximum"
			return violation(se, param)
		}
		if f, ok := toFloat(got); ok && s.Min != nil && f < *s.Min {
			se.SchemaField = "minimum"
			return violation(se, param)
		}
	case "minimum", "exclusiveMinimum":
		op := ">="
		if s.ExclusiveMin.IsTrue() {
			op = ">"
		}
		return invalidRequest(param, kind+"_below_min_value",
			"Invalid '%s': %s below minimum value. Expected a value %s %s, but got %s instead.",
			param, kind, op, number(*s.Min), jsonText(got))
	case "maximum", "exclusiveMaximum":
		op := "<="
		if s.ExclusiveMax.IsTrue() {
			op = "<"
		}
		return invalidRequest(param, kind+"_above_max_value",
			"Invalid '%s': %s above maximum value. Expected a value %s %s, but got %s instead.",
			param, kind, op, number(*s.Max), jsonText(got))
	case "pattern", "not":
		// The document words these rules itself (x-error-message).
		if msg, ok := s.Extensions["x-error-message"].(string); ok {
			return invalidRequest(param, "invalid_value", "Invalid '%s': %s", param, msg)
		}
	case "minItems":
		if n := length(got); n == 0 {
			return invalidRequest(param, "empty_array", "Invalid '%s': empty array. Expected an array with "+
				"minimum length %d, but got an empty array instead.", param, s.MinItems)
		}
		return invalidRequest(param, "array_below_min_length", "Invalid '%s': array too short. Expected an array "+
			"with minimum length %d, but got an array with length %d instead.", param, s.MinItems, length(got))
	case "maxItems":
		return invalidRequest(param, "array_above_max_length", "Invalid '%s': array too long. Expected an array "+
			"with maximum length %d, but got an array with length %d instead.", param, *s.MaxItems, length(got))
	case "minLength":
		if length(got) == 0 {
			return invalidRequest(param, "empty_string", "Invalid '%s': empty string. Expected a string with "+
				"minimum length %d, but got an empty string instead.", param, s.MinLength)
		}
		return invalidRequest(param, "string_below_min_length", "Invalid '%s': string too short. Expected a "+
			"string with minimum length %d, but got a string with length %d instead.", param, s.MinLength, length(got))
	case "maxLength":
		return invalidRequest(param, "string_above_max_length", "Invalid '%s': string too long. Expected a "+
			"string with maximum length %d, but got a string with length %d instead.", param, *s.MaxLength, length(got))
	}
	return invalidRequest(param, "invalid_value", "Invalid '%s': %s.", param, se.Reason)
}

// paramName renders a JSON pointer into the request as OpenAI's param:
// object keys joined with dots, array indexes in brackets.
func paramName(root any, path []string) string {
	var b strings.Builder
	node := root
	for _, seg := range path {
		switch n := node.(type) {
		case []any:
			b.WriteString("[" + seg + "]")
			if i, err := strconv.Atoi(seg); err == nil && i >= 0 && i < len(n) {
				node = n[i]
			}
		default:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(seg)
			if m, ok := n.(map[string]any); ok {
				node = m[seg]
			}
		}
	}
	return b.String()
}

// jsonType is a value's JSON type as the schema validator sees it.
func jsonType(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	case json.Number:
		if _, err := v.Int64(); err == nil {
			return "integer"
		}
		return "number"
	case float64:
		if v == float64(int64(v)) {
			return "integer"
		}
		return "number"
	}
	return fmt.Sprintf("%T", v)
}

func typeAllowed(s *openapi3.Schema, v any) bool {
	t := jsonType(v)
	switch {
	case t == "null":
		return s.Nullable
	case s.Type == nil:
		return true
	case t == "integer":
		return s.Type.Includes("integer") || s.Type.Includes("number")
	}
	return s.Type.Includes(t)
}

// typeName is how OpenAI's messages name a value's type.
func typeName(v any) string {
	switch t := jsonType(v); t {
	case "null":
		return "null"
	case "integer", "array", "object":
		return "an " + t
	case "number":
		return "a decimal"
	default:
		return "a " + t
	}
}

func expectedTypes(s *openapi3.Schema) string {
	if s.Type == nil {
		return "a value"
	}
	var names []string
	for _, t := range *s.Type {
		names = append(names, typeWord(t))
	}
	return strings.Join(names, " or ")
}

func branchTypes(s *openapi3.Schema) string {
	var names []string
	for _, b := range s.OneOf {
		names = append(names, expectedTypes(b.Value))
	}
	return strings.Join(names, " or ")
}

func typeWord(t string) string {
	switch t {
	case "number":
		return "a decimal"
	case "integer", "array", "object":
		return "an " + t
	}
	return "a " + t
}

func enumList(values []any) string {
	var quoted []string
	for _, v := range values {
		quoted = append(quoted, quote(v))
	}
	if len(quoted) < 2 {
		return strings.Join(quoted, "")
	}
	return strings.Join(quoted[:len(quoted)-1], ", ") + " and " + quoted[len(quoted)-1]
}

func quote(v any) string {
	if s, ok := v.(string); ok {
		return "'" + s + "'"
	}
	return jsonText(v)
}

func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func number(f float64) string {
	return strconv.FormatFloat(f, 'f', -1, 64)
}

func toFloat(v any) (float64, bool) {
	switch v := v.(type) {
	case json.Number:
		f, err := v.Float64()
		return f, err == nil
	case float64:
		return v, true
	}
	return 0, false
}

func length(v any) int {
	switch v := v.(type) {
	case []any:
		return len(v)
	case string:
		return len([]rune(v))
	}
	return 0
}
