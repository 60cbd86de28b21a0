package p2p

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// The acceptance rules as a pure function of the request, what the worker
// advertises and the time.
func TestCheckJoin(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	bounds := joinBounds{maxWait: time.Minute, minHeartbeat: time.Second, maxHeartbeat: 10 * time.Second}
	models := []Model{
		{ID: "a", WeightsCID: "cid-a", NumLayers: 30, LayerRanges: []LayerRange{{0, 10}, {20, 30}}},
		{ID: "whole", WeightsCID: "cid-w", NumLayers: 12}, // no ranges: held whole
	}
	ok := JoinRequest{Model: "a", WeightsCID: "cid-a", Layers: LayerRange{0, 10},
		Deadline: now.Add(30 * time.Second), HeartbeatInterval: 5 * time.Second}
	cases := []struct {
		name string
		edit func(*JoinRequest)
		want RefuseReason // 0: accepted
	}{
		{"first range", func(*JoinRequest) {}, 0},
		{"inside the second range", func(r *JoinRequest) { r.Layers = LayerRange{22, 30} }, 0},
		{"across both ranges", func(r *JoinRequest) { r.Layers = LayerRange{5, 25} }, RefuseLayerRange},
		{"in the gap", func(r *JoinRequest) { r.Layers = LayerRange{10, 20} }, RefuseLayerRange},
		{"past the end", func(r *JoinRequest) { r.Layers = LayerRange{20, 31} }, RefuseLayerRange},
		{"whole model, no ranges", func(r *JoinRequest) { r.Model, r.WeightsCID, r.Layers = "whole", "cid-w", LayerRange{0, 12} }, 0},
		{"whole model, past its layers", func(r *JoinRequest) { r.Model, r.WeightsCID, r.Layers = "whole", "cid-w", LayerRange{0, 13} }, RefuseLayerRange},
		{"unknown model", func(r *JoinRequest) { r.Model = "b" }, RefuseUnknownModel},
		{"model named by its CID", func(r *JoinRequest) { r.Model = "cid-a" }, RefuseUnknownModel},
		{"other weights", func(r *JoinRequest) { r.WeightsCID = "cid-w" }, RefuseWrongWeights},
		{"deadline now", func(r *JoinRequest) { r.Deadline = now }, RefuseDeadline},
		{"deadline past", func(r *JoinRequest) { r.Deadline = now.Add(-time.Hour) }, RefuseDeadline},
		{"deadline at the limit", func(r *JoinRequest) { r.Deadline = now.Add(time.Minute) }, 0},
		{"deadline too far", func(r *JoinRequest) { r.Deadline = now.Add(time.Minute + time.Millisecond) }, RefuseDeadline},
		{"heartbeat at the bounds", func(r *JoinRequest) { r.HeartbeatInterval = time.Second }, 0},
		{"heartbeat too fast", func(r *JoinRequest) { r.HeartbeatInterval = time.Second - 1 }, RefuseHeartbeatInterval},
		{"heartbeat too slow", func(r *JoinRequest) { r.HeartbeatInterval = 11 * time.Second }, RefuseHeartbeatInterval},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := ok
			tc.edit(&req)
			got := checkJoin(&req, models, now, bounds)
			switch {
			case tc.want == 0 && got != nil:
				t.Fatalf("refused: %v", got)
			case tc.want != 0 && (got == nil || got.Reason != tc.want || got.Message == ""):
				t.Fatalf("got %v, want %s", got, tc.want)
			}
		})
	}
}

func TestCheckHostPort(t *testing.T) {
	for addr, valid := range map[string]bool{
		"10.0.0.1:6379": true, "[fd00::1]:6379": true, "head.lan:6379": true,
		"10.0.0.1": false, ":6379": false, "10.0.0.1:0": false, "10.0.0.1:70000": false,
		"0.0.0.0:6379": false, "[::]:6379": false, "224.0.0.1:6379": false, "10.0.0.1:http": false,
		strings.Repeat("a", 300) + ":1": false,
	} {
		if err := checkHostPort(addr); (err == nil) != valid {
			t.Errorf("checkHostPort(%q) = %v", addr, err)
		}
	}
}

