package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgellm/edgellm/internal/batch"
)

const batchLong = `Run a file of requests through a running serve, as OpenAI's Batch API does.

INPUT.jsonl holds one request a line, in the Batch API's format:

  {"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions",
   "body": {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16}}

("url" is /v1/chat/completions or /v1/completions). Each completed request
appends one line to the output file (default INPUT.output.jsonl), in the
Batch API's output format: {"id", "custom_id", "response": {"status_code",
"request_id", "body"}, "error"}, in completion order. A line that cannot run
(unknown url, invalid body, duplicate custom_id) gets an error line; a line
with no custom_id (not JSON, none given) is reported on stderr by number.

The batch talks to --url, else to the serve running on the data directory.
Requests run --concurrency at a time. A line is written, and synced, only
when its request completed, so the file is never half-written: rerun the same
command after Ctrl-C (or a crash) and only the custom_ids without a line run.

Exit status: 0 when every line succeeded, 1 when some failed (their lines
say why), 2 for bad arguments, 4 when no serve answers, 130 on Ctrl-C.`

type batchOptions struct {
	target      serveTarget
	output      string
	model       string
	concurrency int
}

func newBatchCommand(app *App) *cobra.Command {
	o := &batchOptions{}
	cmd := &cobra.Command{
		Use:   "batch INPUT.jsonl [-o OUTPUT.jsonl] [--concurrency N] [--model ID] [--url URL]",
		Short: "Run a JSONL file of OpenAI Batch API requests through a running serve",
		Long:  batchLong,
		Example: `  edgellm batch prompts.jsonl -o answers.jsonl --concurrency 4
  edgellm batch prompts.jsonl --model smollm2-135m --url http://127.0.0.1:8080`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error { return app.runBatch(cmd, args[0], o) },
	}
	o.target.register(cmd)
	f := cmd.Flags()
	f.StringVarP(&o.output, "output", "o", "", "output file, appended to and resumed from (default INPUT.output.jsonl)")
	f.StringVar(&o.model, "model", "", "model for lines whose body names none")
	f.IntVar(&o.concurrency, "concurrency", 4, "requests in flight at most")
	return cmd
}

// outputPath is -o, else INPUT with .output.jsonl for its .jsonl.
func (o *batchOptions) outputPath(input string) string {
	if o.output != "" {
		return o.output
	}
	return strings.TrimSuffix(input, ".jsonl") + ".output.jsonl"
}

func (app *App) runBatch(cmd *cobra.Command, input string, o *batchOptions) error {
	if o.concurrency < 1 {
		return fmt.Errorf("%w: --concurrency must be at least 1", ErrInvalidArgument)
	}
	out := o.outputPath(input)
	if dir := filepath.Dir(out); !isDir(dir) {
		return fmt.Errorf("%w: output %s: directory %s does not exist", ErrInvalidArgument, out, dir)
	}
	if same(input, out) {
		return fmt.Errorf("%w: the output file is the input file", ErrInvalidArgument)
	}
	in, err := os.Open(input)
	if err != nil {
		return fmt.Errorf("%w: input: %w", ErrInvalidArgument, err)
	}
	reqs, problems, err := batch.ParseInput(in, o.model)
	in.Close()
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalidArgument, input, err)
	}
	for _, p := range problems {
		fmt.Fprintf(app.stderr, "edgellm: %s: %s (no output line)\n", input, p)
	}
	client, _, err := o.target.client(app.interrupt, app, cmd)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(out, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%w: output: %w", ErrInvalidArgument, err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fmt.Errorf("%w: another batch is writing %s", ErrUsage, out)
	}
	done, err := batch.LoadOutput(f)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalidArgument, out, err)
	}
	pending := batch.Pending(reqs, done)
	if already := len(reqs) - len(pending); already > 0 {
		fmt.Fprintf(app.stderr, "edgellm: %s already holds %d of %d lines; running the other %d\n", out, already, len(reqs), len(pending))
	}

	bar := newBatchProgress(app, len(pending))
	sum, err := batch.Run(app.interrupt, pending, f, batch.Options{Client: client, Concurrency: o.concurrency,
		OnLine: func(line batch.Output) {
			if line.Error == nil || line.Error.Code != batch.CodeDuplicate {
				done.Lines[line.CustomID] = line
			}
			bar.add(line.OK())
		}})
	bar.clear()
	switch {
	case err == nil:
	case app.interrupt.Err() != nil:
		fmt.Fprintf(app.stderr, "edgellm: stopped: %d lines written to %s, %d not run; rerun the same command to finish\n",
			sum.Succeeded+sum.Failed, out, sum.NotRun)
		return fmt.Errorf("%w: batch", ErrInterrupted)
	case errors.Is(err, batch.ErrUnreachable):
		return fmt.Errorf("%w: %w; %d lines not run (rerun the same command to finish)", ErrUnavailable, err, sum.NotRun)
	default:
		return err
	}

	failed := len(problems)
	for _, r := range reqs {
		line, ok := done.Lines[r.CustomID]
		if (r.Err != nil && r.Err.Code == batch.CodeDuplicate) || !ok || !line.OK() {
			failed++
		}
	}
	total := len(reqs) + len(problems)
	if failed > 0 {
		return fmt.Errorf("%d of %d lines failed (their lines in %s say why)", failed, total, out)
	}
	fmt.Fprintf(app.stderr, "edgellm: %d lines succeeded; answers in %s\n", total, out)
	return nil
}

// batchProgress is the batch's status line on a terminal: a bar, the rate,
// and the time left.
type batchProgress struct {
	line         *statusLine
	total        int
	done, failed int
	start, drawn time.Time
}

func newBatchProgress(app *App, total int) *batchProgress {
	p := &batchProgress{line: newStatusLine(app.stderr), total: total, start: time.Now()}
	p.draw()
	return p
}

func (p *batchProgress) add(ok bool) {
	p.done++
	if !ok {
		p.failed++
	}
	if time.Since(p.drawn) >= progressEvery || p.done == p.total {
		p.draw()
	}
}

func (p *batchProgress) draw() {
	p.drawn = time.Now()
	p.line.draw(batchProgressText(p.done, p.failed, p.total, time.Since(p.start)))
}

func (p *batchProgress) clear() { p.line.clear() }

// batchProgressText renders "batch [#####-----]  50% 10/20  2.1 req/s  5s
// left  (1 failed)".
func batchProgressText(done, failed, total int, elapsed time.Duration) string {
	const width = 20
	filled := 0
	if total > 0 {
		filled = min(done, total) * width / total
	}
	s := fmt.Sprintf("batch [%s%s] %d/%d", strings.Repeat("#", filled), strings.Repeat("-", width-filled), done, total)
	if done > 0 && elapsed > 0 {
		rate := float64(done) / elapsed.Seconds()
		left := time.Duration(float64(total-done) / rate * float64(time.Second)).Round(time.Second)
		s += fmt.Sprintf("  %.1f req/s  %s left", rate, left)
	}
	if failed > 0 {
		s += fmt.Sprintf("  (%d failed)", failed)
	}
	return s
}

func isDir(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

// same reports whether a and b name the same existing file.
func same(a, b string) bool {
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	if errors.Is(err, fs.ErrNotExist) || err != nil {
		return false
	}
	return os.SameFile(sa, sb)
}
