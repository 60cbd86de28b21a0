package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/edgellm/edgellm/internal/backend"
	"github.com/edgellm/edgellm/internal/serve"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

const (
	// abortGrace is how long an aborted generation may take to end before
	// the node cancels the stream itself.
	abortGrace = 5 * time.Second
	// maxStdinPrompt caps a prompt read from stdin.
	maxStdinPrompt = 64 << 20
)

const inferLong = `Answer a prompt. With no swarm configured (or with --local) it runs on this
machine: the node starts its backend, loads the model (the first use converts
it, which takes about 40 s; progress shows on a terminal), and streams the
answer to stdout as it is generated.

With a swarm configured (--join, or <data-dir>/swarm.join from edgellm swarm
init) the model runs across the swarm's workers: infer finds the live workers
and their RTTs, plans which worker runs which contiguous layers (--stages,
--max-price, --max-latency; auto picks one worker when one can hold the model),
starts a Ray head with a fresh token on this machine's backend (bound to
--ray-address), asks each chosen worker to join it over the encrypted swarm
connection, streams the answer, and then has every worker leave and stops its
own head, on success, error and Ctrl-C alike. This machine runs no layers: it
tokenizes, samples and drives the pipeline. One line per stage (peer and
layers) goes to stderr. A plan that cannot be made as asked (e.g. more stages
than workers) exits 2, a model no worker serves exits 3. A worker lost during
generation is replaced (its layers move to another worker, the prompt and the
tokens so far are replayed, one warning line goes to stderr) and the answer
continues; infer exits 4 only when no worker can take the lost layers or after
two failovers.

PROMPT is one argument (quote it), or - to read it from stdin. The model's chat
template is applied unless --raw is given.

Sampling flags that are not given are left to the backend's defaults: greedy
decoding (temperature 0, reproducible), top-p 1, no top-k, at most 256 new
tokens (clamped to the context window). The backend checks ranges and rejects
out-of-range values with exit code 2.

--json prints one object instead of the streamed text: text, model,
weights_cid, request_id, prompt_tokens, completion_tokens, finish_reason
("stop": end of sequence, "length": max tokens, "stop_string": a --stop
string), ttft_ms, tokens_per_s (decode), prefill_tokens_per_s, total_ms,
token_ids, cached_prompt_tokens (prompt tokens whose KV came from cached
blocks), and for a swarm run stages (peer_id, layer_start, layer_end,
ray_address, rtt_ms).

With --local and a swarm configured, the prompt still runs here, but infer
first looks its prefix up in the swarm: a worker that holds the prompt's
leading KV blocks hands over a manifest of them and this machine's IPFS node
fetches them from the worker's instead of computing that prefix. When that
fails the whole prompt is computed, as without a swarm.

--session ID runs the prompt on the cluster an open session keeps (edgellm
session open): no discovery, planning or Ray start. The session's model is
used; the swarm and planning flags (--local, --stages, --join, ...) make no
sense with it and exit 2. An unknown or ended session exits 3.

When edgellm serve runs on the same data directory, infer sends the prompt to
it (through <data-dir>/run/serve.sock) instead of starting a backend: the
same output and exit codes, in a fraction of the time. serve then chooses
where the prompt runs, so --local, --stages and the other swarm flags exit 2.

Ctrl-C aborts the generation and exits with code 130.`

// inferOptions holds the infer command's flags.
type inferOptions struct {
	model       string
	maxTokens   int32
	temperature float32
	topP        float32
	topK        int32
	seed        uint64
	stop        []string
	system      string
	raw         bool
	json        bool
	dist        distOptions
	// session runs the prompt on an open session's cluster (session.go).
	session string
}

func newInferCommand(app *App) *cobra.Command {
	o := &inferOptions{}
	cmd := &cobra.Command{
		Use:   "infer [flags] PROMPT",
		Short: "Answer a prompt with a language model",
		Long:  inferLong,
		Example: `  edgellm infer "What is the capital of France?"
  echo "Write a haiku about the sea" | edgellm infer --temperature 0.8 --seed 7 -
  edgellm infer --json --max-tokens 32 "Say hi"
  edgellm infer --session "$(edgellm session open --stages 2)" "Hello"`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error { return app.runInfer(cmd, o, args[0]) },
	}
	o.bindFlags(cmd.Flags())
	o.dist.register(cmd)
	cmd.Flags().StringVar(&o.session, "session", "", "run on the cluster of this open session (edgellm session open)")
	return cmd
}

