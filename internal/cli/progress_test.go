package cli

import (
	"testing"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

func TestProgressText(t *testing.T) {
	tests := []struct {
		p    *pb.LoadModelProgress
		want string
	}{
		{&pb.LoadModelProgress{Phase: "loading"}, "loading m: loading ..."},
		{&pb.LoadModelProgress{Phase: "hashing weights", Done: 7}, "loading m: hashing weights (7)"},
		{&pb.LoadModelProgress{Phase: "converting GGUF", Done: 5, Total: 10},
			"loading m: converting GGUF [##########----------]  50% (5/10)"},
		{&pb.LoadModelProgress{Phase: "x", Done: 12, Total: 10}, "loading m: x [####################] 100% (10/10)"},
	}
	for _, tt := range tests {
		if got := progressText("m", tt.p); got != tt.want {
			t.Errorf("progressText(%v) = %q, want %q", tt.p, got, tt.want)
		}
	}
}
