package cli

import (
	"errors"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"google.golang.org/protobuf/proto"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// parseInfer parses infer's flags as the command line would and builds the
// request.
func parseInfer(t *testing.T, args ...string) (*pb.GenerateRequest, error) {
	t.Helper()
	o := &inferOptions{model: "m"}
	flags := pflag.NewFlagSet("infer", pflag.ContinueOnError)
	o.bindFlags(flags)
	if err := flags.Parse(args); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	return o.request(flags, "hello")
}

func TestInferRequest(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want *pb.SamplingParams
		raw  bool
		sys  string
	}{
		{"nothing set", nil, &pb.SamplingParams{}, false, ""},
		{"explicit zeros stay set", []string{"--temperature", "0", "--max-tokens", "0", "--top-k", "0"},
			&pb.SamplingParams{Temperature: proto.Float32(0), MaxTokens: proto.Int32(0), TopK: proto.Int32(0)}, false, ""},
		{"all", []string{"--max-tokens", "-5", "--temperature", "0.7", "--top-p", "0.9", "--top-k", "40",
			"--seed", "7", "--stop", "\n\n", "--stop", "END"},
			&pb.SamplingParams{MaxTokens: proto.Int32(-5), Temperature: proto.Float32(0.7), TopP: proto.Float32(0.9),
				TopK: proto.Int32(40), Seed: proto.Uint64(7), Stop: []string{"\n\n", "END"}}, false, ""},
		{"raw", []string{"--raw"}, &pb.SamplingParams{}, true, ""},
		{"system", []string{"--system", "be brief"}, &pb.SamplingParams{}, false, "be brief"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := parseInfer(t, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(req.GetSampling(), tt.want) {
				t.Errorf("sampling = %v, want %v", req.GetSampling(), tt.want)
			}
			if tt.raw != (req.GetRawPrompt() == "hello") {
				t.Errorf("raw prompt = %q, want raw: %v", req.GetRawPrompt(), tt.raw)
			}
			if msgs := req.GetMessages().GetMessages(); tt.sys != "" &&
				(len(msgs) != 2 || msgs[0].GetContent() != tt.sys || msgs[1].GetContent() != "hello") {
				t.Errorf("messages = %v, want system then user", msgs)
			}
			if !strings.HasPrefix(req.GetRequestId(), "cli-") {
				t.Errorf("request id = %q", req.GetRequestId())
			}
		})
	}
	if _, err := parseInfer(t, "--raw", "--system", "x"); !errors.Is(err, ErrUsage) {
		t.Errorf("--raw with --system: err = %v, want ErrUsage", err)
	}
}

func TestReadPrompt(t *testing.T) {
	tests := []struct {
		name, arg, stdin, want string
		wantErr                error
	}{
		{"argument", "hi there", "", "hi there", nil},
		{"stdin", "-", "from stdin\n", "from stdin", nil},
		{"stdin keeps inner newlines", "-", "a\nb\n", "a\nb", nil},
		{"empty argument", "", "", "", ErrInvalidArgument},
		{"blank argument", " \t\n", "", "", ErrInvalidArgument},
		{"empty stdin", "-", "", "", ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readPrompt(strings.NewReader(tt.stdin), tt.arg)
			if !errors.Is(err, tt.wantErr) || got != tt.want {
				t.Errorf("readPrompt = %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