// bindFlags defines infer's flags on f.
func (o *inferOptions) bindFlags(f *pflag.FlagSet) {
	f.StringVar(&o.model, "model", "", "model id (default $EDGELLM_MODEL, else node.model, else smollm2-135m)")
	f.Int32Var(&o.maxTokens, "max-tokens", 0, "most tokens to generate (backend default 256, clamped to the context window)")
	f.Float32Var(&o.temperature, "temperature", 0, "sampling temperature in [0, 2]; 0 is greedy (backend default 0)")
	f.Float32Var(&o.topP, "top-p", 0, "nucleus sampling mass in (0, 1] (backend default 1)")
	f.Int32Var(&o.topK, "top-k", 0, "sample from the k most likely tokens; 0 disables (backend default 0)")
	f.Uint64Var(&o.seed, "seed", 0, "seed for reproducible sampling (backend default: random)")
	f.StringArrayVar(&o.stop, "stop", nil, "stop before this string; repeat for several")
	f.StringVar(&o.system, "system", "", "system message placed before the prompt")
	f.BoolVar(&o.raw, "raw", false, "send the prompt as raw text, without the chat template")
	f.BoolVar(&o.json, "json", false, "print one JSON object with the text, usage and timings")
}

// runInfer answers one prompt on this machine's backend.
func (app *App) runInfer(cmd *cobra.Command, o *inferOptions, arg string) error {
	if cmd.Flags().Changed("session") {
		return app.runInSession(cmd, o, arg)
	}
	prompt, err := readPrompt(app.stdin, arg)
	if err != nil {
		return err
	}
	cfg, err := app.config(cmd)
	if err != nil {
		return err
	}
	if o.model == "" {
		o.model = cfg.Node.Model
	}
	req, err := o.request(cmd.Flags(), prompt)
	if err != nil {
		return err
	}
	if err := checkTrustedPeers(o.dist.trusted); err != nil { // before anything starts
		return err
	}
	if rec, err := serve.Running(cfg.DataDir); err == nil {
		return app.runThroughServe(cmd, o, rec, req)
	}
	if o.dist.swarmConfigured(cfg) {
		return app.runDistributed(cmd, o, cfg, req)
	}
	swarm, err := app.joinForLocal(cfg, &o.dist) // --local in a swarm: reuse its cached prefix (local_swarm.go)
	if err != nil {
		return err
	}
	defer swarm.Close()
	n, err := app.openNode(app.interrupt, cfg, swarm.openOptions()...)
	if err != nil {
		return err
	}
	defer app.closeQuietly(n)
	info, err := app.loadModel(app.interrupt, n, o.model)
	if err != nil {
		return err
	}
	swarm.fillManifest(cmd.Context(), n, req)
	res, err := app.generate(cmd.Context(), n, req, o.json)
	if err != nil {
		return err
	}
	res.WeightsCID = info.GetWeightsCid()
	if o.json {
		return writeJSON(app.stdout, res)
	}
	return nil
}

// runThroughServe answers the prompt through the serve running on the data
// directory (its socket serves the backend's Inference service, routed as
// serve routes an HTTP request), so no backend starts here. Flags that choose
// where a prompt runs are serve's to choose: they exit 2.
func (app *App) runThroughServe(cmd *cobra.Command, o *inferOptions, rec *serve.Record, req *pb.GenerateRequest) error {
	for _, name := range append(sessionConflicts, "prefill-peer", "decode-peer") {
		if cmd.Flags().Changed(name) {
			return fmt.Errorf("%w: --%s cannot be used while edgellm serve (pid %d) runs on this data directory: it chooses where prompts run",
				ErrUsage, name, rec.PID)
		}
	}
	return app.generateOnSocket(cmd, rec.Socket, req, o.json, func(res *inferResult) {
		for _, m := range rec.Models {
			if m.ID == req.GetModel() {
				res.WeightsCID = m.WeightsCID
			}
		}
	})
}

// generateOnSocket streams req through the Inference service on a unix
// socket (a session daemon's or serve's) exactly as through a backend; fill
// adds what the socket's owner knows to the --json result.
func (app *App) generateOnSocket(cmd *cobra.Command, socket string, req *pb.GenerateRequest, jsonOut bool,
	fill func(*inferResult)) error {
	b, err := backend.Dial("unix:" + socket)
	if err != nil {
		return err
	}
	defer b.Close()
	res, err := app.generate(cmd.Context(), b, req, jsonOut)
	if err != nil {
		return err
	}
	fill(res)
	if jsonOut {
		return writeJSON(app.stdout, res)
	}
	return nil
}

