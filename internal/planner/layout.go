package planner

import "time"

// placer lays an ordered chain of candidates over the layers [0, n) when
// some of them hold only part of the model: a dynamic programme over stage
// boundaries that stays as close as it can to each stage's target layer
// count (sum of |layers − target|), then prefers less compute. Rows are built
// one stage at a time so a search over orders shares common prefixes.
type placer struct {
	n, k int
	rows [][]cell // rows[j][b]: best way for the first j stages to cover [0, b)
}

type cell struct {
	ok      bool
	dev     int
	compute time.Duration
	from    int // boundary before the last stage
}

func newPlacer(n, k int) *placer {
	p := &placer{n: n, k: k, rows: make([][]cell, k+1)}
	for j := range p.rows {
		p.rows[j] = make([]cell, n+1)
	}
	p.rows[0][0] = cell{ok: true}
	return p
}

// extend fills row j+1 by placing stage j on c with the given target; it
// reports whether any boundary is reachable, leaving ≥ 1 layer per later stage.
func (p *placer) extend(j int, c *cand, target int) bool {
	next, reached := p.rows[j+1], false
	clear(next)
	last := p.n - (p.k - j - 1) // the furthest this stage may end
	for a, from := range p.rows[j][:p.n] {
		if !from.ok {
			continue
		}
		for e := a + 1; e <= min(last, c.reach[a], a+c.cap); e++ {
			v := cell{ok: true, dev: from.dev + abs(e-a-target), from: a,
				compute: from.compute + computeTime(e-a, p.n, c.speed)}
			if !next[e].ok || v.dev < next[e].dev || (v.dev == next[e].dev && v.compute < next[e].compute) {
				next[e], reached = v, true
			}
		}
	}
	return reached
}

// bounds returns the boundaries of the chain placed so far (all k stages).
func (p *placer) bounds() ([]int, bool) {
	if !p.rows[p.k][p.n].ok {
		return nil, false
	}
	b := make([]int, p.k+1)
	b[p.k] = p.n
	for j := p.k; j > 0; j-- {
		b[j-1] = p.rows[j][b[j]].from
	}
	return b, true
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
