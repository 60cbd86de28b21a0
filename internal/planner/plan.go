package planner

import "time"

// Plan is the planner's answer: an ordered chain of stages that together hold
// every layer of one model's weights exactly once.
type Plan struct {
	Model        string // the model id as the peers list it
	WeightsCID   string
	NumLayers    int
	WeightsBytes uint64 // 0 = unknown (memory was not checked)
	// Stages in pipeline order: stage i holds [Start, End), Stages[0].Start
	// is 0, each Start is the previous End, the last End is NumLayers.
	Stages []Stage
	// ExpectedTokenLatency = NetworkLatency + ComputeLatency (see the package
	// doc for the cost model).
	ExpectedTokenLatency time.Duration
	NetworkLatency       time.Duration
	ComputeLatency       time.Duration
	// PricePer1kMicros is what 1000 tokens cost if each peer bills its price
	// for its share of the layers; it never exceeds the request's limit.
	PricePer1kMicros uint64
	// LoadTime is the wait before the first token for stages whose peer must
	// load the model first (they load at once: the longest); 0 when every
	// stage's peer has it loaded.
	LoadTime time.Duration
}

// Stage is one peer's part of a plan: the layers [Start, End).
type Stage struct {
	PeerID      string
	Start, End  int
	MemoryBytes uint64        // weights share plus overhead; 0 if size unknown
	RTT         time.Duration // the RTT the estimate used
	Compute     time.Duration // expected compute per token
	Price       uint64        // this stage's share of PricePer1kMicros
	LoadTime    time.Duration // the peer loads the model first (0: loaded)
	LAN         bool          // on the LAN or the requester itself
	Requester   bool          // the requester hosts this stage itself
}

// Layers is the number of layers the stage holds.
func (s Stage) Layers() int { return s.End - s.Start }