// readPrompt returns the prompt argument, or stdin for "-"; an empty prompt
// is an invalid argument.
func readPrompt(stdin io.Reader, arg string) (string, error) {
	prompt := arg
	if arg == "-" {
		data, err := io.ReadAll(io.LimitReader(stdin, maxStdinPrompt+1))
		if err != nil {
			return "", fmt.Errorf("read prompt from stdin: %w", err)
		}
		if len(data) > maxStdinPrompt {
			return "", fmt.Errorf("%w: prompt on stdin is larger than %d bytes", ErrInvalidArgument, maxStdinPrompt)
		}
		prompt = strings.TrimSuffix(string(data), "\n")
	}
	if strings.TrimSpace(prompt) == "" {
		return "", fmt.Errorf("%w: empty prompt", ErrInvalidArgument)
	}
	return prompt, nil
}

// request builds the GenerateRequest; sampling flags not given stay unset.
func (o *inferOptions) request(flags *pflag.FlagSet, prompt string) (*pb.GenerateRequest, error) {
	req := &pb.GenerateRequest{RequestId: newRequestID(), Model: o.model, Sampling: &pb.SamplingParams{Stop: o.stop}}
	switch {
	case o.raw && o.system != "":
		return nil, fmt.Errorf("%w: --raw and --system cannot be combined", ErrUsage)
	case o.raw:
		req.Input = &pb.GenerateRequest_RawPrompt{RawPrompt: prompt}
	case o.system != "":
		req.Input = &pb.GenerateRequest_Messages{Messages: &pb.ChatMessages{Messages: []*pb.ChatMessage{
			{Role: "system", Content: o.system}, {Role: "user", Content: prompt}}}}
	default:
		req.Input = &pb.GenerateRequest_Prompt{Prompt: prompt}
	}
	sp := req.Sampling
	set := flags.Changed
	if set("max-tokens") {
		sp.MaxTokens = &o.maxTokens
	}
	if set("temperature") {
		sp.Temperature = &o.temperature
	}
	if set("top-p") {
		sp.TopP = &o.topP
	}
	if set("top-k") {
		sp.TopK = &o.topK
	}
	if set("seed") {
		sp.Seed = &o.seed
	}
	return req, nil
}

// newRequestID returns a random id for Abort.
func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return "cli-" + hex.EncodeToString(b[:])
}

// loadModel loads the model, showing progress on a terminal.
func (app *App) loadModel(ctx context.Context, b backend.Backend, model string) (*pb.ModelInfo, error) {
	line := newProgressLine(app.stderr, model)
	defer line.clear()
	phase := ""
	info, err := b.LoadModel(ctx, model, func(p *pb.LoadModelProgress) {
		if p.GetPhase() != phase {
			phase = p.GetPhase()
			app.log.Info("loading model", "model", model, "phase", phase)
		}
		line.update(p)
	})
	if err != nil && ctx.Err() != nil {
		return nil, fmt.Errorf("%w: while loading %s", ErrInterrupted, model)
	}
	return info, err
}

// closeQuietly closes c, logging a failure.
func (app *App) closeQuietly(c io.Closer) {
	if err := c.Close(); err != nil {
		app.log.Warn("stopping the backend", "err", err)
	}
}

// sessionConflicts are infer's flags that choose where and how a prompt
// runs; an open session has already chosen.
var sessionConflicts = []string{"local", "stages", "join", "join-file", "bootstrap", "no-mdns", "max-price", "max-latency", "trusted-peers",
	"listen", "ray-address", "discover-timeout"}

// runInSession answers the prompt on an open session's cluster: it dials
// the session daemon's socket and streams exactly as a local infer does.
func (app *App) runInSession(cmd *cobra.Command, o *inferOptions, arg string) error {
	for _, name := range sessionConflicts {
		if cmd.Flags().Changed(name) {
			return fmt.Errorf("%w: --%s cannot be used with --session (the session's cluster is already formed)", ErrUsage, name)
		}
	}
	if err := checkSessionArg(o.session); err != nil {
		return err
	}
	prompt, err := readPrompt(app.stdin, arg)
	if err != nil {
		return err
	}
	cfg, err := app.config(cmd)
	if err != nil {
		return err
	}
	info, err := liveSession(cfg.DataDir, o.session)
	if err != nil {
		return err
	}
	if cmd.Flags().Changed("model") && o.model != info.Model {
		return fmt.Errorf("%w: session %s serves %s, not %s", ErrInvalidArgument, info.ID, info.Model, o.model)
	}
	o.model = info.Model
	req, err := o.request(cmd.Flags(), prompt)
	if err != nil {
		return err
	}
	return app.generateOnSocket(cmd, info.Socket, req, o.json, func(res *inferResult) {
		res.WeightsCID, res.Stages = info.WeightsCID, info.Stages
	})
}
