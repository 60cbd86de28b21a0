package p2p

import (
	"context"
	"fmt"
	"time"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// joinBounds are the worker's limits on a join's timing.
type joinBounds struct {
	maxWait                    time.Duration // how far ahead the deadline may be
	minHeartbeat, maxHeartbeat time.Duration
}

// checkJoin applies the worker's acceptance rules that depend on what it
// advertises and on the time, not on its sessions: the model id and weights
// CID must be advertised, the layer range must lie within one advertised
// range, the deadline must be ahead but not too far, and the heartbeat
// interval within bounds. It is pure; nil means acceptable.
func checkJoin(req *JoinRequest, models []Model, now time.Time, b joinBounds) *RefusedError {
	m, ok := findModel(models, req.Model)
	switch {
	case !ok:
		return refuse(RefuseUnknownModel, "worker does not serve model %q", req.Model)
	case m.WeightsCID != req.WeightsCID:
		return refuse(RefuseWrongWeights, "worker serves %q with weights %s, not %s", req.Model, m.WeightsCID, req.WeightsCID)
	case !coversRange(m, req.Layers):
		return refuse(RefuseLayerRange, "worker does not hold layers [%d,%d) of %q (it holds %s)",
			req.Layers.Start, req.Layers.End, req.Model, rangesString(m))
	case !req.Deadline.After(now):
		return refuse(RefuseDeadline, "deadline passed %s ago", now.Sub(req.Deadline).Round(time.Millisecond))
	case req.Deadline.Sub(now) > b.maxWait:
		return refuse(RefuseDeadline, "deadline %s ahead, more than the worker's %s",
			req.Deadline.Sub(now).Round(time.Second), b.maxWait)
	case req.HeartbeatInterval < b.minHeartbeat || req.HeartbeatInterval > b.maxHeartbeat:
		return refuse(RefuseHeartbeatInterval, "heartbeat interval %s outside [%s, %s]",
			req.HeartbeatInterval, b.minHeartbeat, b.maxHeartbeat)
	}
	return nil
}

func findModel(models []Model, id string) (Model, bool) {
	for _, m := range models {
		if m.ID == id {
			return m, true
		}
	}
	return Model{}, false
}

// advertisedRanges are a model's layer ranges; a model advertised with none
// but a layer count is held whole.
func advertisedRanges(m Model) []LayerRange {
	if len(m.LayerRanges) == 0 && m.NumLayers > 0 {
		return []LayerRange{{Start: 0, End: m.NumLayers}}
	}
	return m.LayerRanges
}

// coversRange reports whether lr lies within one advertised range of m.
func coversRange(m Model, lr LayerRange) bool {
	if m.NumLayers > 0 && lr.End > m.NumLayers {
		return false
	}
	for _, r := range advertisedRanges(m) {
		if r.Start <= lr.Start && lr.End <= r.End {
			return true
		}
	}
	return false
}

func rangesString(m Model) string {
	s := ""
	for i, r := range advertisedRanges(m) {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("[%d,%d)", r.Start, r.End)
	}
	if s == "" {
		return "none"
	}
	return s
}

// serveSession answers heartbeats until the requester leaves, is lost (the
// stream dies or stays silent for HeartbeatMisses intervals) or breaks the
// protocol; then it calls Leave and frees the slot.
func (s *ClusterService) serveSession(ws *workerSession, r *clusterReader) {
	window := s.cfg.window(ws.interval)
	ends := time.Now().Add(s.cfg.MaxSessionLifetime)
	for {
		deadline := time.Now().Add(window)
		if ends.Before(deadline) {
			deadline = ends
		}
		if err := ws.st.SetReadDeadline(deadline); err != nil {
			s.lose(ws, err)
			return
		}
		m, err := readClusterMessage(r)
		if err != nil && !time.Now().Before(ends) {
			ws.st.Reset()
			s.endSession(ws, fmt.Sprintf("session lifetime of %s reached", s.cfg.MaxSessionLifetime))
			return
		}
		if err != nil {
			s.lose(ws, err)
			return
		}
		switch b := m.GetBody().(type) {
		case *pb.ClusterMessage_Heartbeat:
			ack := &pb.ClusterReply{Body: &pb.ClusterReply_HeartbeatAck{HeartbeatAck: &pb.HeartbeatAck{Seq: b.Heartbeat.GetSeq()}}}
			if err := ws.write(ack, window); err != nil {
				s.lose(ws, err)
				return
			}
		case *pb.ClusterMessage_Leave:
			s.endSession(ws, "requester left: "+b.Leave.GetReason())
			ack := &pb.ClusterReply{Body: &pb.ClusterReply_LeaveAck{LeaveAck: &pb.LeaveAck{}}}
			if err := ws.write(ack, s.cfg.Timeout); err != nil {
				ws.st.Reset()
				return
			}
			ws.st.Close()
			return
		default:
			s.lose(ws, fmt.Errorf("%w: a second join", ErrInvalidClusterMessage))
			return
		}
	}
}

// lose ends a session whose requester is gone or misbehaving.
func (s *ClusterService) lose(ws *workerSession, err error) {
	ws.st.Reset()
	s.endSession(ws, fmt.Sprintf("requester lost: %v", err))
}

// endSession calls the handler's Leave for a joined session, then frees its
// slot, so a new join never overlaps a Ray node still shutting down.
func (s *ClusterService) endSession(ws *workerSession, why string) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.LeaveTimeout)
	defer cancel()
	err := s.cfg.Handler.Leave(ctx, ws.id)
	s.cfg.Logger.Debug("cluster: session ended", "peer", ws.peer, "session", ws.id, "why", why, "leave_err", err)
	s.release(ws)
}
