package requester

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/edgellm/edgellm/internal/planner"
)

// droppedWorkers are the workers this requester plans without for the rest
// of its life: a backend reported (GenerateResponse.dropped_workers) that
// the KV blocks one handed over failed the spot check, i.e. a P/D prefill
// peer whose blocks were not what the model computes.
//
// Decision (hardening, a hostile member): only a peer of the generation's
// own plan can be dropped, so a report naming another peer changes nothing;
// nothing expires it (a requester's life is one infer, or one serve).
type droppedWorkers struct {
	mu  sync.Mutex
	ids []string
}

// add drops each of ids that is among stagePeers; the ones newly dropped.
func (d *droppedWorkers) add(ids, stagePeers []string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var added []string
	for _, id := range ids {
		if slices.Contains(stagePeers, id) && !slices.Contains(d.ids, id) {
			d.ids = append(d.ids, id)
			added = append(added, id)
		}
	}
	return added
}

// filter leaves the dropped workers out of peers.
func (d *droppedWorkers) filter(peers []planner.Peer) []planner.Peer {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.DeleteFunc(peers, func(p planner.Peer) bool { return slices.Contains(d.ids, p.ID) })
}

// dropWorkers drops the workers a generation's last response names: the
// requester plans without them, and the cluster, which still runs them,
// says it should be formed afresh (Done; generations on it still run).
func (c *Cluster) dropWorkers(ids []string) {
	if len(ids) == 0 {
		return
	}
	added := c.r.dropped.add(ids, c.stagePeers())
	if len(added) == 0 {
		return
	}
	c.r.log.Warn("kv: a worker's handed-over blocks failed the spot check; planning without it", "peers", added)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failLocked(fmt.Errorf("%w: %s handed over KV blocks that failed the spot check", ErrUnavailable, strings.Join(added, ", ")))
}
