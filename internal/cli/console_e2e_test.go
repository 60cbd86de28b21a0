package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgellm/edgellm/internal/testutil"
)

// consoleLabel is the worker's region label and part of a prompt: the page
// must show it as text and never run it.
const consoleLabel = `<script>window.__pwned=1</script>`

// TestConsole drives serve's web console in headless Chromium: a real
// `edgellm serve --stages 2` in a swarm of three workers (one with the label
// '<script>…'), with an API key, all in one loopback-only network namespace
// with the browser (Ray needs the namespace, and the browser must reach
// serve's 127.0.0.1). The page asks for the key once; a prompt carrying HTML
// streams the API's greedy answer (the two-stage split's) and stays text; the
// reply names the peers and layers that ran it and the swarm view draws that
// chain; the workers are listed, the label as text; Stop aborts a long
// generation (serve's backend, the Ray head, logs the abort); an over-long
// max_tokens shows the API's error message; a worker leaving disappears; a
// killed backend shows as not ready and the page recovers without a reload
// (the next request forms a new cluster). Screenshots go to
// $EDGELLM_TEST_OUT when set, else the test's temporary directory.
func TestConsole(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	browser := findChromium()
	if browser == "" {
		t.Skip("skipping: no Chromium found (make browser installs Debian's chromium)")
	}
	if !testutil.InNetNS(t) {
		testutil.RunTestInNetNS(t, testutil.NewNetNS(t), "TestConsole", 20*time.Minute)
		return
	}
	c := newCLIEnv(t)
	shots := os.Getenv("EDGELLM_TEST_OUT")
	if shots == "" {
		shots = t.TempDir()
	}
	shots = filepath.Join(shots, "console")
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", shots)

	join := c.swarmInit()
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()} // three workers, serve
	t.Cleanup(func() { noProcessesOf(t, dirs) })
	a := c.startWorker(dirs[0], "--no-mdns", "--join", join)
	aID, aAddrs := a.state(t)
	b := c.startWorker(dirs[1], "--no-mdns", "--join", join, "--bootstrap", aAddrs[0])
	bID, _ := b.state(t)
	w := c.startWorker(dirs[2], "--no-mdns", "--join", join, "--bootstrap", aAddrs[0], "--label", consoleLabel)
	wID, _ := w.state(t)
	c.peersUntil(map[string]bool{aID: true, bID: true, wID: true}, "--join", join, "--no-mdns", "--bootstrap", aAddrs[0])

	const key = "console-test-key"
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dataDir := dirs[3]
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := c.command(ctx, "--data-dir", dataDir, "serve", "--listen", "127.0.0.1:0", "--p2p-listen", "/ip4/127.0.0.1/tcp/0",
		"--stages", "2", "--ray-address", "127.0.0.1", "--join", join, "--no-mdns", "--bootstrap", aAddrs[0],
		"--api-key-file", keyFile)
	cmd.Env = c.env
	var stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(2 * time.Minute):
				_ = cmd.Process.Kill()
			}
		}
	})
	rec := waitServeRecord(t, dataDir, exited, &stderr)

	// The API's own greedy answer, for the same single-turn prompt.
	prompt := `<img src=x onerror="window.__pwned=2">` + consoleLabel + " " + distPrompt
	const maxTokens = 24
	want := chatText(t, rec.URL, key, prompt, maxTokens)

	// Chromium's own temp files (an org.chromium.Chromium.* dir it leaves behind) go
	// under the test's temp dir, removed with it, not into the machine's /tmp.
	actx, acancel := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.WindowSize(1400, 1000),
		chromedp.Env("TMPDIR="+t.TempDir()))...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	fail := func(what string, err error) {
		t.Helper()
		shot(bctx, shots, "failed")
		t.Fatalf("%s: %v\nserve:\n%s", what, err, lastLines(stderr.String(), 30))
	}
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, actions...); err != nil {
			fail(what, err)
		}
	}
	// until waits for a JavaScript expression to be truthy.
	until := func(what, expr string, limit time.Duration) {
		t.Helper()
		if _, err := chromedp.Run(bctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(limit),
			chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
			fail(what, err)
		}
	}
	evalString := func(expr string) string {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Evaluate[string](expr))
		if err != nil {
			fail(expr, err)
		}
		return v
	}
	send := func(text string, max int) {
		t.Helper()
		run("send "+text, chromedp.SetValue(chromedp.CSS("#maxtokens"), strconv.Itoa(max)),
			chromedp.SetValue(chromedp.CSS("#prompt"), text), chromedp.Click(chromedp.CSS("#go")))
	}
	const lastReply = `document.querySelector(".msg.assistant:last-of-type")`

	run("open the page", chromedp.Navigate(rec.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS("#keyform")), chromedp.SendKeys(chromedp.CSS("#key"), key),
		chromedp.Click(chromedp.CSS("#keyform button")))
	until("models listed", `document.querySelectorAll("#model option").length > 0`, 30*time.Second)

	t.Run("chat streams the greedy answer, HTML stays text", func(t *testing.T) {
		send(prompt, maxTokens)
		until("answer done", lastReply+`?.dataset.state === "done"`, 2*time.Minute)
		got := evalString(lastReply + `.querySelector(".text").textContent`)
		user := evalString(`document.querySelector(".msg.user .text").textContent`)
		if got != want {
			t.Errorf("page answer %q\nwant the API's %q", got, want)
		}
		if user != prompt {
			t.Errorf("prompt shown as %q, want the text %q", user, prompt)
		}
		// Two stages: the chain names two peers with their layers, from 0 to 30.
		until("route shown", lastReply+`.querySelector(".route")?.textContent.includes("[0–")`, 20*time.Second)
		route := evalString(lastReply + `.querySelector(".route").textContent`)
		if strings.Count(route, "→") != 1 || !strings.Contains(route, "–30)") {
			t.Errorf("route under the reply %q; want two stages covering layers 0 to 30", route)
		}
		meta := evalString(lastReply + `.querySelector(".meta").textContent`)
		if !strings.Contains(meta, "TTFT") || !strings.Contains(meta, "tokens/s") || !strings.Contains(meta, "cached prompt tokens") {
			t.Errorf("timings under the reply: %q", meta)
		}
		t.Logf("reply meta: %q", meta)
	})

	t.Run("swarm shows the workers, the chain, the label as text", func(t *testing.T) {
		row := fmt.Sprintf(`document.querySelector('#peers tr[data-peer=%q]')`, wID)
		until("worker listed", row+`?.querySelector(".label").textContent === `+strconv.Quote(consoleLabel), time.Minute)
		for _, id := range []string{aID, bID} {
			until("worker "+id+" listed", fmt.Sprintf(`!!document.querySelector('#peers tr[data-peer=%q]')`, id), time.Minute)
		}
		until("label drawn", `[...document.querySelectorAll("#layers text")].some(e => e.textContent.includes(`+strconv.Quote(consoleLabel)+`))`, 10*time.Second)
		until("chain drawn", `document.querySelector("#chain").textContent.includes("layers 0–") && `+
			`document.querySelector("#chain").textContent.includes("–30")`, 10*time.Second)
		until("figures", `Number(document.querySelector('[data-figure="requests"] b')?.textContent) >= 1`, 10*time.Second)
		// serve's own prefix cache, counted from its backend (this swarm run
		// computed its prompts on the workers, so the count may be 0).
		until("KV blocks counted", `Number(document.querySelector('[data-figure="KV blocks held"] b')?.textContent) >= 0`, 15*time.Second)
		until("hit rate", `document.querySelector('[data-figure="prefix hit rate"] b')?.textContent.endsWith("%")`, 10*time.Second)
		shot(bctx, shots, "1-chat-and-swarm")
	})

	t.Run("stop aborts the generation", func(t *testing.T) {
		run("new chat", chromedp.Click(chromedp.CSS("#clear")))
		send("Write a very long story about a dragon and a knight.", 2000)
		until("some text", lastReply+`?.querySelector(".text").textContent.length > 20`, 2*time.Minute)
		run("stop", chromedp.Click(chromedp.CSS("#stop")))
		until("stopped", lastReply+`.dataset.state === "stopped"`, 10*time.Second)
		id := evalString(lastReply + `.dataset.requestId`)
		log := filepath.Join(dataDir, "logs", "backend.log")
		// serve's Abort or the cancelled stream, whichever reaches the backend
		// first, stops the generation; the backend logs it either way.
		stopped := func() bool {
			l := readFile(t, log)
			return strings.Contains(l, "abort "+id) || strings.Contains(l, "cancelled "+id)
		}
		deadline := time.Now().Add(20 * time.Second)
		for !stopped() && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		if id == "" || !stopped() {
			t.Errorf("the backend never logged the stop of %q:\n%s", id, lastLines(readFile(t, log), 20))
		}
		until("nothing running", `Number(document.querySelector('[data-figure="running"] b')?.textContent) === 0`, 20*time.Second)
		shot(bctx, shots, "2-stopped")
	})

	t.Run("a failed request shows the error message", func(t *testing.T) {
		send("hi", 1000000000)
		until("error", lastReply+`?.dataset.state === "error"`, 30*time.Second)
		msg := evalString(lastReply + `.querySelector(".error").textContent`)
		if msg == "" || strings.HasPrefix(msg, "HTTP ") {
			t.Errorf("error shown as %q; want the body's message", msg)
		}
		t.Logf("error shown: %q", msg)
		shot(bctx, shots, "3-error")
	})

	t.Run("a peer leaving disappears", func(t *testing.T) {
		if err := w.stop(t); err != nil {
			t.Fatalf("worker exit: %v", err)
		}
		until("worker gone", fmt.Sprintf(`!document.querySelector('#peers tr[data-peer=%q]')`, wID), 45*time.Second)
		shot(bctx, shots, "4-peer-left")
	})

	t.Run("backend restart shows and recovers", func(t *testing.T) {
		// SIGKILL: the backend heads serve's Ray cluster, whose processes
		// die with it (parent-death signal) or are reaped by the next
		// backend; the cleanup's noProcessesOf checks nothing is left. The
		// supervisor restarts it.
		pid := backendPid(t, cmd.Process.Pid)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		// Shown while /ready says the backend is restarting, or after it
		// from the node's restart count (a restart may fall between polls).
		until("not ready shown", `!document.querySelector("#banner").hidden`, 30*time.Second)
		shot(bctx, shots, "5-backend-down")
		until("ready again", `document.querySelector("#banner").hidden && document.querySelector("#ready").textContent === "ready"`, 3*time.Minute)
		send("Say hello.", 8)
		until("answer after restart", lastReply+`?.dataset.state === "done"`, 2*time.Minute)
		shot(bctx, shots, "6-recovered")
	})

	if pwned := evalString(`String(window.__pwned ?? "")`); pwned != "" {
		t.Errorf("a prompt or label ran as script: window.__pwned = %v", pwned)
	}
	bcancel()
	acancel()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("serve after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(3 * time.Minute):
		t.Fatalf("serve did not stop after SIGTERM")
	}
}

