package openai

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

// auth requires the API key, when one is set, as a bearer token.
func (s *Server) auth(next http.HandlerFunc) http.HandlerFunc {
	if s.opts.APIKey == "" {
		return next
	}
	want := []byte(s.opts.APIKey)
	return func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearer(r.Header.Get("Authorization"))
		if !ok {
			s.writeError(w, r, unauthorized("", "You didn't provide an API key. Provide it in the Authorization "+
				"header using Bearer auth (Authorization: Bearer YOUR_KEY)."))
			return
		}
		// Constant time, so the comparison does not leak the key's prefix.
		if subtle.ConstantTimeCompare([]byte(token), want) != 1 {
			s.writeError(w, r, unauthorized("invalid_api_key", "Incorrect API key provided."))
			return
		}
		next(w, r)
	}
}

// bearer extracts the token of an "Authorization: Bearer <token>" header;
// the scheme is case-insensitive (RFC 9110).
func bearer(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

func unauthorized(code, message string) *apiError {
	return &apiError{
		Status:  http.StatusUnauthorized,
		Type:    typeInvalidRequest,
		Code:    code,
		Message: message,
		Header:  http.Header{"Www-Authenticate": {`Bearer realm="edgellm"`}},
	}
}
