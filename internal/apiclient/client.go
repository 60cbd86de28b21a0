// Package apiclient is a small client of serve's OpenAI-compatible HTTP API,
// for the commands that drive a running serve (batch, bench): plain JSON
// requests and streamed (server-sent events) ones, over net/http.
//
// Decisions:
//   - No OpenAI SDK: two calls and a few lines of SSE parsing are all the
//     commands need, and the standard library keeps them dependency-free.
//   - An HTTP error status is an answer, not an error: callers get the
//     status and body (batch writes them to its output file, bench counts
//     them as failed). Only a transport failure is an error.
package apiclient

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Client talks to one serve.
type Client struct {
	BaseURL string // e.g. http://127.0.0.1:8080, without /v1
	APIKey  string // "" sends no Authorization header
	HTTP    *http.Client
}

// New returns a client of the serve at baseURL.
func New(baseURL, apiKey string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), APIKey: apiKey,
		HTTP: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}}
}

// Response is a whole (non-streamed) answer.
type Response struct {
	Status     int
	RequestID  string // X-Request-Id
	Body       []byte
	RetryAfter time.Duration // from Retry-After, 0 when absent
}

// ErrorMessage is the "error.message" of an OpenAI error body, else the
// body itself (shortened).
func ErrorMessage(body []byte) string {
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
		return e.Error.Message
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

func (c *Client) request(ctx context.Context, method, path string, body []byte) (*http.Request, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, r)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.APIKey)
	}
	return req, nil
}

// Do sends one request and reads the whole answer.
func (c *Client) Do(ctx context.Context, method, path string, body []byte) (*Response, error) {
	req, err := c.request(ctx, method, path, body)
	if err != nil {
		return nil, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read the answer: %w", err)
	}
	out := newResponse(resp)
	out.Body = data
	return out, nil
}

// newResponse is resp's status, request id and Retry-After (the body is the
// caller's to read).
func newResponse(resp *http.Response) *Response {
	out := &Response{Status: resp.StatusCode, RequestID: resp.Header.Get("X-Request-Id")}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		out.RetryAfter = time.Duration(s) * time.Second
	}
	return out
}

// ErrStream is a stream that ended without [DONE] or carried an error event.
var ErrStream = errors.New("stream failed")

// Stream POSTs body (which asks for "stream": true) and calls onEvent with
// each event's data until [DONE]. A non-200 answer is returned as a Response
// (and no event is read); an error event or a stream cut short is ErrStream.
func (c *Client) Stream(ctx context.Context, path string, body []byte, onEvent func(data []byte)) (*Response, error) {
	req, err := c.request(ctx, http.MethodPost, path, body)
	if err != nil {
		return nil, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := newResponse(resp)
	if resp.StatusCode != http.StatusOK {
		out.Body, _ = io.ReadAll(resp.Body)
		return out, nil
	}
	return out, ReadEvents(resp.Body, onEvent)
}

// ReadEvents parses server-sent events from r, calling onEvent with each
// event's data (valid only during the call), until "data: [DONE]". An event whose data is an object with
// an "error" member, or the end of r before [DONE], is ErrStream.
func ReadEvents(r io.Reader, onEvent func(data []byte)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	var data []byte
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) > 0 {
			if v, ok := bytes.CutPrefix(line, []byte("data:")); ok {
				if len(data) > 0 {
					data = append(data, '\n')
				}
				data = append(data, bytes.TrimPrefix(v, []byte(" "))...)
			}
			continue // other fields (event:, id:, comments) carry nothing we use
		}
		if len(data) == 0 {
			continue
		}
		if string(data) == "[DONE]" {
			return nil
		}
		var e struct {
			Error *json.RawMessage `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != nil {
			return fmt.Errorf("%w: %s", ErrStream, ErrorMessage(data))
		}
		onEvent(data)
		data = data[:0]
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrStream, err)
	}
	return fmt.Errorf("%w: ended before [DONE]", ErrStream)
}