func TestRefusalText(t *testing.T) {
	r := refuse(RefuseJoinFailed, "%s", strings.Repeat("é", 300)+"\xff")
	if len(r.Message) > maxReasonLen || !utf8.ValidString(r.Message) {
		t.Fatalf("message of %d bytes, valid %v", len(r.Message), utf8.ValidString(r.Message))
	}
	if !errors.Is(r, ErrJoinRefused) || !strings.Contains(r.Error(), "JOIN_FAILED") {
		t.Fatalf("Error() = %q", r.Error())
	}
}

func TestJoinRequestRoundTrip(t *testing.T) {
	req := goodRequest()
	req.Deadline = time.UnixMilli(req.Deadline.UnixMilli()) // the wire keeps milliseconds
	got, err := joinRequestFromProto(req.toProto().GetJoin())
	if err != nil {
		t.Fatal(err)
	}
	if got != req {
		t.Fatalf("round trip: %+v, want %+v", got, req)
	}
}

func clusterMessageSeeds(f *testing.F) {
	req := goodRequest()
	for _, m := range []*pb.ClusterMessage{
		req.toProto(),
		{Body: &pb.ClusterMessage_Heartbeat{Heartbeat: &pb.Heartbeat{Seq: 7}}},
		{Body: &pb.ClusterMessage_Leave{Leave: &pb.Leave{Reason: "done"}}},
	} {
		f.Add(encodeMsg(f, m))
	}
	f.Add([]byte{})
	f.Add([]byte{0x00})
	f.Add([]byte{0x80, 0x80, 0x40, 1, 2, 3})
	f.Add(append([]byte{0x10}, bytes.Repeat([]byte{0xff}, 16)...))
}

// The worker's decoder: any bytes give messages within the cap or an error;
// a join that decodes satisfies validate and survives the rules.
func FuzzClusterMessage(f *testing.F) {
	clusterMessageSeeds(f)
	models := clusterCaps().Models
	bounds := joinBounds{maxWait: time.Hour, minHeartbeat: time.Millisecond, maxHeartbeat: time.Hour}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := newClusterReader(bytes.NewReader(data))
		for range 4 { // a stream may carry several messages
			m, err := readClusterMessage(r)
			if err != nil {
				return
			}
			if m.GetBody() == nil {
				t.Fatal("accepted an empty message")
			}
			j := m.GetJoin()
			if j == nil {
				continue
			}
			req, err := joinRequestFromProto(j)
			if err != nil {
				continue
			}
			if err := req.validate(); err != nil {
				t.Fatalf("decoded an invalid join: %v", err)
			}
			checkJoin(&req, models, time.Now(), bounds)
		}
	})
}

func clusterReplySeeds(f *testing.F) {
	for _, m := range []*pb.ClusterReply{
		{Body: &pb.ClusterReply_Accepted{Accepted: &pb.JoinAccepted{SessionId: make([]byte, SessionIDLen), RayAddress: "10.0.0.1", ResourceName: "peer:x"}}},
		{Body: &pb.ClusterReply_Refused{Refused: &pb.JoinRefused{Reason: RefuseAtCapacity, Message: "full"}}},
		{Body: &pb.ClusterReply_HeartbeatAck{HeartbeatAck: &pb.HeartbeatAck{Seq: 3}}},
		{Body: &pb.ClusterReply_LeaveAck{LeaveAck: &pb.LeaveAck{}}},
		{Body: &pb.ClusterReply_Left{Left: &pb.Leave{Reason: "bye"}}},
	} {
		f.Add(encodeMsg(f, m))
	}
	f.Add([]byte{})
	f.Add([]byte{0x00})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
}

// The requester's decoder: an accepted reply always carries a session id of
// the right size and a Ray address; texts stay within their caps.
func FuzzClusterReply(f *testing.F) {
	clusterReplySeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := newClusterReader(bytes.NewReader(data))
		for range 4 {
			m, err := readClusterReply(r)
			if err != nil {
				return
			}
			if a := m.GetAccepted(); a != nil && (len(a.GetSessionId()) != SessionIDLen || a.GetRayAddress() == "") {
				t.Fatalf("accepted a bad accept: %v", a)
			}
			if len(m.GetRefused().GetMessage()) > maxReasonLen || len(m.GetLeft().GetReason()) > maxReasonLen {
				t.Fatal("accepted an oversized text")
			}
		}
	})
}
