package batch

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseInput(t *testing.T) {
	chat := func(id, body string) string {
		return `{"custom_id": "` + id + `", "method": "POST", "url": "/v1/chat/completions", "body": ` + body + `}`
	}
	for _, tc := range []struct {
		name, line, model string
		problem           string // substring of the stderr problem
		code              string // error line's code; "" for a runnable line
		body              string // the body sent, when runnable
	}{
		{"chat", chat("a", `{"model": "m", "messages": []}`), "", "", "", `{"model": "m", "messages": []}`},
		{"completion", `{"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {"model": "m", "prompt": "x"}}`, "", "", "", `{"model": "m", "prompt": "x"}`},
		{"model filled", chat("a", `{"messages": []}`), "smol", "", "", `{"messages":[],"model":"smol"}`},
		{"model kept", chat("a", `{"model": "m"}`), "smol", "", "", `{"model": "m"}`},
		{"not JSON", `{"custom_id": "a", `, "", "not a JSON object", "", ""},
		{"not an object", `[1, 2]`, "", "not a JSON object", "", ""},
		{"no custom_id", `{"method": "POST", "url": "/v1/completions", "body": {}}`, "", `no "custom_id"`, "", ""},
		{"empty custom_id", `{"custom_id": "", "method": "POST"}`, "", `no "custom_id"`, "", ""},
		{"numeric custom_id", `{"custom_id": 3, "method": "POST"}`, "", `no "custom_id"`, "", ""},
		{"unknown url", `{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m"}}`, "", "", CodeInvalidURL, ""},
		{"GET", `{"custom_id": "a", "method": "GET", "url": "/v1/completions", "body": {}}`, "", "", CodeInvalidMethod, ""},
		{"body not an object", chat("a", `"hi"`), "m", "", CodeInvalidBody, ""},
		{"no body", `{"custom_id": "a", "method": "POST", "url": "/v1/completions"}`, "m", "", CodeInvalidBody, ""},
		{"stream", chat("a", `{"model": "m", "stream": true}`), "", "", CodeInvalidBody, ""},
		{"no model anywhere", chat("a", `{"messages": []}`), "", "", CodeInvalidBody, ""},
		{"model not a string", chat("a", `{"model": 1}`), "m", "", CodeInvalidBody, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reqs, problems, err := ParseInput(strings.NewReader("\n"+tc.line+"\n"), tc.model)
			if err != nil {
				t.Fatal(err)
			}
			if tc.problem != "" {
				if len(reqs) != 0 || len(problems) != 1 || problems[0].Line != 2 || !strings.Contains(problems[0].String(), tc.problem) {
					t.Fatalf("reqs %+v, problems %+v; want one problem on line 2 with %q", reqs, problems, tc.problem)
				}
				return
			}
			if len(reqs) != 1 || len(problems) != 0 || reqs[0].Line != 2 || reqs[0].CustomID != "a" {
				t.Fatalf("reqs %+v, problems %+v", reqs, problems)
			}
			r := reqs[0]
			if tc.code != "" {
				if r.Err == nil || r.Err.Code != tc.code || r.Err.Message == "" {
					t.Fatalf("error %+v, want code %s", r.Err, tc.code)
				}
				return
			}
			if r.Err != nil || string(r.Body) != tc.body {
				t.Fatalf("error %+v, body %s; want body %s", r.Err, r.Body, tc.body)
			}
		})
	}
}

func TestParseInputDuplicates(t *testing.T) {
	in := `{"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {"model": "m", "prompt": "1"}}
{"custom_id": "b", "method": "POST", "url": "/v1/completions", "body": {"model": "m", "prompt": "2"}}
{"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {"model": "m", "prompt": "3"}}`
	reqs, _, err := ParseInput(strings.NewReader(in), "")
	if err != nil || len(reqs) != 3 {
		t.Fatal(reqs, err)
	}
	if reqs[0].Err != nil || reqs[2].Err == nil || reqs[2].Err.Code != CodeDuplicate || !strings.Contains(reqs[2].Err.Message, "line 3") ||
		!strings.Contains(reqs[2].Err.Message, "line 1") {
		t.Errorf("first %+v, duplicate %+v", reqs[0].Err, reqs[2].Err)
	}
}

func TestPending(t *testing.T) {
	dup := &Error{Code: CodeDuplicate, Message: "dup"}
	reqs := []Request{{CustomID: "a"}, {CustomID: "b"}, {CustomID: "a", Err: dup}, {CustomID: "c", Err: &Error{Code: CodeInvalidURL}},
		{CustomID: "a", Err: dup}}
	ok := func(id string) string {
		return `{"id":"x","custom_id":"` + id + `","response":{"status_code":200,"request_id":"r","body":{}},"error":null}` + "\n"
	}
	dupLine := `{"id":"y","custom_id":"a","response":null,"error":{"code":"duplicate_custom_id","message":"dup"}}` + "\n"
	for _, tc := range []struct {
		name, output string
		want         []string // pending custom_ids, duplicates marked with *
	}{
		{"nothing done", "", []string{"a", "b", "a*", "c", "a*"}},
		{"one done", ok("b"), []string{"a", "a*", "c", "a*"}},
		{"duplicate reported, first not run", dupLine, []string{"a", "b", "c", "a*"}},
		{"first run, no duplicate reported", ok("a"), []string{"b", "a*", "c", "a*"}},
		{"everything", ok("a") + ok("b") + dupLine + dupLine + `{"id":"z","custom_id":"c","response":null,"error":{"code":"invalid_url","message":"u"}}` + "\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done, err := ParseOutput([]byte(tc.output))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range Pending(reqs, done) {
				if r.Err != nil && r.Err.Code == CodeDuplicate {
					got = append(got, r.CustomID+"*")
				} else {
					got = append(got, r.CustomID)
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("pending %v, want %v", got, tc.want)
			}
		})
	}
}

func TestLoadOutputTruncatesACutOffLine(t *testing.T) {
	whole := `{"id":"x","custom_id":"a","response":{"status_code":200,"request_id":"r","body":{}},"error":null}` + "\n"
	path := filepath.Join(t.TempDir(), "out.jsonl")
	if err := os.WriteFile(path, []byte(whole+`{"id":"x","custom_id":"b","resp`), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	done, err := LoadOutput(f)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := done.Lines["a"]; !ok || len(done.Lines) != 1 {
		t.Errorf("done %+v", done.Lines)
	}
	if data, _ := os.ReadFile(path); string(data) != whole {
		t.Errorf("file after load: %q", data)
	}
}

func TestParseOutputRejectsOtherFiles(t *testing.T) {
	for _, in := range []string{`{"prompt": "x"}`, `not json`, `{"custom_id":"a","response":null,"error":null}`} {
		if _, err := ParseOutput([]byte(in + "\n")); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("ParseOutput(%s) = %v", in, err)
		}
	}
}

func TestOutputOK(t *testing.T) {
	for _, tc := range []struct {
		line string
		ok   bool
	}{
		{`{"custom_id":"a","response":{"status_code":200,"body":{}}}`, true},
		{`{"custom_id":"a","response":{"status_code":400,"body":{}}}`, false},
		{`{"custom_id":"a","error":{"code":"invalid_url","message":"m"}}`, false},
	} {
		var o Output
		if err := json.Unmarshal([]byte(tc.line), &o); err != nil {
			t.Fatal(err)
		}
		if o.OK() != tc.ok {
			t.Errorf("%s: OK = %v", tc.line, o.OK())
		}
	}
}