// findChromium is the browser the test drives: $EDGELLM_CHROMIUM, else one
// on PATH; "" when none.
func findChromium() string {
	if p := os.Getenv("EDGELLM_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// chatText is the API's non-streamed greedy answer to one user message.
func chatText(t *testing.T, url, key, prompt string, maxTokens int) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"model": "smollm2-135m", "temperature": 0, "max_tokens": maxTokens,
		"messages": []map[string]string{{"role": "user", "content": prompt}}})
	req, _ := http.NewRequest("POST", url+"/v1/chat/completions", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(data, &out); err != nil || resp.StatusCode != 200 || len(out.Choices) != 1 {
		t.Fatalf("chat completion: %d %v\n%s", resp.StatusCode, err, data)
	}
	return out.Choices[0].Message.Content
}

// backendPid is serve's Python backend: its child running python.
func backendPid(t *testing.T, servePid int) int {
	t.Helper()
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", servePid))
	for _, f := range tasks {
		data, _ := os.ReadFile(f)
		for _, field := range strings.Fields(string(data)) {
			pid, _ := strconv.Atoi(field)
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if bytes.Contains(cmdline, []byte("edgellm.server")) {
				return pid
			}
		}
	}
	t.Fatalf("no backend child of serve (pid %d)", servePid)
	return 0
}

// shot saves a full-page screenshot as dir/name.png (best effort).
func shot(ctx context.Context, dir, name string) {
	if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
		_ = os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
