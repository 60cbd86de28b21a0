// Package openai is the OpenAI-compatible HTTP API that `edgellm serve`
// mounts. It is an http.Handler (Server) over a small Engine interface,
// which serve implements with the local backend and the swarm; the package
// knows neither.
//
// # Routes
//
//	POST /v1/chat/completions   chat; "stream": true for server-sent events
//	POST /v1/completions        raw prompt (no chat template); streams too
//	GET  /v1/models             every model the node serves, here or via peers
//	GET  /v1/models/{id}        one of them
//	GET  /health                alive (always 200)
//	GET  /ready                 200 once Engine.Ready is nil, 503 with the reason
//	GET  /metrics               Prometheus text format, the server's own registry
//	GET  /openapi.json          the OpenAPI 3 document of exactly the above
//
// With Options.APIKey set, the /v1/ routes need "Authorization: Bearer
// <key>"; the other four never do.
//
// # Status codes
//
// Every error is an OpenAI error object {"error": {"message", "type",
// "param", "code"}}:
//
//	400 invalid_request_error  malformed JSON, wrong types, schema bounds
//	                           (param names the field, code as OpenAI's:
//	                           decimal_above_max_value, empty_array, ...),
//	                           no text at all, max_tokens not below the
//	                           model's context length; engine INVALID_ARGUMENT
//	401 invalid_request_error  missing key (code null) or wrong key (invalid_api_key)
//	404 invalid_request_error  unknown model (model_not_found), checked against
//	                           Engine.Models before queueing; engine NOT_FOUND;
//	                           unknown path ("Invalid URL (POST /v1/x)")
//	405 invalid_request_error  known path, other method, HEAD included (with Allow)
//	413 invalid_request_error  body over Options.MaxBodyBytes
//	429 requests               the model's queue is full, or engine
//	                           RESOURCE_EXHAUSTED (code rate_limit_exceeded,
//	                           Retry-After header)
//	503 server_error           engine UNAVAILABLE or ErrNoCapacity, or
//	                           Engine.Models failing with UNAVAILABLE
//	500 server_error           anything else (CANCELLED not caused by the
//	                           client included); logged with its cause, the
//	                           message only names the request id
//
// Bad input never yields a 5xx. A request whose client left before the
// answer started is counted as 499 in the metrics (nothing is sent).
//
// Decisions:
//
//   - The OpenAPI document (openapi.yaml, embedded) is the single source of
//     truth for request shapes and bounds: request bodies are validated
//     against its schemas with kin-openapi, and its errors are reworded as
//     OpenAI words them. Bounds live nowhere else, so the schema a fuzzer
//     (Schemathesis) reads and the validation cannot drift; tests also probe
//     each bound and check every response of the test suite against the
//     document. OpenAPI 3.0.3, the version every tool reads.
//   - The schema also holds the backend's own refusals where it can, so a
//     request it accepts is not refused further down: a prompt, or a whole
//     conversation, with no non-whitespace text (whitespace as Python's
//     str.isspace counts it, the backend's strip; the conversation rule is a
//     "not" over the messages, with its wording in x-error-message). What it
//     cannot hold, documented in its description: an unknown model (404),
//     and max_tokens plus the prompt beyond the model's context window (400;
//     the API refuses max_tokens ≥ the context length itself, the backend
//     the rest, as it knows the prompt's tokens).
//   - Unknown fields are ignored as OpenAI does, including fields OpenAI has
//     and EdgeLLM does not (tools, logprobs, response_format, penalties,
//     echo, suffix, best_of): they are not in the document. encoding/json
//     matches keys case-insensitively; keys that differ from a known field
//     only by case are dropped before decoding, so "Temperature" is ignored
//     like any unknown field instead of setting temperature.
//   - Null is accepted for every optional field and means unset (clients
//     send it; OpenAI accepts it). Unset sampling fields stay unset in the
//     GenerateRequest, so the backend's defaults apply (temperature 0 =
//     greedy, max_tokens 256 or what the context leaves).
//   - Roles: system, user, assistant, and "developer", sent as "system".
//     Content is a string or text parts, joined with "\n"; other part types
//     are a 400 naming the part. n must be 1. top_k is accepted as an
//     extension. seed is OpenAI's signed int64, passed to the backend's
//     uint64 bit for bit. max_completion_tokens wins over max_tokens.
//   - stream_options is read only when stream is true (OpenAI refuses it
//     otherwise; a schema cannot say so, and ignoring it harms nobody). The
//     request's Content-Type is not checked: a JSON body is read as JSON
//     (curl -d sends a form type by default).
//   - HEAD is refused (405, Allow: GET) although ServeMux would serve it
//     wherever GET is: the document lists GET only, and Schemathesis checks
//     that undocumented methods get 405. Unknown paths and methods answer
//     OpenAI error objects too, not ServeMux's plain text.
//   - Streams commit their 200 at the first engine response, so an error
//     before the first token (bad prompt length, no peer) still gets its own
//     status. An error after it is sent as one {"error": ...} event and the
//     stream ends without [DONE]; OpenAI's clients raise it.
//   - SSE framing is written by hand (one "data:" line per event, flushed):
//     three lines, no library needed.
//   - The response "id" (chatcmpl-… / cmpl-…, crypto/rand) is also the
//     backend request id, so Abort and logs line up; X-Request-Id carries it.
//     system_fingerprint is the model's weights CID.
//   - Queueing: one bounded FIFO per model (x/sync/semaphore, which is FIFO
//     and drops a waiter whose context ends), MaxConcurrent running and
//     MaxQueue waiting; one more gets 429. The model is looked up before
//     queueing, so a request for an unknown model never waits, and metric
//     labels only ever hold known model ids.
//     The queue is per model: two models on one backend both run, and
//     contend inside the engine. Engine.Models is called once per request,
//     so serve should answer it from a cache.
//   - Disconnects: net/http cancels a request's context when its connection
//     closes; the engine gets a context derived from it, and a failed write
//     cancels it too, so the backend's Abort is sent at once and the slot
//     is released by the handler's defer. A queued request leaves the queue
//     the same way.
//   - Timeouts: http.Server's WriteTimeout is not used (it bounds a whole
//     response and would cut long streams); instead every write (one event,
//     or a whole JSON body) has its own deadline (Options.WriteTimeout), so
//     a client that stops reading frees its slot. ReadTimeout only bounds
//     reading the request (net/http clears the deadline once the body is
//     read; tested with a stream that outlives it).
//   - Graceful shutdown (Shutdown): http.Server.Shutdown stops accepting and
//     waits for requests in flight, queued ones included; when the grace
//     period ends, Close cuts the rest, which cancels their contexts and so
//     aborts their generations.
//   - Metrics use their own registry (Metrics.Registry) with promhttp's
//     instrumentation; request labels (endpoint, model, route) travel in the
//     request's context and are filled as the handler learns them. TTFT is
//     measured from the request's arrival, queueing included, and recorded
//     with inter-token gaps once the engine reports its route. Node-wide
//     series that only serve knows are exported fields for serve to set.
//   - The served document leaves the bearer requirement out when no key is
//     set, so it never claims an auth that is not enforced.
//   - Fuzzing it with Schemathesis (all checks) passes against the test
//     double; against a real node, pin "model" to a served id (random ids
//     are 404s) and expect positive_data_acceptance to flag max_tokens
//     beyond the model's context window, a 400 no static schema can
//     predict.
package openai
