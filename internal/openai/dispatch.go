package openai

import (
	"net/http"
	"path"
	"strings"
)

// dispatch routes r; what no route matches gets an OpenAI error object
// instead of ServeMux's plain-text 404 or 405.
func (s *Server) dispatch(w http.ResponseWriter, r *http.Request) {
	if !clean(r.URL.Path) {
		// ServeMux would redirect (301) to the cleaned path; an API client
		// gains nothing from that, and a model id such as ".." must be a
		// 404 like any other unknown id.
		s.writeError(w, r, invalidURL(r))
		return
	}
	if r.Method == http.MethodHead {
		// ServeMux answers HEAD wherever GET is served; the API documents
		// GET only, and a schema fuzzer expects 405 for what is undocumented.
		s.writeError(w, r, s.headNotAllowed(r))
		return
	}
	h, pattern := s.mux.Handler(r)
	if pattern != "" {
		s.mux.ServeHTTP(w, r)
		return
	}
	// The mux decides between 404 and 405 (and knows the Allow header); its
	// answer is recorded and rewritten in JSON.
	probe := &headerProbe{header: http.Header{}}
	h.ServeHTTP(probe, r)
	if probe.status == http.StatusMethodNotAllowed {
		s.writeError(w, r, methodNotAllowed(r, probe.header.Values("Allow")...))
		return
	}
	s.writeError(w, r, invalidURL(r))
}

// headNotAllowed is the answer to a HEAD request: 405 where GET is served,
// else 404.
func (s *Server) headNotAllowed(r *http.Request) *apiError {
	get := r.Clone(r.Context())
	get.Method = http.MethodGet
	if _, pattern := s.mux.Handler(get); pattern == "" {
		return invalidURL(r)
	}
	return methodNotAllowed(r, http.MethodGet)
}

// clean reports whether p is in the canonical form ServeMux serves without
// a redirect: no "." or ".." segments, no empty segment but a trailing one.
func clean(p string) bool {
	if p == "" {
		return true
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c == p
}

func invalidURL(r *http.Request) *apiError {
	return &apiError{Status: http.StatusNotFound, Type: typeInvalidRequest,
		Message: "Invalid URL (" + r.Method + " " + r.URL.Path + ")"}
}

func methodNotAllowed(r *http.Request, allow ...string) *apiError {
	return &apiError{Status: http.StatusMethodNotAllowed, Type: typeInvalidRequest,
		Message: "Invalid method for URL (" + r.Method + " " + r.URL.Path + ")",
		Header:  http.Header{"Allow": allow}}
}

// headerProbe records the status and headers a handler writes, dropping
// the body.
type headerProbe struct {
	header http.Header
	status int
}

func (p *headerProbe) Header() http.Header         { return p.header }
func (p *headerProbe) Write(b []byte) (int, error) { return len(b), nil }
func (p *headerProbe) WriteHeader(status int)      { p.status = status }
